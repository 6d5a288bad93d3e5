//! Genesys Cloud AudioHook (protocol version 2) as a pure session.
//!
//! A stream is one WebSocket: JSON text messages both ways, and binary frames of audio
//! from the client (Genesys) after the server answered `open` with `opened`.
//! [`AudioHookSession::receive`] takes one WebSocket frame and answers the
//! [`AudioHookAction`]s it implies, in order: declare the call, store these packets,
//! send this message, complete the call, close the socket. No I/O, no clocks, no tasks
//! (CONVENTIONS section 8); it never panics, whatever the input.
//!
//! Message directions follow Genesys's reference implementation
//! (`purecloudlabs/audiohook-reference-implementation`, `app/audiohook/src/protocol/message.ts`):
//!
//! | client sends | server answers |
//! |---|---|
//! | `open` | `opened` (one media chosen from the offers), or `disconnect` `unauthorized` |
//! | `ping` | `pong` |
//! | `update` {language} | `updated` |
//! | `close` {reason} | `closed` (after the call's audio was handed over for storage) |
//! | `paused`, `resumed` {start, discarded}, `discarded` {start, discarded}, `error` {code, message} | nothing (reported as [`AudioHookEvent`]s) |
//!
//! The server may also send `disconnect` {reason: completed, unauthorized, error}
//! ([`AudioHookSession::disconnect`]; the client answers with a `close` transaction) and
//! `pause`/`resume` ([`AudioHookSession::request_pause`], [`AudioHookSession::request_resume`]).
//! Note that *client*-side pauses are announced with `paused`/`resumed`; a `pause` or
//! `resume` *from* the client is not a message of the protocol and is refused.
//!
//! # Envelope checks
//! Every client message needs `version` "2", `type`, `id` (the session id; the same in
//! every message), `seq` (exactly one more than the previous client message, from 1),
//! `serverseq` (the last server `seq` the client saw: at most the server's own counter
//! and never going back), `position` (an ISO-8601 duration, `PT1.5S`) and `parameters`.
//! The server's own `seq` counts from 1; each server message carries `clientseq` = the
//! last client `seq`.
//!
//! # Call id: the AudioHook session id
//! The call id is the session id (`id` of `open`, a UUID), not the `conversationId`.
//! The packet sequence is derived from the session's audio position, and positions are
//! scoped to a session: a Genesys conversation can have several AudioHook sessions
//! (several integrations, a transfer, a new session after a failure), each starting at
//! position 0. Keyed by conversation, their frames would claim the same sequence slots
//! and be refused as conflicting duplicates. Keyed by session, a reconnect (a new
//! socket whose `open` carries the same session id and continues at its `position`)
//! continues the same call and the same sequence space, and a resent frame is detected
//! as a duplicate. The conversation id, organization, participant and language are
//! kept in [`AudioHookMetadata`] so a call can be found by conversation.
//!
//! # Packet sequence: audio position / frame size
//! The session keeps a *timeline*: the position, in samples, of the next audio sample.
//! It starts at `open`'s `position` (0 for a new session, where it left off for a
//! reconnect), advances by each binary frame's sample count, and by the `discarded`
//! duration of `resumed` and `discarded` messages, so audio the client did not send
//! (paused or discarded spans) becomes silence in the recording rather than a gap.
//! The frame size `samples_per_frame` is learned from the first binary frame (the
//! reference client sends 200 ms, Genesys 20-200 ms) and
//!
//! ```text
//! sequence = floor(sample_position / samples_per_frame) + 1
//! ```
//!
//! Frames that are exactly `samples_per_frame` long and start on a frame boundary (the
//! normal case) each become one packet. Any other audio is cut at frame boundaries and
//! a slot only partly covered is held until the timeline leaves it (or until
//! [`AudioHookSession::flush`] / `close`), its uncovered part filled with silence, so
//! every packet holds exactly one frame of audio at its true position.
//!
//! # Connection probes
//! An `open` whose `conversationId` is all zeros is a connection probe: it gets
//! `opened` and, on `close`, `closed`, and creates no call (audio it may send is ignored).
//!
//! # Media
//! Offers are `{type: audio, format: PCMU|L16, channels: [external, internal] | [one], rate}`.
//! `opened` picks stereo PCMU, then mono PCMU (external first), then L16 (stereo, then
//! mono), preferring 8000 Hz within each class. Stereo is one track whose frames hold
//! both channels interleaved (a 2-channel [`MediaFormat`]); the first offered channel
//! is left. An open without an acceptable offer is refused.
//!
//! # Refused input ([`ProtocolError`], the session ends)
//! Text that is not JSON, a message without the envelope fields or with wrong types, a
//! wrong `version`, `seq`, `serverseq` or `id`, an unknown message type, audio before
//! `opened` or after `close`, a second `open`, a binary frame that is not a whole number
//! of samples, frames larger than the limits, positions beyond
//! [`SessionLimits::max_position`]. The driver then sends [`AudioHookSession::disconnect`]
//! with reason `error` and closes that one stream.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::id::CallId;
use crate::media::session::ProtocolError;
use crate::media::{Encoding, MediaFormat};
use crate::packet::{DEFAULT_MAX_DATA_BYTES, Packet};

pub use crate::media::twilio::WsFrame;

/// The `conversationId` of a connection probe.
pub const PROBE_CONVERSATION_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The largest text message accepted (the reference implementation's limit).
pub const MAX_TEXT_BYTES: usize = 65_535;

/// Bounds a session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The largest binary frame accepted, in bytes. Default [`DEFAULT_MAX_DATA_BYTES`].
    pub max_frame_bytes: usize,
    /// The furthest audio position accepted (open position, discarded spans and audio
    /// together), in seconds: a bound on the silence a client can make the recording
    /// hold. Default 4 hours.
    pub max_position: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self { max_frame_bytes: DEFAULT_MAX_DATA_BYTES, max_position: 4 * 3600 }
    }
}

/// A client's participant, as `open` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Participant {
    /// Genesys's participant id.
    pub id: String,
    /// The caller's number.
    pub ani: String,
    /// The caller's name.
    pub ani_name: String,
    /// The dialled number.
    pub dnis: String,
}

/// One media offer of `open` (and the one `opened` chose).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaOffer {
    /// `audio`.
    #[serde(rename = "type", default = "audio")]
    pub kind: String,
    /// `PCMU` or `L16`.
    pub format: String,
    /// `external` (the customer) and/or `internal` (the agent), in frame order.
    pub channels: Vec<String>,
    /// Samples per second.
    pub rate: u64,
}

fn audio() -> String {
    "audio".to_owned()
}

impl MediaOffer {
    fn to_json(&self) -> Value {
        json!({"type": self.kind, "format": self.format, "channels": self.channels, "rate": self.rate})
    }

