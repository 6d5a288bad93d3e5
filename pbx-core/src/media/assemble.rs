//! Assembling a call's frames into PCM: sequence order, silence for what is missing.
//!
//! A call has one or two *tracks* (the packets' channel index). With one track, each
//! frame holds the format's channels interleaved (mono, or AudioHook's stereo). With
//! two tracks (Twilio `both_tracks`), each track's frames are mono and the output has
//! one channel per track: track 0 left, track 1 right.
//!
//! Every sequence slot from 1 to the highest received yields exactly one frame length
//! of samples per channel: a missing sequence becomes silence, so does an undecodable
//! frame (a text payload, or a size that is not a whole number of samples); a frame of
//! another length is cut or padded to the call's frame length, which is learned from
//! its first decodable frame. The result counts each case ([`AudioStats`]).

use crate::media::g711::{alaw_to_linear, mulaw_to_linear};
use crate::media::{AudioStats, Encoding, MediaFormat, PcmAudio};
use crate::packet::{Payload, StoredPacket};

/// The frame length used when a call has no decodable frame: 20 ms.
pub fn default_frame_samples(format: MediaFormat) -> usize {
    (format.sample_rate() / 50) as usize
}

/// Channels each frame of a track holds interleaved.
fn channels_per_frame(format: MediaFormat, tracks: u8) -> usize {
    if tracks > 1 { 1 } else { usize::from(format.channels()) }
}

/// Samples per channel a payload decodes to, or `None` if it is undecodable.
fn decoded_len(format: MediaFormat, tracks: u8, payload: &Payload) -> Option<usize> {
    let Payload::Audio(bytes) = payload else { return None };
    let unit = format.encoding().bytes_per_sample() * channels_per_frame(format, tracks);
    (bytes.len() % unit == 0 && !bytes.is_empty()).then_some(bytes.len() / unit)
}

/// The call's frame length (samples per channel): that of its first decodable frame.
pub fn learn_frame_samples<'a>(
    format: MediaFormat,
    tracks: u8,
    payloads: impl IntoIterator<Item = &'a Payload>,
) -> Option<usize> {
    payloads.into_iter().find_map(|p| decoded_len(format, tracks, p))
}

/// Turns frame slots into interleaved PCM, one slot at a time, counting what it finds.
#[derive(Debug, Clone)]
pub struct Assembler {
    format: MediaFormat,
    tracks: u8,
    frame_samples: usize,
    stats: AudioStats,
    scratch: Vec<i16>,
}

impl Assembler {
    /// An assembler for a call of `tracks` tracks (1 or 2; clamped) whose frames hold
    /// `frame_samples` samples per channel (at least 1).
    pub fn new(format: MediaFormat, tracks: u8, frame_samples: usize) -> Self {
        Self {
            format,
            tracks: tracks.clamp(1, 2),
            frame_samples: frame_samples.max(1),
            stats: AudioStats::default(),
            scratch: Vec::new(),
        }
    }

    /// Channels of the output.
    pub fn output_channels(&self) -> u8 {
        if self.tracks > 1 { self.tracks } else { self.format.channels() }
    }

    /// Samples per channel each slot yields.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Bytes of 16-bit PCM each slot yields.
    pub fn slot_bytes(&self) -> usize {
        self.frame_samples * usize::from(self.output_channels()) * 2
    }

    /// What the slots so far held.
    pub fn stats(&self) -> AudioStats {
        self.stats
    }

    /// Appends one slot to `out`: `frames[t]` is track `t`'s frame of this sequence, or
    /// `None` where it is missing. `frames` shorter than the track count counts the
    /// rest as missing.
    pub fn push_slot(&mut self, frames: &[Option<&Payload>], out: &mut Vec<i16>) {
        let tracks = usize::from(self.tracks);
        let per_frame = channels_per_frame(self.format, self.tracks);
        let width = self.frame_samples * per_frame;
        self.stats.frames += 1;
        if tracks == 1 {
            self.decode_into(frames.first().copied().flatten(), width, per_frame);
            out.extend_from_slice(&self.scratch);
            return;
        }
        let start = out.len();
        out.resize(start + width * tracks, 0);
        for track in 0..tracks {
            self.decode_into(frames.get(track).copied().flatten(), width, per_frame);
            for (i, sample) in self.scratch.iter().enumerate() {
                out[start + i * tracks + track] = *sample;
            }
        }
    }

