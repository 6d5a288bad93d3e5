//! The harnesses behind the fuzz targets, in a library so that `cargo test` runs them on
//! stable over generated inputs.

use bytes::Bytes;
use chrono::DateTime;
use pbx_core::media::assemble::{Assembler, MAX_AUDIO_SECONDS};
use pbx_core::media::{AssembleError, Encoding, MediaFormat, SAMPLE_RATES, assemble};
use pbx_core::{Payload, StoredPacket};

/// The highest sequence a small input reaches (keeps each run's audio small).
const MAX_SEQUENCE: u64 = 1024;

/// One frame record of the input.
struct Record {
    track: u8,
    payload: Option<Payload>,
    ends_slot: bool,
    sequence_step: u64,
    huge_sequence: bool,
}

/// Splits `data` into a format, a frame length and frame records:
///
/// - byte 0: encoding (`% 3`), channels (bit 2), tracks (bit 3), rate (`>> 4`, `% 7`);
/// - bytes 1, 2: frame samples, little-endian, `% 1024`;
/// - then records `[tag, len, len bytes]`: tag bits 0-1 missing / audio / text (2, 3:
///   the bytes as a `data` string, through `Payload::from_base64_or_text`), bit 2 the
///   track, bit 3 ends the slot, bits 4-7 the sequence step for `assemble`; tag 0xFF
///   gives a sequence far past the length limit.
fn parse(data: &[u8]) -> Option<(MediaFormat, u8, usize, Vec<Record>)> {
    let (&config, rest) = data.split_first()?;
    let encoding = [Encoding::Mulaw, Encoding::Alaw, Encoding::L16][usize::from(config % 3)];
    let channels = 1 + u64::from(config >> 2 & 1);
    let tracks = 1 + (config >> 3 & 1);
    let rate = SAMPLE_RATES[usize::from(config >> 4) % SAMPLE_RATES.len()];
    let format = MediaFormat::new(encoding, u64::from(rate), channels).expect("a supported format");
    let frame_samples = match rest {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])) % 1024,
        _ => 0,
    };
    let mut rest = rest.get(2..).unwrap_or_default();
    let mut records = Vec::new();
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let payload = match tag & 3 {
            0 => None,
            1 => Some(Payload::Audio(Bytes::copy_from_slice(bytes))),
            _ => {
                let text = String::from_utf8_lossy(bytes);
                let payload = Payload::from_base64_or_text(&text);
                assert_eq!(payload.to_base64_or_text(), text, "a data string reads back as sent");
                Some(payload)
            }
        };
        records.push(Record {
            track: tag >> 2 & 1,
            payload,
            ends_slot: tag & 8 != 0,
            sequence_step: u64::from(tag >> 4),
            huge_sequence: *tag == 0xFF,
        });
    }
    Some((format, tracks, frame_samples, records))
}

/// Feeds `data`'s frames to an [`Assembler`] slot by slot, then as stored packets to
/// [`assemble`], checking the lengths and counts each promises.
pub fn assemble_input(data: &[u8]) {
    let Some((format, tracks, frame_samples, records)) = parse(data) else { return };
    push_slots(format, tracks, frame_samples, &records);
    assemble_packets(format, tracks, &records);
}

fn push_slots(format: MediaFormat, tracks: u8, frame_samples: usize, records: &[Record]) {
    let mut assembler = Assembler::new(format, tracks, frame_samples);
    let per_slot = assembler.slot_bytes() / 2;
    assert_eq!(per_slot, assembler.frame_samples() * usize::from(assembler.output_channels()));
    let mut out = Vec::new();
    let mut slot: Vec<Option<&Payload>> = Vec::new();
    let mut slots = 0u64;
    for (i, record) in records.iter().enumerate() {
        let track = usize::from(record.track);
        if slot.len() <= track {
            slot.resize(track + 1, None);
        }
        slot[track] = record.payload.as_ref();
        if record.ends_slot || i + 1 == records.len() {
            let before = out.len();
            assembler.push_slot(&slot, &mut out);
            assert_eq!(out.len() - before, per_slot, "a slot is one frame length of every channel");
            slots += 1;
            slot.clear();
        }
    }
    let stats = assembler.stats();
    assert_eq!(stats.frames, slots);
    let track_frames = slots * u64::from(tracks.clamp(1, 2));
    assert!(stats.gaps + stats.undecodable <= track_frames, "{stats:?}");
    assert!(stats.resized <= track_frames, "{stats:?}");
}

fn assemble_packets(format: MediaFormat, tracks: u8, records: &[Record]) {
    let mut sequence = 0u64;
    let mut huge = false;
    let mut packets: Vec<StoredPacket> = Vec::new();
    for record in records {
        sequence = (sequence + record.sequence_step) % MAX_SEQUENCE;
        let Some(data) = record.payload.clone() else { continue };
        let seq = if record.huge_sequence {
            huge = true;
            1 << 40
        } else {
            sequence + 1
        };
        let channel = if tracks > 1 { record.track } else { 0 };
        packets.push(StoredPacket { channel, sequence: seq, data, timestamp: 0.0, received_at: DateTime::UNIX_EPOCH });
    }
    if packets.len() % 2 == 1 {
        packets.sort_by_key(|p| (p.channel, p.sequence)); // both orders: the store's and any
    }
    match assemble(format, &packets) {
        Err(AssembleError::TooLong { highest, max_seconds, .. }) => {
            assert!(huge && highest == 1 << 40 && max_seconds == MAX_AUDIO_SECONDS);
        }
        Err(other) => panic!("unexpected {other:?}"),
        Ok(audio) => {
            assert!(!huge, "2^40 slots are refused");
            let highest = packets.iter().map(|p| p.sequence).max().unwrap_or(0);
            let channels = if packets.iter().any(|p| p.channel > 0) { 2 } else { usize::from(format.channels()) };
            assert_eq!(usize::from(audio.channels), channels);
            assert_eq!(audio.samples.len() as u64, highest * audio.frame_samples as u64 * channels as u64);
            assert_eq!(audio.stats.frames, highest);
            assert_eq!(audio.sample_rate, format.sample_rate());
        }
    }
}

#[cfg(test)]
mod tests {
    /// xorshift64*: deterministic inputs without a dependency.
    fn inputs(count: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        (0..count).map(move |_| {
            let len = (next() % 600) as usize;
            (0..len).map(|_| (next() >> 56) as u8).collect()
        })
    }

    #[test]
    fn harness_survives_generated_inputs() {
        super::assemble_input(&[]);
        super::assemble_input(&[0xFF]);
        super::assemble_input(&[0, 160, 0, 0xFF, 4, b'A', b'A', b'A', b'A']);
        for input in inputs(3000) {
            super::assemble_input(&input);
        }
    }
}
