//! Asterisk AudioSocket as a pure, incremental decoder.
//!
//! The wire is a TCP byte stream of frames: one byte kind, a big-endian `u16` payload
//! length, the payload. [`AudioSocketSession::receive`] takes whatever bytes a read
//! returned (frames may be split anywhere) and answers the [`Action`]s of the frames
//! completed; [`AudioSocketSession::finish`] is told the peer closed the connection.
//!
//! What Asterisk sends (`res/res_audiosocket.c`, `apps/app_audiosocket.c`): first
//! `0x01` with the 16-byte UUID of the dialplan's `AudioSocket(<uuid>,host:port)`, then
//! voice frames and DTMF (`0x03`, one ASCII byte). The dialplan application sets the
//! channel's read format to signed linear 8 kHz, so it sends `0x10` only; the channel
//! driver (`Dial(AudioSocket/host:port/<uuid>/c(slin16))`) sends the kind of the agreed
//! codec, `0x10`-`0x18` (8, 12, 16, 24, 32, 44.1, 48, 96, 192 kHz), all signed 16-bit
//! little-endian mono. Asterisk never sends `0x00` (hang-up) or `0xff` (error): it ends
//! a call by closing the socket. So a clean end of input on a frame boundary is the
//! call's normal end ([`finish`](AudioSocketSession::finish) answers
//! [`Action::HangUp`]), as is a `0x00` frame from another client.
//!
//! - Call id: the UUID, hyphenated lower-case.
//! - The call is opened by its first audio frame, whose kind gives the media format
//!   (`l16/<rate>/1`); a DTMF before any audio opens it at 8 kHz. A connection that
//!   ends before either creates no call.
//! - Packet sequence: the audio frame count of the connection (1, 2, ...); timestamp
//!   and DTMF offsets: the samples before the frame. A reconnect of the same UUID
//!   starts again at 1 (AudioSocket has no counter of its own to resume from).
//! - Refused ([`ProtocolError`]): a frame before the UUID, a second UUID, a UUID that
//!   is not 16 bytes, an empty or odd-length audio frame, 96 or 192 kHz audio, a rate
//!   that changes mid-call, an unknown kind, an invalid DTMF byte, input after the end,
//!   end of input in the middle of a frame.

use std::fmt::Write as _;

use bytes::{Buf, BytesMut};

use crate::id::CallId;
use crate::media::session::{Action, CloseReason, Protocol, ProtocolError, StreamMetadata, Track};
use crate::media::{Encoding, MediaFormat};
use crate::packet::Packet;

/// Frame kinds.
pub mod kind {
    /// Hang up the call (no payload).
    pub const HANGUP: u8 = 0x00;
    /// The call's UUID (16 bytes).
    pub const UUID: u8 = 0x01;
    /// A DTMF digit (1 ASCII byte).
    pub const DTMF: u8 = 0x03;
    /// Signed linear 16-bit little-endian mono, 8 kHz; `0x11`-`0x18` the other rates.
    pub const AUDIO: u8 = 0x10;
    /// An error on the peer's side (a 1-byte code).
    pub const ERROR: u8 = 0xff;
}

/// The header: kind and length.
pub const HEADER_LEN: usize = 3;

/// The sample rate of an audio kind (`0x10`-`0x18`).
pub fn audio_rate(kind: u8) -> Option<u32> {
    Some(match kind {
        0x10 => 8000,
        0x11 => 12000,
        0x12 => 16000,
        0x13 => 24000,
        0x14 => 32000,
        0x15 => 44100,
        0x16 => 48000,
        0x17 => 96000,
        0x18 => 192000,
        _ => return None,
    })
}

/// The kind of audio at `rate`, if AudioSocket has one.
pub fn audio_kind(rate: u32) -> Option<u8> {
    (0x10..=0x18).find(|&k| audio_rate(k) == Some(rate))
}

/// Encodes one frame (for clients and tests). Panics if `payload` exceeds 65535 bytes.
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("an AudioSocket payload is at most 65535 bytes");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The call id of a 16-byte UUID: hyphenated lower-case hex.
pub fn uuid_call_id(uuid: &[u8; 16]) -> CallId {
    let mut s = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    CallId::new(s).expect("a hyphenated hex UUID is a valid call id")
}

#[derive(Debug, Clone)]
enum State {
    AwaitingUuid,
    Streaming(Streaming),
    Ended,
}