    /// The pbx media format, or `None` if pbx cannot take this offer.
    pub fn media_format(&self) -> Option<MediaFormat> {
        if self.kind != "audio" {
            return None;
        }
        let encoding = match self.format.as_str() {
            "PCMU" => Encoding::Mulaw,
            "L16" => Encoding::L16,
            _ => return None,
        };
        let known = |c: &String| c == "external" || c == "internal";
        let ok = match &self.channels[..] {
            [a] => known(a),
            [a, b] => known(a) && known(b) && a != b,
            _ => false,
        };
        if !ok {
            return None;
        }
        MediaFormat::new(encoding, self.rate, self.channels.len() as u64).ok()
    }

    /// Lower is better: PCMU before L16, stereo before mono, 8000 Hz, external first.
    fn rank(&self) -> (u8, u8, bool, bool) {
        (
            u8::from(self.format != "PCMU"),
            u8::from(self.channels.len() != 2),
            self.rate != 8000,
            self.channels.first().map(String::as_str) != Some("external"),
        )
    }
}

/// Picks the offer pbx takes (see the module docs), if any.
pub fn choose_media(offers: &[MediaOffer]) -> Option<(&MediaOffer, MediaFormat)> {
    offers
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.media_format().map(|f| (o.rank(), i, o, f)))
        .min_by_key(|(rank, i, ..)| (*rank, *i))
        .map(|(_, _, o, f)| (o, f))
}

/// What an AudioHook stream says about itself in `open`.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioHookMetadata {
    /// The AudioHook session id (the call id).
    pub session_id: String,
    /// The Genesys organization.
    pub organization_id: String,
    /// The Genesys conversation (the interaction this session belongs to).
    pub conversation_id: String,
    /// The participant whose audio this is.
    pub participant: Participant,
    /// The conversation's language (`en-US`), if given (and as later `update`d).
    pub language: Option<String>,
    /// The media chosen from the offers.
    pub media: MediaOffer,
    /// The `customConfig` object, as JSON text, if given.
    pub custom_config: Option<String>,
    /// The ids of the sessions this one continues (`continuedSessions`), if any.
    pub continued_sessions: Vec<String>,
    /// The audio position `open` started at (non-zero for a reconnect), in seconds.
    pub start_position: f64,
}

/// Why the server sends `disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The server is done with the session.
    Completed,
    /// The client is not authorized (a header organization id that differs from
    /// `open`'s, a failed signature).
    Unauthorized,
    /// The client broke the protocol, or the server failed.
    Error,
}

impl DisconnectReason {
    /// `completed`, `unauthorized` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Completed => "completed",
            DisconnectReason::Unauthorized => "unauthorized",
            DisconnectReason::Error => "error",
        }
    }
}

/// A message for the client: send [`text`](Self::text) as one WebSocket text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    kind: &'static str,
    seq: u64,
    text: String,
}

impl ServerMessage {
    /// The message type (`opened`, `pong`, `closed`, `disconnect`...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Its `seq`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The JSON text, owned.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// Something the client reported that changes nothing the driver must do but log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AudioHookEvent {
    /// `paused`: the client stopped sending audio.
    Paused {
        /// The client's position, seconds.
        position: f64,
    },
    /// `resumed`: audio goes on; the paused span becomes silence.
    Resumed {
        /// Where audio resumes (client position), seconds.
        start: f64,
        /// The paused span, seconds.
        discarded: f64,
    },
    /// `discarded`: the client dropped this much audio (it becomes silence).
    Discarded {
        /// Where the loss began, seconds.
        start: f64,
        /// How much, seconds.
        discarded: f64,
    },
    /// `update` changed the language.
    LanguageChanged {
        /// The new language.
        language: String,
    },
    /// `error`: the client reported an error; the stream goes on.
    ClientError {
        /// Its code (HTTP-like: 400, 408, 409, 413, 415, 429, 500, 503).
        code: i64,
        /// Its message.
        message: String,
    },
    /// `ping`, with the round-trip time the client measured last, if any.
    Ping {
        /// Seconds.
        rtt: Option<f64>,
    },
    /// `close` arrived with this reason (`end`, `error`, `disconnect`, `reconnect`).
    Closing {
        /// The reason.
        reason: String,
    },
    /// A connection probe opened (no call is created).
    Probe,
    /// The header organization id differs from `open`'s: refused with `disconnect`.
    OrganizationMismatch {
        /// The header's.
        header: String,
        /// `open`'s.
        open: String,
    },
}

/// Frames of silence for a span the client did not send (paused or discarded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceSpan {
    first_slot: u64,
    count: u64,
    frame: Bytes,
    samples_per_frame: u64,
    rate: u64,
}

impl SilenceSpan {
    /// The sequence of the first silent frame.
    pub fn first_sequence(&self) -> u64 {
        self.first_slot + 1
    }

    /// Frames of silence.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// `true` if the span holds no frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The packets, one per frame, sharing one buffer.
    pub fn packets(&self) -> impl Iterator<Item = Packet> + '_ {
        (self.first_slot..self.first_slot + self.count).filter_map(move |slot| {
            let sequence = i64::try_from(slot + 1).ok()?;
            let timestamp = (slot * self.samples_per_frame) as f64 / self.rate as f64;
            Packet::new(sequence, crate::packet::Payload::Audio(self.frame.clone()), timestamp).ok()
        })
    }
}

/// One thing the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AudioHookAction {
    /// Declare the call and its media format (creating it if new; a reconnect opens an
    /// existing call). Comes before any [`Store`](Self::Store), once per session.
    Open {
        /// The call (the session id).
        call_id: CallId,
        /// Its media format.
        format: MediaFormat,
        /// What `open` said.
        metadata: Box<AudioHookMetadata>,
    },
    /// Store these packets of the opened call.
    Store(Vec<Packet>),
    /// Store these frames of silence (a paused or discarded span, whole frames only),
    /// in order, after the packets before it. Generated lazily: a long pause is one
    /// action, not millions of packets in memory.
    Silence(SilenceSpan),
    /// Send this message to the client.
    Send(ServerMessage),
    /// Log this.
    Event(AudioHookEvent),
    /// The stream ended normally (`close`): complete the call, once every stored frame
    /// is durable. Comes before the `closed` message.
    HangUp,
    /// Close the socket; the session takes no more input.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingOpen,
    Open,
    /// `disconnect` `unauthorized` was sent: wait for the client's `close`.
    Refused,
    Ended,
}

#[derive(Debug, Clone)]
struct Media {
    /// Bytes per sample, all channels.
    unit: usize,
    rate: u64,
    silence: u8,
}

