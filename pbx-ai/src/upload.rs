//! Cutting a call's audio into WAV uploads that fit a provider's size limit.

use pbx_core::ai::AiError;
use pbx_core::media::PcmAudio;
use pbx_core::media::wav::{WAV_HEADER_LEN, extend_le, wav_header};

/// One upload: a mono or interleaved piece of the call, where it starts and how long
/// it plays.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece<'a> {
    /// Its place among the pieces of its track, from 0.
    pub(crate) index: usize,
    /// Seconds from the start of the call.
    pub(crate) offset: f64,
    /// Seconds it plays.
    pub(crate) duration: f64,
    samples: &'a [i16],
    channels: u8,
    sample_rate: u32,
}

impl Piece<'_> {
    /// The piece as a WAV file, built afresh (each request owns its body).
    pub(crate) fn wav(&self) -> Vec<u8> {
        let data_len = self.samples.len() as u64 * 2;
        let mut out = Vec::with_capacity(WAV_HEADER_LEN + self.samples.len() * 2);
        let header = wav_header(self.sample_rate, self.channels, data_len);
        out.extend_from_slice(&header.expect("split keeps every piece within what a WAV can declare"));
        extend_le(&mut out, self.samples);
        out
    }
}

/// Checks that `audio` is something a provider can be sent.
pub(crate) fn check(provider: &str, audio: &PcmAudio) -> Result<(), AiError> {
    if audio.sample_rate == 0 {
        return Err(AiError::permanent(format!("{provider}: the audio has no sample rate")));
    }
    if !matches!(audio.channels, 1 | 2) {
        return Err(AiError::permanent(format!("{provider}: {} audio channels; 1 or 2 expected", audio.channels)));
    }
    Ok(())
}

/// Splits `samples` (interleaved, `channels` per frame) into pieces whose WAV is at
/// most `max_wav_bytes`, cut at frame boundaries (`frame_samples` samples of each
/// channel) where a frame fits, else at sample boundaries.
pub(crate) fn split<'a>(
    provider: &str,
    samples: &'a [i16],
    channels: u8,
    sample_rate: u32,
    frame_samples: usize,
    max_wav_bytes: usize,
) -> Result<Vec<Piece<'a>>, AiError> {
    let channels_n = usize::from(channels.max(1));
    let bytes_per_sample_frame = 2 * channels_n;
    let fit = max_wav_bytes.saturating_sub(WAV_HEADER_LEN) / bytes_per_sample_frame;
    let frame = frame_samples.max(1);
    let per_piece = if fit >= frame { fit - fit % frame } else { fit };
    if per_piece == 0 {
        return Err(AiError::permanent(format!(
            "{provider}: an upload limit of {max_wav_bytes} bytes leaves no room for audio"
        )));
    }
    if (per_piece * bytes_per_sample_frame) as u64 > pbx_core::media::wav::MAX_WAV_DATA {
        return Err(AiError::permanent(format!(
            "{provider}: an upload limit of {max_wav_bytes} bytes is beyond WAV's"
        )));
    }
    let rate = f64::from(sample_rate);
    Ok(samples
        .chunks(per_piece * channels_n)
        .enumerate()
        .map(|(index, chunk)| Piece {
            index,
            offset: (index * per_piece) as f64 / rate,
            duration: (chunk.len() / channels_n) as f64 / rate,
            samples: chunk,
            channels,
            sample_rate,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_frame_boundaries() {
        let samples: Vec<i16> = (0..1000).map(|i| i as i16).collect();
        // 44 + 2 * 450 bytes fit; frames of 160 samples: 320 per piece.
        let pieces = split("t", &samples, 1, 8000, 160, 44 + 900).unwrap();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.iter().map(|p| p.samples.len()).collect::<Vec<_>>(), [320, 320, 320, 40]);
        assert_eq!(pieces[1].offset, 320.0 / 8000.0);
        assert_eq!(pieces[3].duration, 40.0 / 8000.0);
        assert!(pieces.iter().all(|p| p.wav().len() <= 944));
        assert_eq!(&pieces[0].wav()[..4], b"RIFF");
        // A frame that does not fit: cut at samples.
        let pieces = split("t", &samples, 1, 8000, 160, 44 + 200).unwrap();
        assert_eq!(pieces[0].samples.len(), 100);
        assert!(split("t", &samples, 1, 8000, 160, 44).is_err());
        // Everything fits: one piece.
        assert_eq!(split("t", &samples, 1, 8000, 160, 1 << 20).unwrap().len(), 1);
        assert!(split("t", &[], 1, 8000, 160, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn stereo_pieces_hold_whole_frames() {
        let samples = vec![0i16; 2 * 400];
        let pieces = split("t", &samples, 2, 8000, 100, 44 + 4 * 250).unwrap();
        assert_eq!(pieces.iter().map(|p| p.samples.len()).collect::<Vec<_>>(), [400, 400]);
        assert_eq!(pieces[1].offset, 200.0 / 8000.0);
    }
}