#[derive(Debug, Clone)]
struct Streaming {
    call_id: CallId,
    /// The call's rate, once opened.
    rate: Option<u32>,
    frames: u64,
    samples: u64,
}

impl Streaming {
    fn offset_ms(&self) -> u64 {
        match self.rate {
            Some(rate) => self.samples.saturating_mul(1000) / u64::from(rate),
            None => 0,
        }
    }

    /// `Open` for a call at `rate`, when not opened yet.
    fn open(&mut self, rate: u32, actions: &mut Vec<Action>) -> Result<(), ProtocolError> {
        match self.rate {
            Some(from) if from != rate => Err(ProtocolError::RateChanged { from, to: rate }),
            Some(_) => Ok(()),
            None => {
                let format = MediaFormat::new(Encoding::L16, u64::from(rate), 1)?;
                self.rate = Some(rate);
                actions.push(Action::Open {
                    call_id: self.call_id.clone(),
                    format,
                    metadata: StreamMetadata {
                        protocol: Protocol::AudioSocket,
                        stream_id: None,
                        account: None,
                        custom_parameters: Vec::new(),
                        tracks: vec![Track::Inbound],
                    },
                });
                Ok(())
            }
        }
    }
}

/// An AudioSocket connection: bytes in, [`Action`]s out. Never panics on any input.
///
/// ```
/// use pbx_core::media::audiosocket::{AudioSocketSession, encode_frame, kind};
/// use pbx_core::media::session::Action;
///
/// let mut wire = encode_frame(kind::UUID, &[0x11; 16]);
/// wire.extend(encode_frame(kind::AUDIO, &[0; 320]));
/// let mut session = AudioSocketSession::new();
/// let mut actions = session.receive(&wire[..10]).unwrap(); // split anywhere
/// actions.extend(session.receive(&wire[10..]).unwrap());
/// assert!(matches!(&actions[..], [Action::Open { .. }, Action::Store(_)]));
/// assert_eq!(session.finish().unwrap()[0], Action::HangUp);
/// ```
#[derive(Debug, Clone)]
pub struct AudioSocketSession {
    buffer: BytesMut,
    state: State,
}

impl Default for AudioSocketSession {
    fn default() -> Self {
        Self::new()
    }
}

impl AudioSocketSession {
    /// A session expecting the UUID frame.
    pub fn new() -> Self {
        Self { buffer: BytesMut::new(), state: State::AwaitingUuid }
    }

    /// The call, once the UUID arrived.
    pub fn call_id(&self) -> Option<&CallId> {
        match &self.state {
            State::Streaming(s) => Some(&s.call_id),
            _ => None,
        }
    }

    /// `true` once the call was declared (its first audio or DTMF).
    pub fn is_open(&self) -> bool {
        matches!(&self.state, State::Streaming(s) if s.rate.is_some())
    }

    /// `true` after a hang-up, the end of input or a refused frame.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Bytes received that do not make a whole frame yet (at most 65538).
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the bytes of one read. On error the session is ended; close the connection.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Action>, ProtocolError> {
        if matches!(self.state, State::Ended) {
            return if bytes.is_empty() { Ok(Vec::new()) } else { Err(ProtocolError::AfterEnd) };
        }
        self.buffer.extend_from_slice(bytes);
        let mut actions = Vec::new();
        let result = self.decode(&mut actions);
        match result {
            Ok(()) => Ok(actions),
            Err(e) => {
                self.end();
                Err(e)
            }
        }
    }

    /// The peer closed the connection. On a frame boundary this is the call's normal
    /// end: [`Action::HangUp`] for an opened call, then [`Action::Close`]. In the middle
    /// of a frame it is an error (the connection broke).
    pub fn finish(&mut self) -> Result<Vec<Action>, ProtocolError> {
        if matches!(self.state, State::Ended) {
            return Ok(Vec::new());
        }
        let pending = self.buffer.len();
        let opened = self.is_open();
        self.end();
        if pending > 0 {
            return Err(ProtocolError::InvalidField {
                event: "audiosocket",
                field: "frame",
                reason: format!("the connection ended {pending} bytes into a frame"),
            });
        }
        let close = Action::Close { reason: CloseReason::EndOfStream };
        Ok(if opened { vec![Action::HangUp, close] } else { vec![close] })
    }

    fn end(&mut self) {
        self.state = State::Ended;
        self.buffer = BytesMut::new();
    }

