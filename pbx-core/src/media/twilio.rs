//! Twilio Media Streams (and Telnyx's copy of them) as a pure session.
//!
//! The stream is a sequence of JSON text frames: `connected`, one `start` naming the
//! call and its media format, `media` frames (base64 audio), `dtmf`, `mark`, and a final
//! `stop`. [`TwilioSession::receive`] takes one WebSocket frame and answers the
//! [`Action`]s it implies; it never panics, whatever the input.
//!
//! - Call id: Twilio `start.callSid`, Telnyx `start.call_control_id`; it must be a
//!   valid [`CallId`].
//! - Packet sequence: `media.chunk` (per track); timestamp: `media.timestamp` (ms since
//!   the stream started) in seconds. Numbers may arrive as strings or as JSON numbers.
//! - Tracks: with both `inbound` and `outbound` announced in `start.tracks` (Twilio
//!   `both_tracks`), inbound is channel 0 and outbound channel 1. The format is
//!   declared mono (each frame is one track's mono audio): the recording is stereo,
//!   inbound left, once both tracks sent frames, and mono if only one ever did. With
//!   one track, that track is channel 0. Telnyx's `start` lists no tracks: inbound is
//!   channel 0, outbound channel 1, the same way.
//! - Media format: Twilio `audio/x-mulaw`; Telnyx `PCMU` or `PCMA`, at the rate given.
//!   L16 (network byte order), G.722, Opus and AMR-WB are refused.
//! - `dtmf` and `mark` are reported with the offset of the latest media frame seen;
//!   Telnyx `error` frames are reported ([`Action::PeerError`]) and the stream goes on.
//! - Refused ([`ProtocolError`], the session ends): text that is not a JSON object with
//!   an `event`, missing fields or wrong types, a binary frame, an unknown event, a
//!   call frame before `start`, a second `start`, input after `stop`, an invalid call
//!   id, a frame larger than the limit.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::id::CallId;
use crate::media::session::{Action, CloseReason, Protocol, ProtocolError, StreamMetadata, Track};
use crate::media::{Encoding, MediaFormat};
use crate::packet::{DEFAULT_MAX_DATA_BYTES, Packet, PacketError};

/// Which vendor's field names the stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Twilio: camelCase (`streamSid`, `callSid`, `mediaFormat`, `customParameters`).
    Twilio,
    /// Telnyx: snake_case (`stream_id`, `call_control_id`, `media_format`), no tracks in
    /// `start`, and media frames possibly out of order.
    Telnyx,
}

impl Flavor {
    fn protocol(self) -> Protocol {
        match self {
            Flavor::Twilio => Protocol::Twilio,
            Flavor::Telnyx => Protocol::Telnyx,
        }
    }
}

/// One WebSocket data frame, as the transport received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsFrame<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame (never valid on these streams).
    Binary(&'a [u8]),
}

#[derive(Debug, Clone)]
enum State {
    AwaitingStart,
    Streaming(Streaming),
    Ended,
}

#[derive(Debug, Clone)]
struct Streaming {
    /// The channel of inbound / outbound media; `None` = not announced.
    inbound: Option<u8>,
    outbound: Option<u8>,
    /// The latest media timestamp seen, ms.
    offset_ms: u64,
}

/// A Twilio (or Telnyx) Media Streams session: JSON frames in, [`Action`]s out.
///
/// ```
/// use pbx_core::media::session::Action;
/// use pbx_core::media::twilio::{Flavor, TwilioSession, WsFrame};
///
/// let mut session = TwilioSession::new(Flavor::Twilio);
/// session.receive(WsFrame::Text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)).unwrap();
/// let start = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1",
///   "streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{},
///   "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
/// assert!(matches!(session.receive(WsFrame::Text(start)).unwrap()[..], [Action::Open { .. }]));
/// let media = r#"{"event":"media","sequenceNumber":"2","streamSid":"MZ1",
///   "media":{"track":"inbound","chunk":"1","timestamp":"20","payload":"//8="}}"#;
/// let Action::Store(packets) = &session.receive(WsFrame::Text(media)).unwrap()[0] else { panic!() };
/// assert_eq!((packets[0].sequence(), packets[0].timestamp()), (1, 0.02));
/// ```
#[derive(Debug, Clone)]
pub struct TwilioSession {
    flavor: Flavor,
    state: State,
    max_payload_bytes: usize,
    call_id: Option<CallId>,
}

