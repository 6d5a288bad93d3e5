//! What a streaming-protocol session asks its driver to do, and why it refused input.
//!
//! Each protocol ([`twilio`](super::twilio), [`audiosocket`](super::audiosocket)) is a
//! state machine without I/O, clocks or tasks (CONVENTIONS section 8, like quinn-proto):
//! the driver hands it what arrived on the wire (`session.receive(..)`) and carries out
//! the [`Action`]s it answers, in order. A [`ProtocolError`] ends the session: the driver
//! closes that one stream with the error as its reason.
//!
//! A driver typically maps the actions onto the [`Gateway`](crate::gateway::Gateway):
//! [`Action::Open`] -> `open(call_id, format)`, [`Action::Store`] ->
//! `ingest_batch(..)` (the frames count once durable), [`Action::HangUp`] ->
//! `complete(call_id)`.

use std::fmt;

use crate::id::{CallId, InvalidCallId};
use crate::media::{MediaFormat, MediaFormatError};
use crate::packet::{Packet, PacketError};

/// The protocol a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Twilio Media Streams (JSON over WebSocket).
    Twilio,
    /// Telnyx media streaming (Twilio's shape with snake_case names).
    Telnyx,
    /// Asterisk AudioSocket (TCP framing).
    AudioSocket,
}

impl Protocol {
    /// `twilio`, `telnyx` or `audiosocket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Twilio => "twilio",
            Protocol::Telnyx => "telnyx",
            Protocol::AudioSocket => "audiosocket",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audio track of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// What the caller says (Twilio/Telnyx `inbound`; all of AudioSocket).
    Inbound,
    /// What the caller hears (Twilio/Telnyx `outbound`).
    Outbound,
}

impl Track {
    /// `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }
}

/// What a stream says about itself when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMetadata {
    /// The protocol.
    pub protocol: Protocol,
    /// The vendor's id of this stream (Twilio `streamSid`, Telnyx `stream_id`), if any.
    pub stream_id: Option<String>,
    /// The vendor account (Twilio `accountSid`, Telnyx `user_id`), if any.
    pub account: Option<String>,
    /// Custom parameters (Twilio `<Parameter>`, Telnyx `custom_parameters`), sorted by
    /// name; values that are not JSON strings are given as their JSON text.
    pub custom_parameters: Vec<(String, String)>,
    /// The tracks the stream carries, index = packet channel.
    pub tracks: Vec<Track>,
}

/// One thing the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Declare the call and its media format (creating it if new). Always the first
    /// action of a session, and given once.
    Open {
        /// The call.
        call_id: CallId,
        /// Its media format.
        format: MediaFormat,
        /// What the stream says about itself.
        metadata: StreamMetadata,
    },
    /// Store these frames of the opened call (sequences from the protocol's counter).
    Store(Vec<Packet>),
    /// A DTMF digit was pressed.
    Dtmf {
        /// The digit (`0`-`9`, `*`, `#`, `A`-`D`).
        digit: char,
        /// Milliseconds of the stream's audio before it (the protocol's clock).
        offset_ms: u64,
    },
    /// A mark came back (Twilio/Telnyx `mark`).
    Mark {
        /// The mark's name.
        name: String,
        /// Milliseconds of the stream's audio before it.
        offset_ms: u64,
    },
    /// The peer reported an error of its own (Telnyx `error`, AudioSocket `0xff`); the
    /// stream goes on. Log it.
    PeerError {
        /// What the peer said.
        detail: String,
    },
    /// The stream ended normally (Twilio `stop`, AudioSocket hang-up): complete the call.
    HangUp,
    /// Close the stream; the session takes no more input.
    Close {
        /// Why.
        reason: CloseReason,
    },
}

/// Why a session asks to close its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer ended the stream (after [`Action::HangUp`]).
    EndOfStream,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::EndOfStream => f.write_str("end of stream"),
        }
    }
}

/// Why a session refused its input. The session is finished after any of these; the
/// driver closes the stream with the error's text as the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A text frame is not JSON, or not a JSON object with a string `event`.
    #[error("frame is not a JSON object with an \"event\": {0}")]
    NotJson(#[source] serde_json::Error),
    /// A known event with missing fields or fields of the wrong type.
    #[error("malformed {event:?} frame: {source}")]
    Malformed {
        /// The event.
        event: &'static str,
        /// What was wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A field holds a value the protocol does not allow (a chunk that is not a
    /// number, a base64 payload that is not base64...).
    #[error("{event:?} frame: field {field} is invalid: {reason}")]
    InvalidField {
        /// The event (or AudioSocket frame kind).
        event: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A binary WebSocket frame on a JSON-only protocol.
    #[error("binary frame on a JSON text stream")]
    BinaryFrame,
    /// A frame larger than the session accepts.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The frame's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An event or frame kind this protocol does not define.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A media (or other call) frame before the stream said which call it is.
    #[error("{event:?} before the stream was started")]
    BeforeStart {
        /// What arrived too early.
        event: &'static str,
    },
    /// A second `start` (or AudioSocket UUID) on one stream.
    #[error("the stream was already started")]
    AlreadyStarted,
    /// Input after the stream ended.
    #[error("input after the end of the stream")]
    AfterEnd,
    /// The call id the stream names is not a valid call id.
    #[error("call id {id:?} is not valid: {source}")]
    InvalidCallId {
        /// The id as sent.
        id: String,
        /// Why it is not valid.
        #[source]
        source: InvalidCallId,
    },
    /// A media format pbx cannot store.
    #[error("unsupported media format: {0}")]
    UnsupportedFormat(String),
    /// A media format pbx knows but refuses (rate, channels).
    #[error(transparent)]
    Format(#[from] MediaFormatError),
    /// A media frame of a track the stream did not announce.
    #[error("media on track {0:?}, which the stream did not announce")]
    UnknownTrack(String),
    /// A frame whose counter or timestamp cannot make a packet.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// AudioSocket: audio at another sample rate than the call's first audio.
    #[error("sample rate changed from {from} Hz to {to} Hz mid-call")]
    RateChanged {
        /// The call's rate.
        from: u32,
        /// The new frame's rate.
        to: u32,
    },
    /// AudioSocket: audio at a rate pbx does not store (96 or 192 kHz).
    #[error("audio at {rate} Hz (kind {kind:#04x}) is not supported: pbx stores at most 48000 Hz")]
    UnsupportedRate {
        /// The frame kind.
        kind: u8,
        /// Its sample rate.
        rate: u32,
    },
}

impl ProtocolError {
    /// What kind of refusal it is, for a transport to pick its close code.
    pub fn kind(&self) -> ProtocolErrorKind {
        match self {
            ProtocolError::BinaryFrame => ProtocolErrorKind::UnsupportedData,
            ProtocolError::FrameTooLarge { .. } => ProtocolErrorKind::TooLarge,
            ProtocolError::UnsupportedFormat(_) | ProtocolError::Format(_) | ProtocolError::UnsupportedRate { .. } => {
                ProtocolErrorKind::Unsupported
            }
            _ => ProtocolErrorKind::Violation,
        }
    }
}

/// Coarse classes of [`ProtocolError`] (WebSocket: 1008, 1003, 1009, 1003).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolErrorKind {
    /// The peer broke the protocol.
    Violation,
    /// A frame of a type this stream does not take (binary on JSON).
    UnsupportedData,
    /// A frame too large.
    TooLarge,
    /// Audio in a format pbx does not store.
    Unsupported,
}