    /// Decodes one frame into `scratch`, exactly `width` samples, counting its fate.
    fn decode_into(&mut self, frame: Option<&Payload>, width: usize, per_frame: usize) {
        self.scratch.clear();
        match frame {
            None => self.stats.gaps += 1,
            Some(payload) => match decoded_len(self.format, self.tracks, payload) {
                None => self.stats.undecodable += 1,
                Some(len) => {
                    if len != self.frame_samples {
                        self.stats.resized += 1;
                    }
                    let bytes = payload.bytes();
                    let take = width.min(len * per_frame);
                    match self.format.encoding() {
                        Encoding::Mulaw => self.scratch.extend(bytes[..take].iter().map(|&b| mulaw_to_linear(b))),
                        Encoding::Alaw => self.scratch.extend(bytes[..take].iter().map(|&b| alaw_to_linear(b))),
                        Encoding::L16 => self
                            .scratch
                            .extend(bytes[..take * 2].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
                    }
                }
            },
        }
        self.scratch.resize(width, 0);
    }
}

/// The longest audio a call may assemble to: 12 hours. A call whose highest sequence
/// implies more (a sender that jumped to sequence 2^62) is refused, not allocated.
pub const MAX_AUDIO_SECONDS: u64 = 12 * 3600;

/// Why a call's audio cannot be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// The highest sequence implies more than [`MAX_AUDIO_SECONDS`] of audio.
    #[error(
        "the call's highest sequence {highest} at {frame_samples} samples per frame is more than {max_seconds} s of audio"
    )]
    TooLong {
        /// The highest sequence received.
        highest: u64,
        /// The call's frame length.
        frame_samples: usize,
        /// The limit.
        max_seconds: u64,
    },
}

/// Checks that `highest` slots of `frame_samples` at `format`'s rate stay within
/// [`MAX_AUDIO_SECONDS`].
pub fn check_length(format: MediaFormat, highest: u64, frame_samples: usize) -> Result<(), AssembleError> {
    let samples = u128::from(highest) * frame_samples as u128;
    if samples > u128::from(MAX_AUDIO_SECONDS) * u128::from(format.sample_rate()) {
        return Err(AssembleError::TooLong { highest, frame_samples, max_seconds: MAX_AUDIO_SECONDS });
    }
    Ok(())
}

/// Assembles a whole call: `packets` ascending by (channel, sequence), as
/// [`CallStore::packets`](crate::store::CallStore::packets) returns them. Each track
/// runs from sequence 1 to the highest any track received, so both tracks of a
/// 2-track call last equally long.
pub fn assemble(format: MediaFormat, packets: &[StoredPacket]) -> Result<PcmAudio, AssembleError> {
    let tracks: u8 = if packets.iter().any(|p| p.channel > 0) { 2 } else { 1 };
    let frame_samples =
        learn_frame_samples(format, tracks, packets.iter().map(|p| &p.data)).unwrap_or(default_frame_samples(format));
    let mut assembler = Assembler::new(format, tracks, frame_samples);
    let by_track: Vec<Vec<&StoredPacket>> =
        (0..tracks).map(|t| packets.iter().filter(|p| p.channel == t).collect()).collect();
    let highest = packets.iter().map(|p| p.sequence).max().unwrap_or(0);
    check_length(format, highest, frame_samples)?;
    let mut cursors = vec![0usize; usize::from(tracks)];
    let mut samples = Vec::with_capacity(assembler.slot_bytes() / 2 * highest.min(1 << 20) as usize);
    let mut slot: Vec<Option<&Payload>> = vec![None; usize::from(tracks)];
    for sequence in 1..=highest {
        for (t, track) in by_track.iter().enumerate() {
            // Skip duplicates (a store keeps one per sequence; be safe with input).
            while cursors[t] < track.len() && track[cursors[t]].sequence < sequence {
                cursors[t] += 1;
            }
            slot[t] = track.get(cursors[t]).filter(|p| p.sequence == sequence).map(|p| &p.data);
        }
        assembler.push_slot(&slot, &mut samples);
    }
    Ok(PcmAudio {
        sample_rate: format.sample_rate(),
        channels: assembler.output_channels(),
        frame_samples,
        samples,
        stats: assembler.stats(),
    })
}