impl TwilioSession {
    /// A session expecting `connected` or `start`, with payloads of at most
    /// [`DEFAULT_MAX_DATA_BYTES`].
    pub fn new(flavor: Flavor) -> Self {
        Self { flavor, state: State::AwaitingStart, max_payload_bytes: DEFAULT_MAX_DATA_BYTES, call_id: None }
    }

    /// The largest decoded audio payload accepted (text frames may be a third larger,
    /// plus 4 KiB of envelope).
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// The largest text frame accepted, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_payload_bytes.saturating_mul(4) / 3 + 4096
    }

    /// The flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The call, once `start` arrived.
    pub fn call_id(&self) -> Option<&CallId> {
        self.call_id.as_ref()
    }

    /// `true` after `stop` or a refused frame: the session takes no more input.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Takes one frame. On error the session is ended; close the stream.
    pub fn receive(&mut self, frame: WsFrame<'_>) -> Result<Vec<Action>, ProtocolError> {
        let result = self.receive_inner(frame);
        if result.is_err() {
            self.state = State::Ended;
        }
        result
    }

    fn receive_inner(&mut self, frame: WsFrame<'_>) -> Result<Vec<Action>, ProtocolError> {
        if matches!(self.state, State::Ended) {
            return Err(ProtocolError::AfterEnd);
        }
        let text = match frame {
            WsFrame::Text(text) => text,
            WsFrame::Binary(_) => return Err(ProtocolError::BinaryFrame),
        };
        let limit = self.max_frame_bytes();
        if text.len() > limit {
            return Err(ProtocolError::FrameTooLarge { len: text.len(), limit });
        }
        let envelope: Envelope<'_> = serde_json::from_str(text).map_err(ProtocolError::NotJson)?;
        match &*envelope.event {
            "connected" => Ok(Vec::new()),
            "start" => self.start(text),
            "media" => self.media(text),
            "dtmf" => self.dtmf(text),
            "mark" => self.mark(text),
            "error" => self.peer_error(text),
            "stop" => self.stop(),
            other => Err(ProtocolError::UnknownEvent(truncate(other))),
        }
    }

    fn streaming(&mut self, event: &'static str) -> Result<&mut Streaming, ProtocolError> {
        match &mut self.state {
            State::Streaming(s) => Ok(s),
            _ => Err(ProtocolError::BeforeStart { event }),
        }
    }

    fn start(&mut self, text: &str) -> Result<Vec<Action>, ProtocolError> {
        if !matches!(self.state, State::AwaitingStart) {
            return Err(ProtocolError::AlreadyStarted);
        }
        let malformed = |source| ProtocolError::Malformed { event: "start", source };
        let start = match self.flavor {
            Flavor::Twilio => {
                let f: TwilioStart<'_> = serde_json::from_str(text).map_err(malformed)?;
                Start {
                    call_id: f.start.call_sid,
                    stream_id: f.stream_sid.or(f.start.stream_sid),
                    account: f.start.account_sid,
                    tracks: f.start.tracks,
                    custom: f.start.custom_parameters,
                    format: f.start.media_format,
                }
            }
            Flavor::Telnyx => {
                let f: TelnyxStart<'_> = serde_json::from_str(text).map_err(malformed)?;
                Start {
                    call_id: f.start.call_control_id,
                    stream_id: f.stream_id,
                    account: f.start.user_id,
                    tracks: f.start.tracks,
                    custom: f.start.custom_parameters,
                    format: f.start.media_format,
                }
            }
        };
        let call_id = CallId::new(start.call_id.clone().into_owned())
            .map_err(|source| ProtocolError::InvalidCallId { id: truncate(&start.call_id), source })?;
        let (tracks, announced) = match start.tracks {
            Some(list) => {
                let mut tracks = Vec::new();
                for t in &list {
                    let track = parse_track(t).ok_or_else(|| ProtocolError::InvalidField {
                        event: "start",
                        field: "tracks",
                        reason: format!("unknown track {:?}", truncate(t)),
                    })?;
                    if !tracks.contains(&track) {
                        tracks.push(track);
                    }
                }
                if tracks.is_empty() {
                    return Err(ProtocolError::InvalidField {
                        event: "start",
                        field: "tracks",
                        reason: "no track".into(),
                    });
                }
                tracks.sort_by_key(|t| *t != Track::Inbound);
                (tracks, true)
            }
            None => (vec![Track::Inbound, Track::Outbound], false),
        };
        let encoding = parse_encoding(self.flavor, &start.format.encoding)?;
        // Each frame is one track's mono audio; the tracks are the packets' channels.
        // The call records in stereo once both tracks sent frames (the assembler makes
        // one output channel per track), and stays mono if only one ever does, rather
        // than reading mono frames as interleaved stereo.
        if let Some(channels) = start.format.channels.filter(|&c| c != 1) {
            return Err(ProtocolError::InvalidField {
                event: "start",
                field: "mediaFormat.channels",
                reason: format!("{channels} channels per frame; each track's frames must be mono"),
            });
        }
        let format = MediaFormat::new(encoding, start.format.sample_rate.unwrap_or(8000), 1)?;
        let streaming = Streaming {
            inbound: tracks.iter().position(|t| *t == Track::Inbound).map(|i| i as u8),
            outbound: tracks.iter().position(|t| *t == Track::Outbound).map(|i| i as u8),
            offset_ms: 0,
        };
        let mut custom_parameters: Vec<(String, String)> = start
            .custom
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        custom_parameters.sort();
        let metadata = StreamMetadata {
            protocol: self.flavor.protocol(),
            stream_id: start.stream_id.map(Cow::into_owned),
            account: start.account.map(Cow::into_owned),
            custom_parameters,
            tracks: if announced { tracks } else { vec![Track::Inbound] },
        };
        self.state = State::Streaming(streaming);
        self.call_id = Some(call_id.clone());
        Ok(vec![Action::Open { call_id, format, metadata }])
    }

    fn media(&mut self, text: &str) -> Result<Vec<Action>, ProtocolError> {
        let max = self.max_payload_bytes;
        let streaming = self.streaming("media")?;
        let frame: MediaFrame<'_> =
            serde_json::from_str(text).map_err(|source| ProtocolError::Malformed { event: "media", source })?;
        let media = frame.media;
        let channel = match media.track.as_deref() {
            None => 0,
            Some(t) => match parse_track(t) {
                Some(Track::Inbound) => streaming.inbound,
                Some(Track::Outbound) => streaming.outbound,
                None => None,
            }
            .ok_or_else(|| ProtocolError::UnknownTrack(truncate(t)))?,
        };
        // Base64 of `max` bytes is at most 4 * ceil(max / 3) characters.
        if media.payload.len() / 4 * 3 > max + 2 {
            return Err(ProtocolError::FrameTooLarge { len: media.payload.len() / 4 * 3, limit: max });
        }
        let payload = BASE64.decode(media.payload.as_bytes()).map_err(|e| ProtocolError::InvalidField {
            event: "media",
            field: "media.payload",
            reason: format!("not base64: {e}"),
        })?;
        if payload.len() > max {
            return Err(ProtocolError::FrameTooLarge { len: payload.len(), limit: max });
        }
        let sequence =
            i64::try_from(media.chunk.0).map_err(|_| PacketError::SequenceOutOfRange(i128::from(media.chunk.0)))?;
        let timestamp_ms = media.timestamp.0;
        let packet = Packet::new(sequence, Bytes::from(payload), timestamp_ms as f64 / 1000.0)?
            .on_channel(i64::from(channel))?;
        streaming.offset_ms = streaming.offset_ms.max(timestamp_ms);
        Ok(vec![Action::Store(vec![packet])])
    }

    fn dtmf(&mut self, text: &str) -> Result<Vec<Action>, ProtocolError> {
        let streaming = self.streaming("dtmf")?;
        let frame: DtmfFrame<'_> =
            serde_json::from_str(text).map_err(|source| ProtocolError::Malformed { event: "dtmf", source })?;
        let digit = parse_digit(&frame.dtmf.digit).ok_or_else(|| ProtocolError::InvalidField {
            event: "dtmf",
            field: "dtmf.digit",
            reason: format!("{:?} is not a DTMF digit", truncate(&frame.dtmf.digit)),
        })?;
        Ok(vec![Action::Dtmf { digit, offset_ms: streaming.offset_ms }])
    }

    fn mark(&mut self, text: &str) -> Result<Vec<Action>, ProtocolError> {
        let streaming = self.streaming("mark")?;
        let frame: MarkFrame<'_> =
            serde_json::from_str(text).map_err(|source| ProtocolError::Malformed { event: "mark", source })?;
        Ok(vec![Action::Mark { name: frame.mark.name.into_owned(), offset_ms: streaming.offset_ms }])
    }

    fn peer_error(&mut self, text: &str) -> Result<Vec<Action>, ProtocolError> {
        let frame: ErrorFrame =
            serde_json::from_str(text).map_err(|source| ProtocolError::Malformed { event: "error", source })?;
        let detail = frame.payload.map(|p| p.to_string()).unwrap_or_else(|| "(no detail)".into());
        Ok(vec![Action::PeerError { detail: truncate(&detail) }])
    }

    fn stop(&mut self) -> Result<Vec<Action>, ProtocolError> {
        let started = matches!(self.state, State::Streaming(_));
        self.state = State::Ended;
        let close = Action::Close { reason: CloseReason::EndOfStream };
        Ok(if started { vec![Action::HangUp, close] } else { vec![close] })
    }
}