/// An AudioHook server session: WebSocket frames in, [`AudioHookAction`]s out.
///
/// ```
/// use pbx_core::media::audiohook::{AudioHookAction, AudioHookSession, WsFrame};
///
/// let mut session = AudioHookSession::new(None);
/// let open = r#"{"version":"2","type":"open","seq":1,"serverseq":0,"id":"e160e428-53e2-487c-977d-96989bf5c99d",
///   "position":"PT0S","parameters":{"organizationId":"d7934305-0972-4844-938e-9060eef73d05",
///   "conversationId":"090eaa2f-72fa-480a-83e0-8667ff89c0ec",
///   "participant":{"id":"p","ani":"+1-555-555-1234","aniName":"John Doe","dnis":"+1-800-555-6789"},
///   "media":[{"type":"audio","format":"PCMU","channels":["external"],"rate":8000}]}}"#;
/// let actions = session.receive(WsFrame::Text(open)).unwrap();
/// assert!(matches!(&actions[0], AudioHookAction::Open { .. }));
/// let AudioHookAction::Send(opened) = &actions[1] else { panic!() };
/// assert_eq!(opened.kind(), "opened");
/// let AudioHookAction::Store(packets) = &session.receive(WsFrame::Binary(&[0xff; 160])).unwrap()[0] else { panic!() };
/// assert_eq!(packets[0].sequence(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct AudioHookSession {
    limits: SessionLimits,
    header_organization_id: Option<String>,
    state: State,
    /// The server's last `seq`.
    seq: u64,
    /// The client's last `seq`.
    clientseq: u64,
    /// The last `serverseq` the client reported.
    serverseq: u64,
    session_id: Option<String>,
    call_id: Option<CallId>,
    probe: bool,
    media: Option<Media>,
    /// Samples (per channel) before the next audio sample.
    timeline: u64,
    samples_per_frame: Option<u64>,
    /// A partly covered frame slot: (slot, bytes so far, starting at the slot's start).
    pending: Option<(u64, Vec<u8>)>,
    paused: bool,
    /// The client's last reported position, seconds.
    position: f64,
    frames: u64,
}

impl AudioHookSession {
    /// A session awaiting `open`. `header_organization_id` is the upgrade request's
    /// `Audiohook-Organization-Id`: when given, `open` must name the same organization,
    /// else the session answers `disconnect` `unauthorized` and creates no call.
    pub fn new(header_organization_id: Option<String>) -> Self {
        Self {
            limits: SessionLimits::default(),
            header_organization_id,
            state: State::AwaitingOpen,
            seq: 0,
            clientseq: 0,
            serverseq: 0,
            session_id: None,
            call_id: None,
            probe: false,
            media: None,
            timeline: 0,
            samples_per_frame: None,
            pending: None,
            paused: false,
            position: 0.0,
            frames: 0,
        }
    }

