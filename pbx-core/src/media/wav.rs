//! RIFF WAV framing of 16-bit PCM: the 44-byte header, written before the samples so
//! that a recording can be streamed with its length known up front.

/// Bytes of the canonical PCM WAV header.
pub const WAV_HEADER_LEN: usize = 44;

/// The most sample bytes a WAV can declare (its RIFF size field is 32 bits).
pub const MAX_WAV_DATA: u64 = u32::MAX as u64 - 36;

/// Why a WAV header cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// More sample bytes than a RIFF file can declare.
    #[error("{0} bytes of audio is more than a WAV file can hold ({MAX_WAV_DATA} bytes)")]
    TooLarge(u64),
    /// No channel, no sample rate, or a byte rate beyond the header's 32 bits.
    #[error("a WAV of {channels} channels at {sample_rate} Hz cannot be described")]
    BadFormat {
        /// The sample rate asked for.
        sample_rate: u32,
        /// The channel count asked for.
        channels: u8,
    },
}

/// The header of a PCM 16-bit WAV of `channels` channels at `sample_rate`, followed by
/// `data_len` bytes of interleaved little-endian samples. Refuses more data than the
/// RIFF size fields can declare, and a format with no channel or no rate (or whose byte
/// rate does not fit 32 bits).
pub fn wav_header(sample_rate: u32, channels: u8, data_len: u64) -> Result<[u8; WAV_HEADER_LEN], WavError> {
    if data_len > MAX_WAV_DATA {
        return Err(WavError::TooLarge(data_len));
    }
    let block_align = u16::from(channels) * 2;
    // A rate times 510 (255 channels) can overflow: refuse rather than wrap or panic.
    let Some(byte_rate) = sample_rate.checked_mul(u32::from(block_align)).filter(|&r| r != 0) else {
        return Err(WavError::BadFormat { sample_rate, channels });
    };
    let data_len = data_len as u32;
    let channels = u16::from(channels);
    let mut h = [0u8; WAV_HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    Ok(h)
}

/// Appends samples as little-endian bytes.
pub fn extend_le(out: &mut Vec<u8>, samples: &[i16]) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// A whole WAV file in memory (short audio: tests, provider uploads).
pub fn wav_bytes(audio: &crate::media::PcmAudio) -> Result<Vec<u8>, WavError> {
    let data_len = audio.samples.len() as u64 * 2;
    let mut out = Vec::with_capacity(WAV_HEADER_LEN + data_len as usize);
    out.extend_from_slice(&wav_header(audio.sample_rate, audio.channels, data_len)?);
    extend_le(&mut out, &audio.samples);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;
    use crate::media::PcmAudio;

    #[test]
    fn header_8000_mono_is_byte_exact() {
        let h = wav_header(8000, 1, 320).unwrap();
        #[rustfmt::skip]
        let expected: [u8; 44] = [
            b'R', b'I', b'F', b'F', 0x64, 0x01, 0x00, 0x00, // RIFF, 36 + 320
            b'W', b'A', b'V', b'E',
            b'f', b'm', b't', b' ', 16, 0, 0, 0,            // fmt chunk of 16 bytes
            1, 0, 1, 0,                                     // PCM, 1 channel
            0x40, 0x1F, 0x00, 0x00,                         // 8000 Hz
            0x80, 0x3E, 0x00, 0x00,                         // 16000 bytes/s
            2, 0, 16, 0,                                    // block align 2, 16 bits
            b'd', b'a', b't', b'a', 0x40, 0x01, 0x00, 0x00, // data, 320 bytes
        ];
        assert_eq!(h, expected);
    }

    #[test]
    fn header_16000_stereo_is_byte_exact() {
        let h = wav_header(16000, 2, 64000).unwrap();
        #[rustfmt::skip]
        let expected: [u8; 44] = [
            b'R', b'I', b'F', b'F', 0x24, 0xFA, 0x00, 0x00, // RIFF, 36 + 64000
            b'W', b'A', b'V', b'E',
            b'f', b'm', b't', b' ', 16, 0, 0, 0,
            1, 0, 2, 0,                                     // PCM, 2 channels
            0x80, 0x3E, 0x00, 0x00,                         // 16000 Hz
            0x00, 0xFA, 0x00, 0x00,                         // 64000 bytes/s
            4, 0, 16, 0,                                    // block align 4, 16 bits
            b'd', b'a', b't', b'a', 0x00, 0xFA, 0x00, 0x00, // data, 64000 bytes
        ];
        assert_eq!(h, expected);
    }

    #[test]
    fn size_limits() {
        assert_eq!(wav_header(8000, 1, MAX_WAV_DATA + 1), Err(WavError::TooLarge(MAX_WAV_DATA + 1)));
        assert_eq!(wav_header(8000, 1, u64::MAX), Err(WavError::TooLarge(u64::MAX)));
        let h = wav_header(8000, 1, MAX_WAV_DATA).unwrap();
        assert_eq!(h[4..8], u32::MAX.to_le_bytes(), "the RIFF size is exactly the largest");
        assert_eq!(h[40..44], (u32::MAX - 36).to_le_bytes());
        assert_eq!(wav_header(8000, 0, 0), Err(WavError::BadFormat { sample_rate: 8000, channels: 0 }));
        assert_eq!(wav_header(0, 1, 0), Err(WavError::BadFormat { sample_rate: 0, channels: 1 }));
        assert_eq!(wav_header(u32::MAX, 2, 0), Err(WavError::BadFormat { sample_rate: u32::MAX, channels: 2 }));
        assert!(wav_header(48000, 255, 0).is_ok());
    }

    #[test]
    fn samples_are_little_endian() {
        let mut out = vec![9];
        extend_le(&mut out, &[1, -1, 0x1234, i16::MIN]);
        assert_eq!(out, [9, 1, 0, 0xFF, 0xFF, 0x34, 0x12, 0x00, 0x80]);
    }

    /// A temporary file removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!("pbx-wav-{}-{name}.wav", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// `python3`'s `wave` module's reading of a file: channels, sample width, rate,
    /// frames and the frames' bytes in hex.
    fn python_wave(path: &Path) -> String {
        let script = "import sys, wave\nw = wave.open(sys.argv[1])\n\
                      print(w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes(), \
                      w.readframes(w.getnframes()).hex())";
        let out = Command::new("python3").arg("-c").arg(script).arg(path).output().expect("python3 runs");
        assert!(out.status.success(), "python3 wave: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `soxi`'s reading of one field, or `None` when sox is not installed.
    fn soxi(path: &Path, flag: &str) -> Option<String> {
        let out = Command::new("soxi").arg(flag).arg(path).output().ok()?;
        assert!(out.status.success(), "soxi {flag}: {}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    fn check_with_readers(name: &str, audio: &PcmAudio) {
        let bytes = wav_bytes(audio).unwrap();
        assert_eq!(bytes.len(), WAV_HEADER_LEN + audio.samples.len() * 2);
        let file = TempFile::new(name, &bytes);
        let frames = audio.frames_per_channel();
        let hex: String = bytes[WAV_HEADER_LEN..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            python_wave(&file.0),
            format!("{} 2 {} {frames} {hex}", audio.channels, audio.sample_rate).trim_end()
        );
        match soxi(&file.0, "-c") {
            None => println!("note: soxi is not installed; the sox check of {name} is skipped"),
            Some(channels) => {
                assert_eq!(channels, audio.channels.to_string());
                assert_eq!(soxi(&file.0, "-r").unwrap(), audio.sample_rate.to_string());
                assert_eq!(soxi(&file.0, "-b").unwrap(), "16");
                assert_eq!(soxi(&file.0, "-s").unwrap(), frames.to_string());
                assert_eq!(soxi(&file.0, "-e").unwrap(), "Signed Integer PCM");
            }
        }
    }

    #[test]
    fn real_readers_read_it_back_mono() {
        let samples: Vec<i16> = (0..800).map(|i| ((i * 997) % 65536 - 32768) as i16).collect();
        let audio = PcmAudio { sample_rate: 8000, channels: 1, frame_samples: 160, samples, ..PcmAudio::default() };
        check_with_readers("mono", &audio);
    }

    #[test]
    fn real_readers_read_it_back_stereo() {
        let samples: Vec<i16> = (0..640).flat_map(|i: i16| [i, -i]).collect();
        let audio = PcmAudio { sample_rate: 16000, channels: 2, frame_samples: 320, samples, ..PcmAudio::default() };
        check_with_readers("stereo", &audio);
        let empty = PcmAudio { sample_rate: 8000, channels: 1, ..PcmAudio::default() };
        check_with_readers("empty", &empty);
    }

    #[test]
    fn wav_bytes_refuses_what_it_cannot_describe() {
        assert!(matches!(wav_bytes(&PcmAudio::default()), Err(WavError::BadFormat { .. })));
    }
}
