//! A call's media format: encoding, sample rate and channel count.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The sample rates pbx accepts: telephony's 8 kHz and the rates Asterisk AudioSocket
/// and the vendors' streams send.
pub const SAMPLE_RATES: [u32; 7] = [8000, 12000, 16000, 24000, 32000, 44100, 48000];

/// How a frame's bytes encode samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// G.711 mu-law, one byte per sample (North American and Japanese telephony).
    Mulaw,
    /// G.711 A-law, one byte per sample (the rest of the world).
    Alaw,
    /// Signed 16-bit little-endian linear PCM, two bytes per sample.
    L16,
}

impl Encoding {
    /// `mulaw`, `alaw` or `l16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Mulaw => "mulaw",
            Encoding::Alaw => "alaw",
            Encoding::L16 => "l16",
        }
    }

    /// Bytes one sample of one channel takes.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::Mulaw | Encoding::Alaw => 1,
            Encoding::L16 => 2,
        }
    }
}

impl FromStr for Encoding {
    type Err = MediaFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mulaw" | "ulaw" | "pcmu" | "audio/x-mulaw" => Ok(Encoding::Mulaw),
            "alaw" | "pcma" | "audio/x-alaw" => Ok(Encoding::Alaw),
            "l16" | "pcm16" | "s16le" | "linear16" => Ok(Encoding::L16),
            _ => Err(MediaFormatError::UnknownEncoding(s.to_owned())),
        }
    }
}

/// Why a media format was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaFormatError {
    /// Not `mulaw`, `alaw` or `l16`.
    #[error("unknown audio encoding {0:?}: expected mulaw, alaw or l16")]
    UnknownEncoding(String),
    /// Not one of [`SAMPLE_RATES`].
    #[error("unsupported sample rate {0} Hz: expected one of 8000, 12000, 16000, 24000, 32000, 44100, 48000")]
    UnsupportedRate(u64),
    /// Not 1 or 2 channels.
    #[error("unsupported channel count {0}: expected 1 or 2")]
    UnsupportedChannels(u64),
    /// Not `ENCODING/RATE/CHANNELS`.
    #[error("media format {0:?} is not ENCODING/RATE/CHANNELS, e.g. mulaw/8000/1")]
    Malformed(String),
}

/// A call's media format. Build it with [`MediaFormat::new`] or parse
/// `ENCODING/RATE/CHANNELS` (`mulaw/8000/1`); the default is `mulaw/8000/1`, what
/// telephony sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MediaFormatFields", into = "MediaFormatFields")]
pub struct MediaFormat {
    encoding: Encoding,
    sample_rate: u32,
    channels: u8,
}

/// The serialised shape of a [`MediaFormat`], checked on the way in.
#[derive(Serialize, Deserialize)]
struct MediaFormatFields {
    encoding: Encoding,
    sample_rate: u32,
    channels: u8,
}

impl TryFrom<MediaFormatFields> for MediaFormat {
    type Error = MediaFormatError;
    fn try_from(f: MediaFormatFields) -> Result<Self, Self::Error> {
        MediaFormat::new(f.encoding, u64::from(f.sample_rate), u64::from(f.channels))
    }
}

impl From<MediaFormat> for MediaFormatFields {
    fn from(f: MediaFormat) -> Self {
        Self { encoding: f.encoding, sample_rate: f.sample_rate, channels: f.channels }
    }
}

impl Default for MediaFormat {
    fn default() -> Self {
        Self::TELEPHONY
    }
}

impl MediaFormat {
    /// `mulaw/8000/1`.
    pub const TELEPHONY: MediaFormat = MediaFormat { encoding: Encoding::Mulaw, sample_rate: 8000, channels: 1 };

    /// Checks and builds a format.
    pub fn new(encoding: Encoding, sample_rate: u64, channels: u64) -> Result<Self, MediaFormatError> {
        let sample_rate = u32::try_from(sample_rate)
            .ok()
            .filter(|r| SAMPLE_RATES.contains(r))
            .ok_or(MediaFormatError::UnsupportedRate(sample_rate))?;
        let channels = match channels {
            1 | 2 => channels as u8,
            other => return Err(MediaFormatError::UnsupportedChannels(other)),
        };
        Ok(Self { encoding, sample_rate, channels })
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Samples per second of one channel.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// 1 or 2.
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// The same format with another channel count (1 or 2).
    pub fn with_channels(self, channels: u8) -> Result<Self, MediaFormatError> {
        Self::new(self.encoding, u64::from(self.sample_rate), u64::from(channels))
    }
}

impl fmt::Display for MediaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.encoding.as_str(), self.sample_rate, self.channels)
    }
}

impl FromStr for MediaFormat {
    type Err = MediaFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('/');
        let (Some(encoding), rate, channels, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(MediaFormatError::Malformed(s.to_owned()));
        };
        let encoding: Encoding = encoding.parse()?;
        let number = |part: Option<&str>, default: u64| match part {
            None => Ok(default),
            Some(p) => p.parse::<u64>().map_err(|_| MediaFormatError::Malformed(s.to_owned())),
        };
        Self::new(encoding, number(rate, 8000)?, number(channels, 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let f: MediaFormat = "mulaw/8000/1".parse().unwrap();
        assert_eq!(f, MediaFormat::TELEPHONY);
        assert_eq!(f.to_string(), "mulaw/8000/1");
        assert_eq!("L16/16000/2".parse::<MediaFormat>().unwrap().to_string(), "l16/16000/2");
        assert_eq!("alaw".parse::<MediaFormat>().unwrap().to_string(), "alaw/8000/1");
        assert_eq!("mulaw/11025/1".parse::<MediaFormat>(), Err(MediaFormatError::UnsupportedRate(11025)));
        assert_eq!("mulaw/8000/3".parse::<MediaFormat>(), Err(MediaFormatError::UnsupportedChannels(3)));
        assert!(matches!("opus/48000/1".parse::<MediaFormat>(), Err(MediaFormatError::UnknownEncoding(_))));
        assert!(matches!("mulaw/8000/1/x".parse::<MediaFormat>(), Err(MediaFormatError::Malformed(_))));
        assert!(matches!("mulaw/abc".parse::<MediaFormat>(), Err(MediaFormatError::Malformed(_))));
        assert!(matches!("".parse::<MediaFormat>(), Err(MediaFormatError::UnknownEncoding(_))));
    }

    #[test]
    fn serde_checks_fields() {
        let json = serde_json::to_string(&MediaFormat::TELEPHONY).unwrap();
        assert_eq!(json, r#"{"encoding":"mulaw","sample_rate":8000,"channels":1}"#);
        assert_eq!(serde_json::from_str::<MediaFormat>(&json).unwrap(), MediaFormat::TELEPHONY);
        assert!(serde_json::from_str::<MediaFormat>(r#"{"encoding":"mulaw","sample_rate":7,"channels":1}"#).is_err());
    }
}