/// At most 200 characters of peer-supplied text, for error messages and logs.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

fn parse_track(t: &str) -> Option<Track> {
    match t {
        "inbound" | "inbound_track" => Some(Track::Inbound),
        "outbound" | "outbound_track" => Some(Track::Outbound),
        _ => None,
    }
}

fn parse_digit(d: &str) -> Option<char> {
    let mut chars = d.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ ('0'..='9' | '*' | '#' | 'A'..='D')), None) => Some(c),
        (Some(c @ 'a'..='d'), None) => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

fn parse_encoding(flavor: Flavor, name: &str) -> Result<Encoding, ProtocolError> {
    let lower = name.to_ascii_lowercase();
    match (flavor, lower.as_str()) {
        (_, "audio/x-mulaw" | "pcmu" | "mulaw") => Ok(Encoding::Mulaw),
        (_, "audio/x-alaw" | "pcma" | "alaw") => Ok(Encoding::Alaw),
        _ => Err(ProtocolError::UnsupportedFormat(format!(
            "encoding {:?}: pbx stores mu-law (audio/x-mulaw, PCMU) and A-law (PCMA) streams",
            truncate(name)
        ))),
    }
}

struct Start<'a> {
    call_id: Cow<'a, str>,
    stream_id: Option<Cow<'a, str>>,
    account: Option<Cow<'a, str>>,
    tracks: Option<Vec<Cow<'a, str>>>,
    custom: Option<serde_json::Map<String, serde_json::Value>>,
    format: FormatFields<'a>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwilioStart<'a> {
    #[serde(borrow, default)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    start: TwilioStartBody<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwilioStartBody<'a> {
    #[serde(borrow)]
    call_sid: Cow<'a, str>,
    #[serde(borrow, default)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    account_sid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tracks: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    custom_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow)]
    media_format: FormatFields<'a>,
}

