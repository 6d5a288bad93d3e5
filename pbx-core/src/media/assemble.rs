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

use crate::media::g711::{decode_alaw, decode_mulaw};
use crate::media::{AudioStats, Encoding, MediaFormat, PcmAudio};
use crate::packet::{MAX_CHANNELS, Payload, StoredPacket};

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
                        Encoding::Mulaw => decode_mulaw(&bytes[..take], &mut self.scratch),
                        Encoding::Alaw => decode_alaw(&bytes[..take], &mut self.scratch),
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
///
/// Input out of order is sorted (stably: of duplicate sequences the first is played);
/// a packet on a channel a call cannot have (2 and up) is ignored.
pub fn assemble(format: MediaFormat, packets: &[StoredPacket]) -> Result<PcmAudio, AssembleError> {
    let packets: Vec<&StoredPacket> = packets.iter().filter(|p| p.channel < MAX_CHANNELS).collect();
    let tracks: u8 = if packets.iter().any(|p| p.channel > 0) { 2 } else { 1 };
    let by_track: Vec<Vec<&StoredPacket>> = (0..tracks)
        .map(|t| {
            let mut track: Vec<&StoredPacket> = packets.iter().copied().filter(|p| p.channel == t).collect();
            if !track.is_sorted_by_key(|p| p.sequence) {
                track.sort_by_key(|p| p.sequence);
            }
            track
        })
        .collect();
    let frame_samples = learn_frame_samples(format, tracks, by_track.iter().flatten().map(|p| &p.data))
        .unwrap_or(default_frame_samples(format));
    let mut assembler = Assembler::new(format, tracks, frame_samples);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::media::g711::{linear_to_alaw, linear_to_mulaw, mulaw_to_linear};

    fn packet(channel: u8, sequence: u64, data: Payload) -> StoredPacket {
        StoredPacket { channel, sequence, data, timestamp: 0.0, received_at: DateTime::<Utc>::UNIX_EPOCH }
    }

    fn audio(bytes: Vec<u8>) -> Payload {
        Payload::Audio(Bytes::from(bytes))
    }

    /// An L16 frame of the given samples.
    fn l16(samples: &[i16]) -> Payload {
        audio(samples.iter().flat_map(|s| s.to_le_bytes()).collect())
    }

    fn format(s: &str) -> MediaFormat {
        s.parse().unwrap()
    }

    fn stats(frames: u64, gaps: u64, undecodable: u64, resized: u64) -> AudioStats {
        AudioStats { frames, gaps, undecodable, resized }
    }

    #[test]
    fn mulaw_call_with_a_missing_frame() {
        // Frame n is 160 bytes of one code, so each slot is recognisable.
        let code = |n: u64| linear_to_mulaw((n as i16) * 300);
        let packets: Vec<StoredPacket> =
            (1..=91).filter(|&n| n != 40).map(|n| packet(0, n, audio(vec![code(n); 160]))).collect();
        let pcm = assemble(MediaFormat::TELEPHONY, &packets).unwrap();
        assert_eq!((pcm.sample_rate, pcm.channels, pcm.frame_samples), (8000, 1, 160));
        assert_eq!(pcm.samples.len(), 91 * 160);
        assert_eq!(pcm.duration(), Duration::from_millis(1820));
        assert_eq!(pcm.stats, stats(91, 1, 0, 0));
        let slot = |n: usize| &pcm.samples[(n - 1) * 160..n * 160];
        assert!(slot(40).iter().all(|&s| s == 0), "the missing frame is silence");
        for n in [1, 39, 41, 91] {
            assert!(slot(n).iter().all(|&s| s == mulaw_to_linear(code(n as u64))), "slot {n}");
        }
    }

    #[test]
    fn alaw_frames_decode() {
        let frame: Vec<u8> = [-1000i16, 0, 1000, 32767].iter().map(|&s| linear_to_alaw(s)).collect();
        let pcm = assemble(format("alaw/8000/1"), &[packet(0, 1, audio(frame))]).unwrap();
        assert_eq!(pcm.samples, [-1008, 8, 1008, 32256]);
        assert_eq!(pcm.stats, stats(1, 0, 0, 0));
    }

    #[test]
    fn text_payload_is_silence_and_undecodable() {
        let text = Payload::from_base64_or_text("audio_chunk_2");
        assert!(text.is_text());
        let packets = [packet(0, 1, audio(vec![0x80; 160])), packet(0, 2, text), packet(0, 3, audio(vec![0x80; 160]))];
        let pcm = assemble(MediaFormat::TELEPHONY, &packets).unwrap();
        assert_eq!(pcm.samples.len(), 3 * 160);
        assert!(pcm.samples[160..320].iter().all(|&s| s == 0));
        assert!(pcm.samples[320..].iter().all(|&s| s == 32124));
        assert_eq!(pcm.stats, stats(3, 0, 1, 0));
    }

    #[test]
    fn odd_length_l16_frame_is_undecodable() {
        let f = format("l16/16000/1");
        let packets =
            [packet(0, 1, l16(&[1, 2, 3, 4])), packet(0, 2, audio(vec![1, 2, 3])), packet(0, 3, audio(vec![]))];
        let pcm = assemble(f, &packets).unwrap();
        assert_eq!(pcm.frame_samples, 4);
        assert_eq!(pcm.samples, [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pcm.stats, stats(3, 0, 2, 0), "odd and empty frames are undecodable");
        // Neither teaches the frame length.
        let odd = [audio(vec![1, 2, 3]), Payload::from_base64_or_text("x y"), audio(vec![])];
        assert_eq!(learn_frame_samples(f, 1, &odd), None);
        assert_eq!(learn_frame_samples(f, 1, &[odd[0].clone(), l16(&[5; 7])]), Some(7));
        assert_eq!(default_frame_samples(f), 320);
        // An L16 stereo frame must hold whole sample pairs.
        assert_eq!(learn_frame_samples(format("l16/8000/2"), 1, &[l16(&[1, 2, 3])]), None);
        assert_eq!(learn_frame_samples(format("l16/8000/2"), 2, &[l16(&[1, 2, 3])]), Some(3), "2 tracks: mono");
    }

    #[test]
    fn short_frames_are_padded_and_long_ones_cut() {
        let packets = [packet(0, 1, l16(&[1, 2, 3])), packet(0, 2, l16(&[4])), packet(0, 3, l16(&[5, 6, 7, 8, 9]))];
        let pcm = assemble(format("l16/8000/1"), &packets).unwrap();
        assert_eq!(pcm.samples, [1, 2, 3, 4, 0, 0, 5, 6, 7]);
        assert_eq!(pcm.stats, stats(3, 0, 0, 2));
    }

    #[test]
    fn duplicates_count_once_and_the_first_plays() {
        let packets = [
            packet(0, 1, l16(&[1, 1])),
            packet(0, 1, l16(&[9, 9])),
            packet(0, 2, l16(&[2, 2])),
            packet(0, 2, l16(&[8, 8])),
            packet(0, 2, l16(&[7, 7])),
            packet(0, 4, l16(&[4, 4])),
        ];
        let pcm = assemble(format("l16/8000/1"), &packets).unwrap();
        assert_eq!(pcm.samples, [1, 1, 2, 2, 0, 0, 4, 4]);
        assert_eq!(pcm.stats, stats(4, 1, 0, 0));
    }

    #[test]
    fn out_of_order_input_is_sorted() {
        let packets =
            [packet(0, 3, l16(&[3])), packet(0, 1, l16(&[1])), packet(0, 2, l16(&[2])), packet(0, 1, l16(&[9]))];
        let pcm = assemble(format("l16/8000/1"), &packets).unwrap();
        assert_eq!(pcm.samples, [1, 2, 3]);
        assert_eq!(pcm.stats, stats(3, 0, 0, 0));
    }

    #[test]
    fn two_tracks_make_stereo_left_then_right() {
        let f = format("l16/8000/1");
        let packets = [
            packet(0, 1, l16(&[1, 2])),
            packet(0, 2, l16(&[3, 4])),
            packet(0, 3, l16(&[5, 6])),
            packet(0, 4, l16(&[7, 8])),
            packet(1, 1, l16(&[-1, -2])),
            packet(1, 2, l16(&[-3, -4])),
        ];
        let pcm = assemble(f, &packets).unwrap();
        assert_eq!((pcm.channels, pcm.frame_samples), (2, 2));
        assert_eq!(pcm.samples.len(), 4 * 2 * 2, "the shorter track is padded to the longer's length");
        assert_eq!(pcm.channel(0), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(pcm.channel(1), [-1, -2, -3, -4, 0, 0, 0, 0]);
        assert_eq!(&pcm.samples[..4], [1, -1, 2, -2]);
        assert_eq!(pcm.duration(), Duration::from_micros(1000));
        // Frames count slots (one per sequence), gaps count missing track frames.
        assert_eq!(pcm.stats, stats(4, 2, 0, 0));
        // Only track 1 present: still 2 channels, track 0 silent.
        let pcm = assemble(f, &[packet(1, 2, l16(&[5, 6]))]).unwrap();
        assert_eq!(pcm.samples, [0, 0, 0, 0, 0, 5, 0, 6]);
        assert_eq!(pcm.stats, stats(2, 3, 0, 0));
    }

    #[test]
    fn two_track_mulaw_call() {
        let packets = [packet(0, 1, audio(vec![0x80; 160])), packet(1, 1, audio(vec![0x00; 160]))];
        let pcm = assemble(MediaFormat::TELEPHONY, &packets).unwrap();
        assert_eq!((pcm.channels, pcm.samples.len()), (2, 320));
        assert!(pcm.channel(0).iter().all(|&s| s == 32124) && pcm.channel(1).iter().all(|&s| s == -32124));
        assert_eq!(pcm.duration(), Duration::from_millis(20));
    }

    #[test]
    fn single_track_stereo_frames_stay_interleaved() {
        let f = format("l16/16000/2");
        let packets = [packet(0, 1, l16(&[1, -1, 2, -2])), packet(0, 3, l16(&[5, -5, 6, -6, 7]))];
        let pcm = assemble(f, &packets).unwrap();
        assert_eq!((pcm.channels, pcm.frame_samples), (2, 2));
        assert_eq!(pcm.channel(0), [1, 2, 0, 0, 0, 0]);
        assert_eq!(pcm.channel(1), [-1, -2, 0, 0, 0, 0]);
        // 5 samples is not a whole number of stereo pairs.
        assert_eq!(pcm.stats, stats(3, 1, 1, 0));
        let mulaw = assemble(format("mulaw/8000/2"), &[packet(0, 1, audio(vec![0x80, 0x00, 0x80, 0x00]))]).unwrap();
        assert_eq!((mulaw.channels, mulaw.frame_samples), (2, 2));
        assert_eq!(mulaw.samples, [32124, -32124, 32124, -32124]);
    }

    #[test]
    fn absurd_sequences_are_refused_not_allocated() {
        let f = MediaFormat::TELEPHONY;
        let huge = 1u64 << 62;
        let err = check_length(f, huge, 160).unwrap_err();
        assert_eq!(err, AssembleError::TooLong { highest: huge, frame_samples: 160, max_seconds: MAX_AUDIO_SECONDS });
        assert!(check_length(f, u64::MAX, usize::MAX).is_err(), "no overflow");
        // Exactly 12 hours is fine, one more slot is not.
        let slots = MAX_AUDIO_SECONDS * 8000 / 160;
        assert_eq!(check_length(f, slots, 160), Ok(()));
        assert!(check_length(f, slots + 1, 160).is_err());
        assert_eq!(check_length(f, 0, 160), Ok(()));
        let packets = [packet(0, 1, audio(vec![0xFF; 160])), packet(0, huge, audio(vec![0xFF; 160]))];
        assert_eq!(assemble(f, &packets), Err(err));
    }

    #[test]
    fn no_packets_no_audio() {
        let pcm = assemble(MediaFormat::TELEPHONY, &[]).unwrap();
        assert!(pcm.is_empty());
        assert_eq!((pcm.channels, pcm.sample_rate, pcm.frame_samples), (1, 8000, 160));
        assert_eq!(pcm.stats, AudioStats::default());
        assert_eq!(pcm.duration(), Duration::ZERO);
    }

    #[test]
    fn channels_a_call_cannot_have_are_ignored() {
        let packets = [packet(0, 1, l16(&[1])), packet(2, 9, l16(&[2, 3]))];
        let pcm = assemble(format("l16/8000/1"), &packets).unwrap();
        assert_eq!((pcm.channels, pcm.samples.as_slice()), (1, [1].as_slice()));
    }

    #[test]
    fn assembler_slots_directly() {
        let f = format("l16/8000/1");
        let mut a = Assembler::new(f, 2, 0);
        assert_eq!((a.frame_samples(), a.output_channels(), a.slot_bytes()), (1, 2, 4));
        let mut out = Vec::new();
        let p = l16(&[7]);
        a.push_slot(&[Some(&p)], &mut out); // track 1 missing: frames shorter than tracks
        a.push_slot(&[], &mut out);
        a.push_slot(&[None, Some(&p), Some(&p)], &mut out); // extra frames ignored
        assert_eq!(out, [7, 0, 0, 0, 0, 7]);
        assert_eq!(a.stats(), stats(3, 4, 0, 0));
        let a = Assembler::new(format("mulaw/8000/2"), 9, 160);
        assert_eq!((a.output_channels(), a.slot_bytes()), (2, 640), "tracks clamp to 2");
        let a = Assembler::new(format("mulaw/8000/2"), 0, 160);
        assert_eq!((a.output_channels(), a.slot_bytes()), (2, 640), "one track of stereo frames");
    }

    /// A random payload: text, or audio bytes of any length (often a frame's).
    fn payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            1 => "[a-z_]{0,12}".prop_map(|s| Payload::Text(Bytes::from(s))),
            2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(audio),
            4 => (any::<u8>(), prop_oneof![Just(8usize), Just(16), Just(32)]).prop_map(|(b, n)| audio(vec![b; n])),
        ]
    }

    fn any_format() -> impl Strategy<Value = MediaFormat> {
        (prop_oneof![Just(Encoding::Mulaw), Just(Encoding::Alaw), Just(Encoding::L16)], 0..2usize, 1..=2u64)
            .prop_map(|(e, r, c)| MediaFormat::new(e, [8000, 16000][r], c).unwrap())
    }

    proptest! {
        #[test]
        fn assembles_anything(
            format in any_format(),
            two_tracks in any::<bool>(),
            raw in proptest::collection::vec((any::<bool>(), 1..200u64, payload()), 0..60),
            sorted in any::<bool>(),
        ) {
            let mut packets: Vec<StoredPacket> =
                raw.into_iter().map(|(t, seq, data)| packet(u8::from(two_tracks && t), seq, data)).collect();
            if sorted {
                packets.sort_by_key(|p| (p.channel, p.sequence));
            }
            let pcm = assemble(format, &packets).unwrap();
            let tracks = if packets.iter().any(|p| p.channel == 1) { 2 } else { 1 };
            let highest = packets.iter().map(|p| p.sequence).max().unwrap_or(0);
            let channels = if tracks == 2 { 2 } else { usize::from(format.channels()) };
            prop_assert_eq!(usize::from(pcm.channels), channels);
            prop_assert!(pcm.frame_samples >= 1);
            prop_assert_eq!(pcm.samples.len() as u64, highest * pcm.frame_samples as u64 * channels as u64);
            prop_assert_eq!(pcm.stats.frames, highest);
            // Every (track, sequence) slot is exactly one of: missing, undecodable, played.
            let present: std::collections::BTreeSet<(u8, u64)> = packets.iter().map(|p| (p.channel, p.sequence)).collect();
            prop_assert_eq!(pcm.stats.gaps, highest * tracks - present.len() as u64);
            prop_assert!(pcm.stats.undecodable + pcm.stats.resized <= present.len() as u64);
        }
    }
}