    /// The same session with other limits.
    pub fn with_limits(mut self, limits: SessionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// The call, once `open` arrived (never for a probe).
    pub fn call_id(&self) -> Option<&CallId> {
        self.call_id.as_ref()
    }

    /// The session id, once `open` arrived.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// `true` for a connection probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// `true` while the client says it paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// `true` after `close` or a refused frame: the session takes no more input.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Binary audio frames accepted so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Samples per frame, once the first binary frame arrived.
    pub fn samples_per_frame(&self) -> Option<u64> {
        self.samples_per_frame
    }

    /// The server's last `seq`.
    pub fn server_seq(&self) -> u64 {
        self.seq
    }

    /// The client's last `seq`.
    pub fn client_seq(&self) -> u64 {
        self.clientseq
    }

    /// The last `position` the client reported, seconds.
    pub fn client_position(&self) -> f64 {
        self.position
    }

    /// Takes one frame. On error the session is ended: send
    /// [`disconnect`](Self::disconnect) with [`DisconnectReason::Error`] and close.
    pub fn receive(&mut self, frame: WsFrame<'_>) -> Result<Vec<AudioHookAction>, ProtocolError> {
        let result = match frame {
            WsFrame::Text(text) => self.text(text),
            WsFrame::Binary(bytes) => self.binary(bytes),
        };
        if result.is_err() {
            self.state = State::Ended;
            self.pending = None;
        }
        result
    }

    /// The partly filled last frame, if any, as a packet (padded with silence). Call
    /// when the socket dropped without `close`, before giving up on the stream.
    pub fn flush(&mut self) -> Vec<AudioHookAction> {
        match self.take_pending() {
            Some(p) => vec![AudioHookAction::Store(vec![p])],
            None => Vec::new(),
        }
    }

    /// A `disconnect` message (the client answers with a `close` transaction). The
    /// session keeps taking input (to answer that `close`) unless it already ended.
    pub fn disconnect(&mut self, reason: DisconnectReason, info: &str) -> ServerMessage {
        let mut params = json!({"reason": reason.as_str()});
        if !info.is_empty() {
            params["info"] = Value::String(truncate(info, 1000));
        }
        if reason == DisconnectReason::Unauthorized && self.state != State::Ended {
            self.state = State::Refused;
        }
        self.message("disconnect", params)
    }

    /// A `pause` message: asks the client to pause (it answers `paused`).
    pub fn request_pause(&mut self) -> ServerMessage {
        self.message("pause", json!({}))
    }

    /// A `resume` message: asks the client to resume (it answers `resumed`).
    pub fn request_resume(&mut self) -> ServerMessage {
        self.message("resume", json!({}))
    }

    fn message(&mut self, kind: &'static str, parameters: Value) -> ServerMessage {
        self.seq += 1;
        let value = json!({
            "version": "2",
            "type": kind,
            "seq": self.seq,
            "clientseq": self.clientseq,
            "id": self.session_id.as_deref().unwrap_or(PROBE_CONVERSATION_ID),
            "parameters": parameters,
        });
        ServerMessage { kind, seq: self.seq, text: value.to_string() }
    }

    fn send(&mut self, kind: &'static str, parameters: Value) -> AudioHookAction {
        AudioHookAction::Send(self.message(kind, parameters))
    }

    fn text(&mut self, text: &str) -> Result<Vec<AudioHookAction>, ProtocolError> {
        if self.state == State::Ended {
            return Err(ProtocolError::AfterEnd);
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(ProtocolError::FrameTooLarge { len: text.len(), limit: MAX_TEXT_BYTES });
        }
        let value: Value = serde_json::from_str(text).map_err(ProtocolError::NotJson)?;
        let envelope =
            Envelope::deserialize(&value).map_err(|source| ProtocolError::Malformed { event: "message", source })?;
        let event =
            event_name(&envelope.kind).ok_or_else(|| ProtocolError::UnknownEvent(truncate(&envelope.kind, 200)))?;
        let invalid = |field: &'static str, reason: String| ProtocolError::InvalidField { event, field, reason };
        if envelope.version != "2" {
            return Err(invalid("version", format!("{:?} is not \"2\"", truncate(&envelope.version, 20))));
        }
        if envelope.seq != self.clientseq + 1 {
            return Err(invalid("seq", format!("{} after {}: must grow by one", envelope.seq, self.clientseq)));
        }
        if envelope.serverseq > self.seq || envelope.serverseq < self.serverseq {
            return Err(invalid(
                "serverseq",
                format!(
                    "{} while the server sent {} and the client saw {}",
                    envelope.serverseq, self.seq, self.serverseq
                ),
            ));
        }
        let position = parse_duration(&envelope.position).ok_or_else(|| {
            invalid("position", format!("{:?} is not an ISO-8601 duration", truncate(&envelope.position, 40)))
        })?;
        if position > self.limits.max_position as f64 {
            return Err(invalid("position", format!("{position} s is beyond {} s", self.limits.max_position)));
        }
        match &self.session_id {
            Some(id) if *id != envelope.id => {
                return Err(invalid("id", format!("{:?} is not this session's {id:?}", truncate(&envelope.id, 60))));
            }
            _ => {}
        }
        self.clientseq = envelope.seq;
        self.serverseq = envelope.serverseq;
        self.position = position;
        let params = envelope.parameters;
        let malformed = |source| ProtocolError::Malformed { event, source };

        if self.state == State::Refused {
            // Unauthorized: only the client's close transaction is answered.
            return Ok(match event {
                "close" => self.close(params).map_err(malformed)?,
                _ => Vec::new(),
            });
        }
        match event {
            "open" => self.open(envelope.id, position, params),
            "close" => self.close(params).map_err(malformed),
            _ if self.state == State::AwaitingOpen => Err(ProtocolError::BeforeStart { event }),
            "ping" => {
                let p = PingParams::deserialize(&params).map_err(malformed)?;
                let rtt = match p.rtt {
                    Some(r) => {
                        Some(parse_duration(&r).ok_or_else(|| invalid("rtt", "not an ISO-8601 duration".into()))?)
                    }
                    None => None,
                };
                Ok(vec![AudioHookAction::Event(AudioHookEvent::Ping { rtt }), self.send("pong", json!({}))])
            }
            "update" => {
                let p = UpdateParams::deserialize(&params).map_err(malformed)?;
                let mut out = Vec::new();
                if let Some(language) = p.language {
                    out.push(AudioHookAction::Event(AudioHookEvent::LanguageChanged { language }));
                }
                out.push(self.send("updated", json!({})));
                Ok(out)
            }
            "paused" => {
                self.paused = true;
                Ok(vec![AudioHookAction::Event(AudioHookEvent::Paused { position })])
            }
            "resumed" | "discarded" => {
                let p = SpanParams::deserialize(&params).map_err(malformed)?;
                let start =
                    parse_duration(&p.start).ok_or_else(|| invalid("start", "not an ISO-8601 duration".into()))?;
                let discarded = parse_duration(&p.discarded)
                    .ok_or_else(|| invalid("discarded", "not an ISO-8601 duration".into()))?;
                let mut out = Vec::new();
                if let Some(media) = self.media.clone() {
                    let skip = (discarded * media.rate as f64).round() as u64;
                    let max = self.limits.max_position.saturating_mul(media.rate);
                    let to = self.timeline.saturating_add(skip);
                    if to > max {
                        return Err(invalid(
                            "discarded",
                            format!("the span ends beyond {} s", self.limits.max_position),
                        ));
                    }
                    let from = self.timeline;
                    self.timeline = to;
                    if let (Some(spf), Some((slot, _))) = (self.samples_per_frame, &self.pending)
                        && to / spf != *slot
                    {
                        out.extend(self.flush());
                    }
                    if let Some(spf) = self.samples_per_frame {
                        // Whole slots inside the span: silence packets.
                        let first = from.div_ceil(spf);
                        let end = to / spf;
                        if end > first {
                            let frame = Bytes::from(vec![media.silence; spf as usize * media.unit]);
                            out.push(AudioHookAction::Silence(SilenceSpan {
                                first_slot: first,
                                count: end - first,
                                frame,
                                samples_per_frame: spf,
                                rate: media.rate,
                            }));
                        }
                    }
                }
                let e = if event == "resumed" {
                    self.paused = false;
                    AudioHookEvent::Resumed { start, discarded }
                } else {
                    AudioHookEvent::Discarded { start, discarded }
                };
                out.push(AudioHookAction::Event(e));
                Ok(out)
            }
            "error" => {
                let p = ErrorParams::deserialize(&params).map_err(malformed)?;
                Ok(vec![AudioHookAction::Event(AudioHookEvent::ClientError {
                    code: p.code,
                    message: truncate(&p.message, 1000),
                })])
            }
            _ => Err(ProtocolError::UnknownEvent(event.to_owned())),
        }
    }

    fn open(&mut self, id: String, position: f64, params: Value) -> Result<Vec<AudioHookAction>, ProtocolError> {
        if self.state != State::AwaitingOpen {
            return Err(ProtocolError::AlreadyStarted);
        }
        let p =
            OpenParams::deserialize(&params).map_err(|source| ProtocolError::Malformed { event: "open", source })?;
        let call_id = CallId::new(id.clone())
            .map_err(|source| ProtocolError::InvalidCallId { id: truncate(&id, 200), source })?;
        self.session_id = Some(id.clone());
        if let Some(header) = &self.header_organization_id
            && *header != p.organization_id
        {
            let event = AudioHookEvent::OrganizationMismatch {
                header: truncate(header, 100),
                open: truncate(&p.organization_id, 100),
            };
            let msg = self.disconnect(
                DisconnectReason::Unauthorized,
                "Mismatch between \"organizationId\" open parameter and \"audiohook-organization-id\" header field",
            );
            return Ok(vec![AudioHookAction::Event(event), AudioHookAction::Send(msg)]);
        }
        let probe = p.conversation_id == PROBE_CONVERSATION_ID;
        let chosen = choose_media(&p.media).map(|(o, f)| (o.clone(), f));
        let mut opened = json!({"media": [], "startPaused": false});
        if let Some((offer, _)) = &chosen {
            opened["media"] = json!([offer.to_json()]);
        }
        if p.supported_languages == Some(true) {
            opened["supportedLanguages"] = json!([]);
        }
        if probe {
            self.probe = true;
            self.state = State::Open;
            return Ok(vec![AudioHookAction::Event(AudioHookEvent::Probe), self.send("opened", opened)]);
        }
        let Some((offer, format)) = chosen else {
            let offered: Vec<String> =
                p.media.iter().take(8).map(|o| format!("{} {:?} {} Hz", o.format, o.channels, o.rate)).collect();
            return Err(ProtocolError::UnsupportedFormat(format!(
                "no media offer pbx can take (PCMU or L16, external/internal channels): {}",
                truncate(&offered.join(", "), 300)
            )));
        };
        let rate = u64::from(format.sample_rate());
        let start = (position * rate as f64).round() as u64;
        self.media = Some(Media {
            unit: format.encoding().bytes_per_sample() * usize::from(format.channels()),
            rate,
            silence: if format.encoding() == Encoding::Mulaw { 0xff } else { 0 },
        });
        self.timeline = start;
        self.state = State::Open;
        self.call_id = Some(call_id.clone());
        let metadata = AudioHookMetadata {
            session_id: id,
            organization_id: p.organization_id,
            conversation_id: p.conversation_id,
            participant: p.participant.unwrap_or_default(),
            language: p.language,
            media: offer,
            custom_config: p.custom_config.map(|c| truncate(&c.to_string(), 4096)),
            continued_sessions: p.continued_sessions.into_iter().filter_map(|s| s.id).collect(),
            start_position: position,
        };
        Ok(vec![AudioHookAction::Open { call_id, format, metadata: Box::new(metadata) }, self.send("opened", opened)])
    }

    fn close(&mut self, params: Value) -> Result<Vec<AudioHookAction>, serde_json::Error> {
        let p = CloseParams::deserialize(&params)?;
        let mut out = vec![AudioHookAction::Event(AudioHookEvent::Closing { reason: truncate(&p.reason, 100) })];
        out.extend(self.flush());
        if self.call_id.is_some() && self.state == State::Open {
            out.push(AudioHookAction::HangUp);
        }
        out.push(self.send("closed", json!({})));
        out.push(AudioHookAction::Close);
        self.state = State::Ended;
        Ok(out)
    }

    fn binary(&mut self, bytes: &[u8]) -> Result<Vec<AudioHookAction>, ProtocolError> {
        match self.state {
            State::Ended => return Err(ProtocolError::AfterEnd),
            State::AwaitingOpen => return Err(ProtocolError::BeforeStart { event: "audio" }),
            State::Refused => return Ok(Vec::new()),
            State::Open => {}
        }
        if bytes.len() > self.limits.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge { len: bytes.len(), limit: self.limits.max_frame_bytes });
        }
        if self.probe {
            return Ok(Vec::new());
        }
        let Some(media) = self.media.clone() else { return Ok(Vec::new()) };
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        if !bytes.len().is_multiple_of(media.unit) {
            return Err(ProtocolError::InvalidField {
                event: "audio",
                field: "frame",
                reason: format!("{} bytes is not a whole number of {}-byte samples", bytes.len(), media.unit),
            });
        }
        let samples = (bytes.len() / media.unit) as u64;
        let max = self.limits.max_position.saturating_mul(media.rate);
        if self.timeline.saturating_add(samples) > max {
            return Err(ProtocolError::InvalidField {
                event: "audio",
                field: "frame",
                reason: format!("audio beyond {} s", self.limits.max_position),
            });
        }
        let spf = *self.samples_per_frame.get_or_insert(samples);
        self.frames += 1;
        let frame_bytes = spf as usize * media.unit;
        let mut packets = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let slot = self.timeline / spf;
            let offset = (self.timeline % spf) as usize * media.unit;
            if self.pending.as_ref().is_some_and(|(s, _)| *s != slot) {
                packets.extend(self.take_pending());
            }
            if offset == 0 && self.pending.is_none() && rest.len() >= frame_bytes {
                packets.push(self.packet(slot, Bytes::copy_from_slice(&rest[..frame_bytes]))?);
                rest = &rest[frame_bytes..];
                self.timeline += spf;
                continue;
            }
            let (_, buf) = self.pending.get_or_insert_with(|| (slot, Vec::with_capacity(frame_bytes)));
            if buf.len() < offset {
                buf.resize(offset, media.silence);
            }
            let take = (frame_bytes - offset).min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.timeline += (take / media.unit) as u64;
            if buf.len() >= frame_bytes {
                packets.extend(self.take_pending());
            }
        }
        let packets = packets;
        Ok(if packets.is_empty() { Vec::new() } else { vec![AudioHookAction::Store(packets)] })
    }

    fn packet(&self, slot: u64, data: Bytes) -> Result<Packet, ProtocolError> {
        let spf = self.samples_per_frame.unwrap_or(1);
        let rate = self.media.as_ref().map_or(8000, |m| m.rate);
        let sequence = i64::try_from(slot.saturating_add(1)).unwrap_or(i64::MAX);
        Ok(Packet::new(sequence, crate::packet::Payload::Audio(data), (slot * spf) as f64 / rate as f64)?)
    }

    fn take_pending(&mut self) -> Option<Packet> {
        let (slot, mut buf) = self.pending.take()?;
        let media = self.media.as_ref()?;
        let frame_bytes = self.samples_per_frame? as usize * media.unit;
        buf.resize(frame_bytes, media.silence);
        self.packet(slot, Bytes::from(buf)).ok()
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn event_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "open" => "open",
        "close" => "close",
        "ping" => "ping",
        "update" => "update",
        "paused" => "paused",
        "resumed" => "resumed",
        "discarded" => "discarded",
        "error" => "error",
        _ => return None,
    })
}