    fn decode(&mut self, actions: &mut Vec<Action>) -> Result<(), ProtocolError> {
        let mut audio: Vec<Packet> = Vec::new();
        let flush = |audio: &mut Vec<Packet>, actions: &mut Vec<Action>| {
            if !audio.is_empty() {
                actions.push(Action::Store(std::mem::take(audio)));
            }
        };
        while self.buffer.len() >= HEADER_LEN {
            let kind = self.buffer[0];
            let len = usize::from(u16::from_be_bytes([self.buffer[1], self.buffer[2]]));
            // Refuse on the header, without waiting for (or buffering) a bad payload.
            self.check_header(kind, len)?;
            if self.buffer.len() < HEADER_LEN + len {
                break;
            }
            self.buffer.advance(HEADER_LEN);
            let payload = self.buffer.split_to(len).freeze();
            let State::Streaming(streaming) = &mut self.state else {
                // AwaitingUuid: check_header let only a UUID through.
                let uuid: [u8; 16] = payload[..].try_into().expect("checked: 16 bytes");
                self.state =
                    State::Streaming(Streaming { call_id: uuid_call_id(&uuid), rate: None, frames: 0, samples: 0 });
                continue;
            };
            match kind {
                kind::HANGUP => {
                    flush(&mut audio, actions);
                    if streaming.rate.is_some() {
                        actions.push(Action::HangUp);
                    }
                    actions.push(Action::Close { reason: CloseReason::EndOfStream });
                    self.end();
                    return Ok(());
                }
                kind::DTMF => {
                    let digit = char::from(payload[0]).to_ascii_uppercase();
                    flush(&mut audio, actions);
                    streaming.open(8000, actions)?;
                    actions.push(Action::Dtmf { digit, offset_ms: streaming.offset_ms() });
                }
                kind::ERROR => {
                    flush(&mut audio, actions);
                    actions.push(Action::PeerError { detail: error_detail(&payload) });
                }
                _ => {
                    let rate = audio_rate(kind).expect("checked: an audio kind");
                    if streaming.rate.is_none() {
                        flush(&mut audio, actions);
                    }
                    streaming.open(rate, actions)?;
                    streaming.frames += 1;
                    let timestamp = streaming.samples as f64 / f64::from(rate);
                    let sequence = i64::try_from(streaming.frames).unwrap_or(i64::MAX);
                    audio.push(Packet::new(sequence, payload, timestamp)?);
                    streaming.samples += (len / 2) as u64;
                }
            }
        }
        flush(&mut audio, actions);
        Ok(())
    }