#[derive(Deserialize)]
struct TelnyxStart<'a> {
    #[serde(borrow, default)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    start: TelnyxStartBody<'a>,
}

#[derive(Deserialize)]
struct TelnyxStartBody<'a> {
    #[serde(borrow)]
    call_control_id: Cow<'a, str>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tracks: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    custom_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow)]
    media_format: FormatFields<'a>,
}

/// `mediaFormat` / `media_format`: both spellings of the rate.
#[derive(Deserialize)]
struct FormatFields<'a> {
    #[serde(borrow)]
    encoding: Cow<'a, str>,
    #[serde(alias = "sampleRate", alias = "sample_rate", default, deserialize_with = "opt_number")]
    sample_rate: Option<u64>,
    /// Channels per frame: each track's frames are mono, so anything else is refused.
    #[serde(default, deserialize_with = "opt_number")]
    channels: Option<u64>,
}

#[derive(Deserialize)]
struct MediaFrame<'a> {
    #[serde(borrow)]
    media: MediaBody<'a>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(borrow, default)]
    track: Option<Cow<'a, str>>,
    chunk: Number,
    timestamp: Number,
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DtmfFrame<'a> {
    #[serde(borrow)]
    dtmf: DtmfBody<'a>,
}

#[derive(Deserialize)]
struct DtmfBody<'a> {
    #[serde(borrow)]
    digit: Cow<'a, str>,
}