/// Parses an ISO-8601 duration as AudioHook uses it (`PT0S`, `PT1.5S`, `PT2M3.25S`,
/// `P1DT2H`) into seconds. `None` for anything else (negative, empty, overflowing).
pub fn parse_duration(s: &str) -> Option<f64> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut total = 0.0f64;
    let mut any = false;
    let mut parse = |part: &str, units: &[(char, f64)], fraction_last_only: bool| -> Option<()> {
        let mut number = String::new();
        let mut idx = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                if number.len() >= 20 {
                    return None;
                }
                number.push(c);
                continue;
            }
            let pos = units[idx..].iter().position(|(u, _)| *u == c)?;
            idx += pos + 1;
            let factor = units[idx - 1].1;
            if number.is_empty() || number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1
            {
                return None;
            }
            if number.contains('.') && fraction_last_only && c != 'S' {
                return None;
            }
            total += number.parse::<f64>().ok()? * factor;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    parse(date, &[('D', 86_400.0)], true)?;
    if let Some(t) = time {
        parse(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)], true)?;
    }
    (any && total.is_finite()).then_some(total)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[derive(Deserialize)]
struct Envelope {
    version: String,
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    serverseq: u64,
    id: String,
    position: String,
    parameters: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenParams {
    organization_id: String,
    conversation_id: String,
    #[serde(default)]
    participant: Option<Participant>,
    media: Vec<MediaOffer>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    supported_languages: Option<bool>,
    #[serde(default)]
    custom_config: Option<Value>,
    #[serde(default)]
    continued_sessions: Vec<ContinuedSession>,
}

#[derive(Deserialize)]
struct ContinuedSession {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct CloseParams {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct PingParams {
    #[serde(default)]
    rtt: Option<String>,
}

#[derive(Deserialize)]
struct UpdateParams {
    #[serde(default)]
    language: Option<String>,
}

#[derive(Deserialize)]
struct SpanParams {
    start: String,
    discarded: String,
}

#[derive(Deserialize)]
struct ErrorParams {
    code: i64,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::ProtocolErrorKind;
    use crate::packet::Payload;
    use proptest::prelude::*;

    const SESSION: &str = "e160e428-53e2-487c-977d-96989bf5c99d";
    const ORG: &str = "d7934305-0972-4844-938e-9060eef73d05";
    const CONV: &str = "090eaa2f-72fa-480a-83e0-8667ff89c0ec";