    fn check_header(&self, kind: u8, len: usize) -> Result<(), ProtocolError> {
        let invalid = |field, reason: String| ProtocolError::InvalidField { event: "audiosocket", field, reason };
        let streaming = match &self.state {
            State::Streaming(s) => Some(s),
            _ => None,
        };
        match kind {
            kind::UUID if streaming.is_some() => Err(ProtocolError::AlreadyStarted),
            kind::UUID if len != 16 => Err(invalid("uuid", format!("a UUID frame holds 16 bytes, not {len}"))),
            kind::UUID => Ok(()),
            kind::HANGUP | kind::DTMF | kind::ERROR | 0x10..=0x18 if streaming.is_none() => {
                Err(ProtocolError::BeforeStart { event: kind_name(kind) })
            }
            kind::HANGUP | kind::ERROR => Ok(()),
            kind::DTMF if len != 1 => Err(invalid("dtmf", format!("a DTMF frame holds 1 byte, not {len}"))),
            kind::DTMF => match self.buffer.get(HEADER_LEN) {
                Some(b) if !is_dtmf(*b) => Err(invalid("dtmf", format!("byte {b:#04x} is not a DTMF digit"))),
                _ => Ok(()),
            },
            0x17 | 0x18 => Err(ProtocolError::UnsupportedRate { kind, rate: audio_rate(kind).unwrap_or(0) }),
            0x10..=0x16 if len == 0 || len % 2 == 1 => {
                Err(invalid("audio", format!("{len} bytes is not a whole number of 16-bit samples (and at least one)")))
            }
            0x10..=0x16 => {
                let rate = audio_rate(kind).unwrap_or(0);
                match streaming.and_then(|s| s.rate) {
                    Some(from) if from != rate => Err(ProtocolError::RateChanged { from, to: rate }),
                    _ => Ok(()),
                }
            }
            other => Err(ProtocolError::UnknownEvent(format!("frame kind {other:#04x}"))),
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        kind::HANGUP => "hang-up",
        kind::UUID => "uuid",
        kind::DTMF => "dtmf",
        kind::ERROR => "error",
        _ => "audio",
    }
}

fn is_dtmf(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D' | b'a'..=b'd')
}

/// The AudioSocket protocol's error codes (CyCoreSystems' specification).
fn error_detail(payload: &[u8]) -> String {
    match payload.first() {
        None => "error frame without a code".into(),
        Some(0x01) => "error 0x01: hang-up of the calling party".into(),
        Some(0x02) => "error 0x02: frame forwarding error".into(),
        Some(0x04) => "error 0x04: memory (allocation) error".into(),
        Some(code) => format!("error {code:#04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::ProtocolErrorKind;
    use proptest::prelude::*;

    const UUID: [u8; 16] =
        [0x0e, 0x16, 0x0e, 0x42, 0x85, 0x3e, 0x48, 0x7c, 0x97, 0x7d, 0x96, 0x98, 0x9b, 0xf5, 0xc9, 0x9d];

    fn wire(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        frames.iter().flat_map(|(k, p)| encode_frame(*k, p)).collect()
    }

    fn stores(actions: &[Action]) -> Vec<Packet> {
        actions.iter().filter_map(|a| if let Action::Store(p) = a { Some(p.clone()) } else { None }).flatten().collect()
    }

    #[test]
    fn uuid_is_hyphenated_lower_case() {
        assert_eq!(uuid_call_id(&UUID).as_str(), "0e160e42-853e-487c-977d-96989bf5c99d");
    }

    #[test]
    fn a_whole_call_split_everywhere() {
        let bytes = wire(&[
            (kind::UUID, UUID.to_vec()),
            (kind::AUDIO, vec![1; 320]),
            (kind::DTMF, b"5".to_vec()),
            (kind::AUDIO, vec![2; 320]),
            (kind::HANGUP, vec![]),
        ]);
        for split in [1, 2, 3, 7, 100, bytes.len()] {
            let mut s = AudioSocketSession::new();
            let mut actions = Vec::new();
            for chunk in bytes.chunks(split) {
                actions.extend(s.receive(chunk).unwrap());
            }
            let Action::Open { call_id, format, metadata } = &actions[0] else { panic!("{actions:?}") };
            assert_eq!(call_id.as_str(), "0e160e42-853e-487c-977d-96989bf5c99d");
            assert_eq!(format.to_string(), "l16/8000/1");
            assert_eq!(metadata.protocol, Protocol::AudioSocket);
            let packets = stores(&actions);
            assert_eq!(packets.iter().map(|p| p.sequence()).collect::<Vec<_>>(), vec![1, 2]);
            assert_eq!(packets[1].timestamp(), 0.02);
            assert!(actions.contains(&Action::Dtmf { digit: '5', offset_ms: 20 }));
            assert_eq!(
                actions[actions.len() - 2..],
                [Action::HangUp, Action::Close { reason: CloseReason::EndOfStream }]
            );
            assert!(s.is_ended());
        }
    }

    #[test]
    fn end_of_input_is_the_end_of_the_call() {
        let mut s = AudioSocketSession::new();
        s.receive(&wire(&[(kind::UUID, UUID.to_vec()), (0x12, vec![0; 640])])).unwrap();
        assert_eq!(s.finish().unwrap()[0], Action::HangUp);

        let mut s = AudioSocketSession::new();
        s.receive(&wire(&[(kind::UUID, UUID.to_vec())])).unwrap();
        assert_eq!(s.finish().unwrap(), vec![Action::Close { reason: CloseReason::EndOfStream }], "no call");

        let mut s = AudioSocketSession::new();
        s.receive(&wire(&[(kind::UUID, UUID.to_vec())])).unwrap();
        s.receive(&[0x10, 0x01]).unwrap();
        assert!(matches!(s.finish(), Err(ProtocolError::InvalidField { .. })), "mid-frame");
    }

    #[test]
    fn rates() {
        let mut s = AudioSocketSession::new();
        let a = s.receive(&wire(&[(kind::UUID, UUID.to_vec()), (0x16, vec![0; 1920])])).unwrap();
        let Action::Open { format, .. } = &a[0] else { panic!() };
        assert_eq!(format.to_string(), "l16/48000/1");

        let mut s = AudioSocketSession::new();
        s.receive(&wire(&[(kind::UUID, UUID.to_vec()), (0x10, vec![0; 320])])).unwrap();
        assert!(matches!(s.receive(&[0x12, 0, 2]), Err(ProtocolError::RateChanged { from: 8000, to: 16000 })));
        for k in [0x17, 0x18] {
            let mut s = AudioSocketSession::new();
            s.receive(&wire(&[(kind::UUID, UUID.to_vec())])).unwrap();
            let err = s.receive(&[k, 0x07, 0x80]).unwrap_err(); // refused on the header
            assert!(matches!(err, ProtocolError::UnsupportedRate { .. }), "{err}");
            assert_eq!(err.kind(), ProtocolErrorKind::Unsupported);
            assert!(err.to_string().contains("Hz"), "{err}");
        }
    }

    #[test]
    fn refusals() {
        let fails = |bytes: Vec<u8>, ok: fn(&ProtocolError) -> bool| {
            let mut s = AudioSocketSession::new();
            let err = s.receive(&bytes).expect_err("refused");
            assert!(ok(&err), "{err:?}");
            assert!(s.is_ended());
            assert!(matches!(s.receive(&[1]), Err(ProtocolError::AfterEnd)));
        };
        let uuid = encode_frame(kind::UUID, &UUID);
        fails(encode_frame(kind::AUDIO, &[0; 2]), |e| matches!(e, ProtocolError::BeforeStart { event: "audio" }));
        fails(encode_frame(kind::UUID, &[0; 15]), |e| matches!(e, ProtocolError::InvalidField { .. }));
        fails([uuid.clone(), uuid.clone()].concat(), |e| matches!(e, ProtocolError::AlreadyStarted));
        fails([uuid.clone(), encode_frame(kind::AUDIO, &[0; 3])].concat(), |e| {
            matches!(e, ProtocolError::InvalidField { .. })
        });
        fails([uuid.clone(), encode_frame(kind::AUDIO, &[])].concat(), |e| {
            matches!(e, ProtocolError::InvalidField { .. })
        });
        fails([uuid.clone(), encode_frame(kind::DTMF, b"x")].concat(), |e| {
            matches!(e, ProtocolError::InvalidField { .. })
        });
        fails([uuid.clone(), encode_frame(0x42, &[])].concat(), |e| matches!(e, ProtocolError::UnknownEvent(_)));
    }

    #[test]
    fn peer_errors_are_reported() {
        let mut s = AudioSocketSession::new();
        let a = s.receive(&wire(&[(kind::UUID, UUID.to_vec()), (kind::ERROR, vec![0x02])])).unwrap();
        assert!(matches!(&a[0], Action::PeerError { detail } if detail.contains("forwarding")));
        assert!(!s.is_ended());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..20)) {
            let mut s = AudioSocketSession::new();
            for c in &chunks {
                let _ = s.receive(c);
                prop_assert!(s.pending_bytes() <= HEADER_LEN + usize::from(u16::MAX));
            }
            let _ = s.finish();
        }

        #[test]
        fn any_frames_after_a_uuid_never_panic(frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..20)) {
            let mut s = AudioSocketSession::new();
            let _ = s.receive(&encode_frame(kind::UUID, &UUID));
            for (k, p) in &frames {
                let _ = s.receive(&encode_frame(*k, p));
            }
            let _ = s.finish();
        }

        #[test]
        fn a_well_formed_stream_stores_every_frame(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..40),
            split in 1usize..500,
        ) {
            let mut bytes = encode_frame(kind::UUID, &UUID);
            for f in &frames {
                let mut even = f.clone();
                even.resize(f.len().div_ceil(2) * 2, 0);
                bytes.extend(encode_frame(kind::AUDIO, &even));
            }
            let mut s = AudioSocketSession::new();
            let mut actions = Vec::new();
            for c in bytes.chunks(split) {
                actions.extend(s.receive(c).unwrap());
            }
            actions.extend(s.finish().unwrap());
            let packets = stores(&actions);
            prop_assert_eq!(packets.len(), frames.len());
            for (i, p) in packets.iter().enumerate() {
                prop_assert_eq!(p.sequence(), i as u64 + 1);
            }
            prop_assert_eq!(actions.iter().filter(|a| **a == Action::HangUp).count(), 1);
        }
    }
}