#[derive(Deserialize)]
struct MarkFrame<'a> {
    #[serde(borrow)]
    mark: MarkBody<'a>,
}

#[derive(Deserialize)]
struct MarkBody<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ErrorFrame {
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

/// A non-negative integer sent as a JSON number or a string of digits.
struct Number(u64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor).map(Number)
    }
}

fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Number::deserialize(d).map(|n| Some(n.0))
}

struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a non-negative integer, as a number or a string of digits")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        v.parse().map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::ProtocolErrorKind;
    use crate::packet::Payload;
    use proptest::prelude::*;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";

    fn start(tracks: &str) -> String {
        format!(
            r#"{{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{{"accountSid":"AC1","streamSid":"MZ1","callSid":"{CALL}","tracks":{tracks},"customParameters":{{"b":"2","a":"1"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#
        )
    }

    fn media(track: &str, chunk: u64, ts: u64, payload: &[u8]) -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"{}","streamSid":"MZ1","media":{{"track":"{track}","chunk":"{chunk}","timestamp":"{ts}","payload":"{}"}}}}"#,
            chunk + 2,
            BASE64.encode(payload)
        )
    }

    fn text(s: &mut TwilioSession, t: &str) -> Result<Vec<Action>, ProtocolError> {
        s.receive(WsFrame::Text(t))
    }

    fn started(tracks: &str) -> TwilioSession {
        let mut s = TwilioSession::new(Flavor::Twilio);
        text(&mut s, r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap();
        text(&mut s, &start(tracks)).unwrap();
        s
    }

    #[test]
    fn a_whole_stream() {
        let mut s = TwilioSession::new(Flavor::Twilio);
        assert!(text(&mut s, r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap().is_empty());
        let actions = text(&mut s, &start(r#"["inbound"]"#)).unwrap();
        let [Action::Open { call_id, format, metadata }] = &actions[..] else { panic!("{actions:?}") };
        assert_eq!(call_id.as_str(), CALL);
        assert_eq!(*format, MediaFormat::TELEPHONY);
        assert_eq!(metadata.protocol, Protocol::Twilio);
        assert_eq!(metadata.stream_id.as_deref(), Some("MZ1"));
        assert_eq!(metadata.account.as_deref(), Some("AC1"));
        assert_eq!(metadata.custom_parameters, vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(metadata.tracks, vec![Track::Inbound]);

        let actions = text(&mut s, &media("inbound", 1, 0, &[0xff; 160])).unwrap();
        let [Action::Store(p)] = &actions[..] else { panic!() };
        assert_eq!((p[0].sequence(), p[0].channel(), p[0].timestamp()), (1, 0, 0.0));
        assert_eq!(p[0].data(), &Payload::Audio(Bytes::from(vec![0xff; 160])));
        text(&mut s, &media("inbound", 2, 20, &[0x7f; 160])).unwrap();

        let dtmf =
            r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert_eq!(text(&mut s, dtmf).unwrap(), vec![Action::Dtmf { digit: '1', offset_ms: 20 }]);
        let mark = r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"my label"}}"#;
        assert_eq!(text(&mut s, mark).unwrap(), vec![Action::Mark { name: "my label".into(), offset_ms: 20 }]);
        let stop =
            r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert_eq!(
            text(&mut s, stop).unwrap(),
            vec![Action::HangUp, Action::Close { reason: CloseReason::EndOfStream }]
        );
        assert!(s.is_ended());
        assert!(matches!(text(&mut s, &media("inbound", 3, 40, &[1])), Err(ProtocolError::AfterEnd)));
    }

    #[test]
    fn both_tracks_are_two_channels() {
        let mut s = started(r#"["outbound","inbound"]"#);
        let Action::Store(p) = &text(&mut s, &media("outbound", 1, 0, &[1; 160])).unwrap()[0] else { panic!() };
        assert_eq!(p[0].channel(), 1);
        let Action::Store(p) = &text(&mut s, &media("inbound", 1, 0, &[1; 160])).unwrap()[0] else { panic!() };
        assert_eq!(p[0].channel(), 0);

        let mut s = TwilioSession::new(Flavor::Twilio);
        let Action::Open { format, metadata, .. } = &text(&mut s, &start(r#"["inbound","outbound"]"#)).unwrap()[0]
        else {
            panic!()
        };
        assert_eq!(format.channels(), 1, "frames are mono; the tracks are channels of packets");
        assert_eq!(metadata.tracks, vec![Track::Inbound, Track::Outbound]);
    }

    #[test]
    fn a_single_outbound_track_is_channel_0() {
        let mut s = started(r#"["outbound"]"#);
        let Action::Store(p) = &text(&mut s, &media("outbound", 1, 0, &[1; 160])).unwrap()[0] else { panic!() };
        assert_eq!(p[0].channel(), 0);
        assert!(matches!(text(&mut s, &media("inbound", 1, 0, &[1])), Err(ProtocolError::UnknownTrack(_))));
    }

    #[test]
    fn numbers_may_be_numbers() {
        let mut s = started(r#"["inbound"]"#);
        let m = r#"{"event":"media","media":{"track":"inbound","chunk":7,"timestamp":140,"payload":"AA=="}}"#;
        let Action::Store(p) = &text(&mut s, m).unwrap()[0] else { panic!() };
        assert_eq!((p[0].sequence(), p[0].timestamp()), (7, 0.14));
    }

    #[test]
    fn telnyx_names() {
        let mut s = TwilioSession::new(Flavor::Telnyx);
        text(&mut s, r#"{"event":"connected","version":"1.0.0"}"#).unwrap();
        let st = r#"{"event":"start","sequence_number":"1","stream_id":"32DE0DEA","start":{"user_id":"U1","call_control_id":"v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg","call_session_id":"x","from":"+1","to":"+2","client_state":"aGk=","custom_parameters":{"customer_id":"c1"},"media_format":{"encoding":"PCMA","sample_rate":8000,"channels":1}}}"#;
        let Action::Open { call_id, format, metadata } = &text(&mut s, st).unwrap()[0] else { panic!() };
        assert!(call_id.as_str().starts_with("v3:"));
        assert_eq!(format.to_string(), "alaw/8000/1");
        assert_eq!(metadata.stream_id.as_deref(), Some("32DE0DEA"));
        assert_eq!(metadata.account.as_deref(), Some("U1"));
        assert_eq!(metadata.protocol, Protocol::Telnyx);
        // Out of order is fine; both tracks map to their channels.
        let m = |track, chunk| {
            format!(
                r#"{{"event":"media","sequence_number":"4","stream_id":"32DE0DEA","media":{{"track":"{track}","chunk":"{chunk}","timestamp":"5","payload":"AAAA"}}}}"#
            )
        };
        let Action::Store(p) = &text(&mut s, &m("inbound", 2)).unwrap()[0] else { panic!() };
        assert_eq!((p[0].sequence(), p[0].channel()), (2, 0));
        let Action::Store(p) = &text(&mut s, &m("outbound", 1)).unwrap()[0] else { panic!() };
        assert_eq!((p[0].sequence(), p[0].channel()), (1, 1));
        let err = r#"{"event":"error","payload":{"code":100002,"title":"Unknown Error"}}"#;
        assert!(matches!(&text(&mut s, err).unwrap()[0], Action::PeerError { .. }));
        let stop = r#"{"event":"stop","sequence_number":"5","stop":{"user_id":"U1","call_control_id":"v3:x"},"stream_id":"32DE0DEA"}"#;
        assert_eq!(text(&mut s, stop).unwrap()[0], Action::HangUp);
    }

    #[test]
    fn refusals() {
        let check = |s: &mut TwilioSession, input: WsFrame<'_>, ok: fn(&ProtocolError) -> bool| {
            let err = s.receive(input).expect_err("refused");
            assert!(ok(&err), "{err:?}");
            assert!(s.is_ended());
        };
        let fresh = || TwilioSession::new(Flavor::Twilio);
        check(&mut fresh(), WsFrame::Text("not json"), |e| matches!(e, ProtocolError::NotJson(_)));
        check(&mut fresh(), WsFrame::Text("[1,2]"), |e| matches!(e, ProtocolError::NotJson(_)));
        check(&mut fresh(), WsFrame::Text(r#"{"event":5}"#), |e| matches!(e, ProtocolError::NotJson(_)));
        check(&mut fresh(), WsFrame::Binary(&[1, 2, 3]), |e| e.kind() == ProtocolErrorKind::UnsupportedData);
        check(&mut fresh(), WsFrame::Text(r#"{"event":"hello"}"#), |e| matches!(e, ProtocolError::UnknownEvent(_)));
        check(&mut fresh(), WsFrame::Text(&media("inbound", 1, 0, &[1])), |e| {
            matches!(e, ProtocolError::BeforeStart { event: "media" })
        });
        check(&mut started(r#"["inbound"]"#), WsFrame::Text(&start(r#"["inbound"]"#)), |e| {
            matches!(e, ProtocolError::AlreadyStarted)
        });
        check(&mut fresh(), WsFrame::Text(&start(r#"["inbound"]"#).replace(CALL, "bad id!")), |e| {
            matches!(e, ProtocolError::InvalidCallId { .. })
        });
        check(&mut fresh(), WsFrame::Text(&start(r#"["inbound"]"#).replace("audio/x-mulaw", "audio/opus")), |e| {
            e.kind() == ProtocolErrorKind::Unsupported
        });
        check(&mut fresh(), WsFrame::Text(&start(r#"["sideways"]"#)), |e| {
            matches!(e, ProtocolError::InvalidField { .. })
        });
        check(&mut fresh(), WsFrame::Text(r#"{"event":"start","start":{"callSid":7}}"#), |e| {
            matches!(e, ProtocolError::Malformed { event: "start", .. })
        });
        let bad_chunk =
            r#"{"event":"media","media":{"track":"inbound","chunk":"x1","timestamp":"0","payload":"AA=="}}"#;
        check(&mut started(r#"["inbound"]"#), WsFrame::Text(bad_chunk), |e| {
            matches!(e, ProtocolError::Malformed { .. })
        });
        let zero = r#"{"event":"media","media":{"track":"inbound","chunk":"0","timestamp":"0","payload":"AA=="}}"#;
        check(&mut started(r#"["inbound"]"#), WsFrame::Text(zero), |e| matches!(e, ProtocolError::Packet(_)));
        let b64 = r#"{"event":"media","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"%%%"}}"#;
        check(&mut started(r#"["inbound"]"#), WsFrame::Text(b64), |e| matches!(e, ProtocolError::InvalidField { .. }));
        let mut small = started(r#"["inbound"]"#).with_max_payload_bytes(100);
        check(&mut small, WsFrame::Text(&media("inbound", 1, 0, &[0; 101])), |e| {
            e.kind() == ProtocolErrorKind::TooLarge
        });
        let huge = "x".repeat(200_000);
        check(&mut fresh(), WsFrame::Text(&huge), |e| e.kind() == ProtocolErrorKind::TooLarge);
    }

    fn arb_frame() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            Just(start(r#"["inbound","outbound"]"#)),
            Just(r#"{"event":"stop"}"#.to_owned()),
            Just(r#"{"event":"connected"}"#.to_owned()),
            (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..8), any::<bool>())
                .prop_map(|(c, t, p, inb)| media(if inb { "inbound" } else { "outbound" }, c, t, &p)),
            (".{0,8}", ".{0,8}").prop_map(|(e, v)| format!(r#"{{"event":"{e}","media":{{"chunk":"{v}"}}}}"#)),
        ]
    }

    proptest! {
        #[test]
        fn any_frames_never_panic(frames in proptest::collection::vec(arb_frame(), 0..20), flavor in any::<bool>()) {
            let mut s = TwilioSession::new(if flavor { Flavor::Twilio } else { Flavor::Telnyx });
            for f in &frames {
                let _ = s.receive(WsFrame::Text(f));
                let _ = s.receive(WsFrame::Binary(f.as_bytes()));
            }
        }

        #[test]
        fn a_well_formed_stream_stores_every_frame(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..40)) {
            let mut s = started(r#"["inbound"]"#);
            for (i, f) in frames.iter().enumerate() {
                let actions = text(&mut s, &media("inbound", i as u64 + 1, i as u64 * 20, f)).unwrap();
                prop_assert_eq!(actions.len(), 1);
                let Action::Store(p) = &actions[0] else { panic!() };
                prop_assert_eq!(p[0].sequence(), i as u64 + 1);
                prop_assert_eq!(p[0].data(), &Payload::Audio(Bytes::from(f.clone())));
            }
        }
    }
}