    const STEREO: &str = r#"{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000}"#;
    const MONO: &str = r#"{"type":"audio","format":"PCMU","channels":["external"],"rate":8000}"#;

    fn msg(kind: &str, seq: u64, serverseq: u64, position: &str, params: &str) -> String {
        format!(
            r#"{{"version":"2","type":"{kind}","seq":{seq},"serverseq":{serverseq},"id":"{SESSION}","position":"{position}","parameters":{params}}}"#
        )
    }

    fn open_msg(conv: &str, media: &str, position: &str) -> String {
        msg(
            "open",
            1,
            0,
            position,
            &format!(
                r#"{{"organizationId":"{ORG}","conversationId":"{conv}","participant":{{"id":"p1","ani":"+1-555-555-1234","aniName":"John Doe","dnis":"+1-800-555-6789"}},"media":[{media}],"language":"en-US"}}"#
            ),
        )
    }

    fn text(s: &mut AudioHookSession, t: &str) -> Result<Vec<AudioHookAction>, ProtocolError> {
        s.receive(WsFrame::Text(t))
    }

    fn opened(media: &str) -> AudioHookSession {
        let mut s = AudioHookSession::new(Some(ORG.to_owned()));
        text(&mut s, &open_msg(CONV, media, "PT0S")).unwrap();
        s
    }

    fn sent(actions: &[AudioHookAction]) -> Vec<Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                AudioHookAction::Send(m) => Some(serde_json::from_str(m.text()).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn stored(actions: &[AudioHookAction]) -> Vec<(u64, Vec<u8>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                AudioHookAction::Store(p) => Some(p.clone()),
                _ => None,
            })
            .flatten()
            .map(|p| {
                let Payload::Audio(b) = p.data() else { panic!() };
                (p.sequence(), b.to_vec())
            })
            .collect()
    }

    #[test]
    fn open_chooses_stereo_pcmu_and_answers_opened() {
        let mut s = AudioHookSession::new(Some(ORG.to_owned()));
        let l16 = r#"{"type":"audio","format":"L16","channels":["external","internal"],"rate":8000}"#;
        let actions = text(&mut s, &open_msg(CONV, &format!("{MONO},{l16},{STEREO}"), "PT0S")).unwrap();
        let AudioHookAction::Open { call_id, format, metadata } = &actions[0] else { panic!("{actions:?}") };
        assert_eq!(call_id.as_str(), SESSION);
        assert_eq!(*format, MediaFormat::new(Encoding::Mulaw, 8000, 2).unwrap());
        assert_eq!(metadata.conversation_id, CONV);
        assert_eq!(metadata.organization_id, ORG);
        assert_eq!(metadata.participant.ani, "+1-555-555-1234");
        assert_eq!(metadata.participant.ani_name, "John Doe");
        assert_eq!(metadata.participant.dnis, "+1-800-555-6789");
        assert_eq!(metadata.language.as_deref(), Some("en-US"));
        let out = sent(&actions);
        assert_eq!(out[0]["type"], "opened");
        assert_eq!(out[0]["seq"], 1);
        assert_eq!(out[0]["clientseq"], 1);
        assert_eq!(out[0]["id"], SESSION);
        assert_eq!(out[0]["parameters"]["media"], serde_json::from_str::<Value>(&format!("[{STEREO}]")).unwrap());
    }

    #[test]
    fn media_preference() {
        let offer = |f: &str, ch: &[&str], rate: u64| MediaOffer {
            kind: "audio".into(),
            format: f.into(),
            channels: ch.iter().map(|c| c.to_string()).collect(),
            rate,
        };
        let offers = vec![
            offer("L16", &["external"], 8000),
            offer("PCMU", &["internal"], 8000),
            offer("PCMU", &["external"], 8000),
            offer("opus", &["external", "internal"], 8000),
        ];
        assert_eq!(choose_media(&offers).unwrap().0, &offers[2]);
        assert_eq!(choose_media(&offers[..1]).unwrap().0, &offers[0]);
        assert!(choose_media(&offers[3..]).is_none());
        assert!(choose_media(&[offer("PCMU", &["external", "external"], 8000)]).is_none());
        assert!(choose_media(&[offer("PCMU", &["external"], 7000)]).is_none());
    }

    #[test]
    fn frames_get_sequences_from_their_position() {
        let mut s = opened(MONO);
        let a = s.receive(WsFrame::Binary(&[1; 160])).unwrap();
        let b = s.receive(WsFrame::Binary(&[2; 160])).unwrap();
        assert_eq!(stored(&a), vec![(1, vec![1; 160])]);
        assert_eq!(stored(&b), vec![(2, vec![2; 160])]);
        let AudioHookAction::Store(p) = &b[0] else { panic!() };
        assert_eq!(p[0].timestamp(), 0.02);
        assert_eq!(s.samples_per_frame(), Some(160));
    }

    #[test]
    fn stereo_frames_hold_both_channels() {
        let mut s = opened(STEREO);
        assert_eq!(stored(&s.receive(WsFrame::Binary(&[7; 320])).unwrap()), vec![(1, vec![7; 320])]);
        let err = s.receive(WsFrame::Binary(&[7; 321])).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidField { field: "frame", .. }), "{err}");
    }

    #[test]
    fn a_reconnect_continues_the_sequence_space_and_resends_are_duplicates() {
        let mut first = opened(MONO);
        for _ in 0..3 {
            first.receive(WsFrame::Binary(&[1; 160])).unwrap();
        }
        // New socket, same session id, continuing at 40 ms (frame 3 is resent).
        let mut second = AudioHookSession::new(None);
        let actions = text(&mut second, &open_msg(CONV, MONO, "PT0.04S")).unwrap();
        assert!(matches!(&actions[0], AudioHookAction::Open { call_id, .. } if call_id.as_str() == SESSION));
        assert_eq!(stored(&second.receive(WsFrame::Binary(&[1; 160])).unwrap()), vec![(3, vec![1; 160])]);
        assert_eq!(stored(&second.receive(WsFrame::Binary(&[1; 160])).unwrap()), vec![(4, vec![1; 160])]);
    }

