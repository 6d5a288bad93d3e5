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
}

/// The header of a PCM 16-bit WAV of `channels` channels at `sample_rate`, followed by
/// `data_len` bytes of interleaved little-endian samples.
pub fn wav_header(sample_rate: u32, channels: u8, data_len: u64) -> Result<[u8; WAV_HEADER_LEN], WavError> {
    if data_len > MAX_WAV_DATA {
        return Err(WavError::TooLarge(data_len));
    }
    let data_len = data_len as u32;
    let channels = u16::from(channels);
    let block_align = channels * 2;
    let byte_rate = sample_rate * u32::from(block_align);
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