    #[test]
    fn odd_sized_frames_are_cut_at_frame_boundaries() {
        let mut s = opened(MONO);
        assert_eq!(stored(&s.receive(WsFrame::Binary(&[1; 160])).unwrap()).len(), 1);
        // 100 + 100 + 120 samples: slot 2 = 100+60, slot 3 = 40+120.
        assert!(stored(&s.receive(WsFrame::Binary(&[2; 100])).unwrap()).is_empty());
        let b = stored(&s.receive(WsFrame::Binary(&[3; 100])).unwrap());
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, 2);
        assert_eq!(&b[0].1[..100], &[2; 100][..]);
        assert_eq!(&b[0].1[100..], &[3; 60][..]);
        let c = stored(&s.receive(WsFrame::Binary(&[4; 120])).unwrap());
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].0, c[0].1.len()), (3, 160));
        assert_eq!(&c[0].1[..40], &[3; 40][..]);
        // A trailing partial frame is flushed on close, padded with silence.
        s.receive(WsFrame::Binary(&[5; 10])).unwrap();
        let close = text(&mut s, &msg("close", 2, 1, "PT0.5S", r#"{"reason":"end"}"#)).unwrap();
        let last = stored(&close);
        assert_eq!(last[0].0, 4);
        assert_eq!(&last[0].1[..10], &[5; 10][..]);
        assert_eq!(&last[0].1[10..], &[0xff; 150][..]);
    }

    #[test]
    fn paused_spans_become_silence_not_gaps() {
        let mut s = opened(MONO);
        s.receive(WsFrame::Binary(&[1; 160])).unwrap();
        let p = text(&mut s, &msg("paused", 2, 1, "PT0.02S", "{}")).unwrap();
        assert!(matches!(p[..], [AudioHookAction::Event(AudioHookEvent::Paused { .. })]));
        assert!(s.is_paused());
        let r = text(&mut s, &msg("resumed", 3, 1, "PT0.02S", r#"{"start":"PT0.02S","discarded":"PT0.04S"}"#)).unwrap();
        assert!(!s.is_paused());
        assert!(matches!(r.last(), Some(AudioHookAction::Event(AudioHookEvent::Resumed { .. }))));
        // Slots 2 and 3 are the pause, stored as silence; audio goes on at 4.
        let AudioHookAction::Silence(span) = &r[0] else { panic!("{r:?}") };
        let silent: Vec<(u64, usize)> = span.packets().map(|p| (p.sequence(), p.data().len())).collect();
        assert_eq!(silent, [(2, 160), (3, 160)]);
        assert_eq!(stored(&s.receive(WsFrame::Binary(&[2; 160])).unwrap())[0].0, 4);
        let d =
            text(&mut s, &msg("discarded", 4, 1, "PT0.06S", r#"{"start":"PT0.06S","discarded":"PT0.02S"}"#)).unwrap();
        assert!(matches!(&d[0], AudioHookAction::Silence(span) if span.first_sequence() == 5 && span.len() == 1));
        assert_eq!(stored(&s.receive(WsFrame::Binary(&[3; 160])).unwrap())[0].0, 6);
    }

    #[test]
    fn ping_update_error_and_close() {
        let mut s = opened(MONO);
        let pong = sent(&text(&mut s, &msg("ping", 2, 1, "PT0S", r#"{"rtt":"PT0.012S"}"#)).unwrap());
        assert_eq!(
            (pong[0]["type"].as_str(), pong[0]["seq"].as_u64(), pong[0]["clientseq"].as_u64()),
            (Some("pong"), Some(2), Some(2))
        );
        let up = text(&mut s, &msg("update", 3, 2, "PT0S", r#"{"language":"fr-FR"}"#)).unwrap();
        assert!(
            matches!(&up[0], AudioHookAction::Event(AudioHookEvent::LanguageChanged { language }) if language == "fr-FR")
        );
        assert_eq!(sent(&up)[0]["type"], "updated");
        let e = text(&mut s, &msg("error", 4, 3, "PT0S", r#"{"code":500,"message":"oops"}"#)).unwrap();
        assert!(matches!(&e[0], AudioHookAction::Event(AudioHookEvent::ClientError { code: 500, .. })));
        let close = text(&mut s, &msg("close", 5, 3, "PT0S", r#"{"reason":"end"}"#)).unwrap();
        let kinds: Vec<&str> = close
            .iter()
            .map(|a| match a {
                AudioHookAction::HangUp => "hangup",
                AudioHookAction::Send(m) => m.kind(),
                AudioHookAction::Close => "close",
                AudioHookAction::Event(_) => "event",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["event", "hangup", "closed", "close"]);
        assert!(s.is_ended());
        assert!(matches!(s.receive(WsFrame::Binary(&[1; 160])), Err(ProtocolError::AfterEnd)));
    }

    #[test]
    fn a_probe_creates_no_call() {
        let mut s = AudioHookSession::new(Some(ORG.to_owned()));
        let actions = text(&mut s, &open_msg(PROBE_CONVERSATION_ID, MONO, "PT0S")).unwrap();
        assert!(!actions.iter().any(|a| matches!(a, AudioHookAction::Open { .. })));
        assert_eq!(sent(&actions)[0]["type"], "opened");
        assert!(s.receive(WsFrame::Binary(&[1; 160])).unwrap().is_empty());
        let close = text(&mut s, &msg("close", 2, 1, "PT0S", r#"{"reason":"end"}"#)).unwrap();
        assert!(!close.iter().any(|a| matches!(a, AudioHookAction::HangUp | AudioHookAction::Store(_))));
        assert_eq!(sent(&close)[0]["type"], "closed");
        assert!(s.call_id().is_none());
    }

    #[test]
    fn another_organization_is_disconnected_as_unauthorized() {
        let mut s = AudioHookSession::new(Some("11111111-1111-1111-1111-111111111111".into()));
        let actions = text(&mut s, &open_msg(CONV, MONO, "PT0S")).unwrap();
        assert!(!actions.iter().any(|a| matches!(a, AudioHookAction::Open { .. })));
        let out = sent(&actions);
        assert_eq!(
            (out[0]["type"].as_str(), out[0]["parameters"]["reason"].as_str()),
            (Some("disconnect"), Some("unauthorized"))
        );
        assert!(s.receive(WsFrame::Binary(&[1; 160])).unwrap().is_empty());
        let close = text(&mut s, &msg("close", 2, 1, "PT0S", r#"{"reason":"disconnect"}"#)).unwrap();
        assert!(!close.iter().any(|a| matches!(a, AudioHookAction::HangUp)));
        assert_eq!(sent(&close)[0]["type"], "closed");
    }

    fn refused(s: &mut AudioHookSession, frame: WsFrame<'_>) -> ProtocolError {
        let err = s.receive(frame).unwrap_err();
        assert!(s.is_ended());
        err
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let mut s = AudioHookSession::new(None);
        assert!(matches!(refused(&mut s, WsFrame::Binary(&[1; 160])), ProtocolError::BeforeStart { event: "audio" }));
        let mut s = AudioHookSession::new(None);
        assert!(matches!(refused(&mut s, WsFrame::Text("not json")), ProtocolError::NotJson(_)));
        let mut s = AudioHookSession::new(None);
        assert!(matches!(refused(&mut s, WsFrame::Text(r#"{"type":"open"}"#)), ProtocolError::Malformed { .. }));
        let mut s = AudioHookSession::new(None);
        let e = refused(&mut s, WsFrame::Text(&msg("ping", 1, 0, "PT0S", "{}")));
        assert!(matches!(e, ProtocolError::BeforeStart { event: "ping" }));
        let mut s = AudioHookSession::new(None);
        let e = refused(&mut s, WsFrame::Text(&msg("pause", 1, 0, "PT0S", "{}")));
        assert!(matches!(e, ProtocolError::UnknownEvent(_)));
        let mut s = opened(MONO);
        assert!(matches!(
            refused(&mut s, WsFrame::Text(&open_msg(CONV, MONO, "PT0S"))),
            ProtocolError::InvalidField { field: "seq", .. }
        ));
        let mut s = opened(MONO);
        let again = open_msg(CONV, MONO, "PT0S").replace(r#""seq":1"#, r#""seq":2"#);
        assert!(matches!(refused(&mut s, WsFrame::Text(&again)), ProtocolError::AlreadyStarted));
        let mut s = opened(MONO);
        assert!(matches!(
            refused(&mut s, WsFrame::Text(&msg("ping", 2, 5, "PT0S", "{}"))),
            ProtocolError::InvalidField { field: "serverseq", .. }
        ));
        let mut s = opened(MONO);
        assert!(matches!(
            refused(&mut s, WsFrame::Text(&msg("ping", 2, 1, "1.5", "{}"))),
            ProtocolError::InvalidField { field: "position", .. }
        ));
        let mut s = opened(MONO);
        let other = msg("ping", 2, 1, "PT0S", "{}").replace(SESSION, "x");
        assert!(matches!(refused(&mut s, WsFrame::Text(&other)), ProtocolError::InvalidField { field: "id", .. }));
        let mut s = opened(MONO);
        let e = refused(&mut s, WsFrame::Binary(&vec![0; DEFAULT_MAX_DATA_BYTES + 1]));
        assert_eq!(e.kind(), ProtocolErrorKind::TooLarge);
        let mut s = opened(MONO);
        let e = refused(&mut s, WsFrame::Text(&"x".repeat(MAX_TEXT_BYTES + 1)));
        assert_eq!(e.kind(), ProtocolErrorKind::TooLarge);
        let mut s = AudioHookSession::new(None);
        let opus = r#"{"type":"audio","format":"opus","channels":["external"],"rate":8000}"#;
        assert_eq!(
            refused(&mut s, WsFrame::Text(&open_msg(CONV, opus, "PT0S"))).kind(),
            ProtocolErrorKind::Unsupported
        );
        let mut s = opened(MONO);
        let far = msg("discarded", 2, 1, "PT0S", r#"{"start":"PT0S","discarded":"PT100000S"}"#);
        assert!(matches!(refused(&mut s, WsFrame::Text(&far)), ProtocolError::InvalidField { field: "discarded", .. }));
    }

    #[test]
    fn disconnect_counts_in_the_server_seq() {
        let mut s = opened(MONO);
        let d = s.disconnect(DisconnectReason::Error, "bad");
        let v: Value = serde_json::from_str(d.text()).unwrap();
        assert_eq!(
            (v["seq"].as_u64(), v["parameters"]["reason"].as_str(), v["parameters"]["info"].as_str()),
            (Some(2), Some("error"), Some("bad"))
        );
        assert_eq!(s.request_pause().kind(), "pause");
        assert_eq!(s.request_resume().seq(), 4);
    }

    #[test]
    fn durations() {
        let check = |s: &str, want: Option<f64>| assert_eq!(parse_duration(s), want, "{s}");
        check("PT0S", Some(0.0));
        check("PT1.5S", Some(1.5));
        check("PT2M3.25S", Some(123.25));
        check("PT1H", Some(3600.0));
        check("P1DT1S", Some(86_401.0));
        check("P1D", Some(86_400.0));
        for bad in [
            "", "P", "PT", "T1S", "PT1", "PT-1S", "PT1.S", "PT.5S", "PT1.5M", "PTS", "PT1S1M", "PT1..2S", "1S", "PT1SX",
        ] {
            check(bad, None);
        }
    }

    fn arb_frame() -> impl Strategy<Value = (bool, Vec<u8>)> {
        let kinds = prop::sample::select(vec![
            "open",
            "close",
            "ping",
            "update",
            "paused",
            "resumed",
            "discarded",
            "error",
            "pause",
            "x",
        ]);
        let positions = prop::sample::select(vec!["PT0S", "PT0.02S", "PT1.5S", "PT99999S", "bad", "PT1H"]);
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400).prop_map(|b| (false, b)),
            ".{0,40}".prop_map(|t| (true, t.into_bytes())),
            (kinds, 0u64..6, 0u64..4, positions, 0usize..6).prop_map(|(k, seq, sseq, pos, p)| {
                let params = [
                    "{}".to_owned(),
                    format!(r#"{{"organizationId":"{ORG}","conversationId":"{CONV}","media":[{MONO}]}}"#),
                    format!(
                        r#"{{"organizationId":"{ORG}","conversationId":"{PROBE_CONVERSATION_ID}","media":[{STEREO}]}}"#
                    ),
                    r#"{"start":"PT0S","discarded":"PT0.5S"}"#.to_owned(),
                    r#"{"code":"x","message":1}"#.to_owned(),
                    r#"{"reason":"end","rtt":"PT0.1S","language":"de"}"#.to_owned(),
                ];
                (true, msg(k, seq, sseq, pos, &params[p]).into_bytes())
            }),
        ]
    }

    proptest! {
        #[test]
        fn no_input_sequence_panics(frames in proptest::collection::vec(arb_frame(), 0..30), header in any::<bool>()) {
            let mut s = AudioHookSession::new(header.then(|| ORG.to_owned()));
            for (is_text, bytes) in &frames {
                let result = if *is_text {
                    match std::str::from_utf8(bytes) { Ok(t) => s.receive(WsFrame::Text(t)), Err(_) => continue }
                } else {
                    s.receive(WsFrame::Binary(bytes))
                };
                if let Ok(actions) = result {
                    for a in actions {
                        if let AudioHookAction::Store(p) = a {
                            for p in p { prop_assert_eq!(p.data().len() % 160, 0); }
                        }
                    }
                }
                let _ = s.flush();
            }
            let _ = s.disconnect(DisconnectReason::Error, "x");
        }

        #[test]
        fn any_frame_sizes_store_each_sample_once_in_order(sizes in proptest::collection::vec(1usize..500, 1..30)) {
            let mut s = opened(MONO);
            let mut sent_bytes = Vec::new();
            let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let frame: Vec<u8> = (0..*n).map(|j| ((i * 7 + j) % 250) as u8).collect();
                sent_bytes.extend_from_slice(&frame);
                got.extend(stored(&s.receive(WsFrame::Binary(&frame)).unwrap()));
            }
            got.extend(stored(&s.flush()));
            let spf = sizes[0];
            for (k, (seq, data)) in got.iter().enumerate() {
                prop_assert_eq!(*seq, k as u64 + 1);
                prop_assert_eq!(data.len(), spf);
            }
            let joined: Vec<u8> = got.into_iter().flat_map(|(_, d)| d).collect();
            prop_assert_eq!(&joined[..sent_bytes.len()], &sent_bytes[..]);
            prop_assert!(joined[sent_bytes.len()..].iter().all(|b| *b == 0xff));
        }
    }
}
