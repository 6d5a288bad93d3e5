//! What a call keeps about the media streams that fed it: each stream's metadata as it
//! opened ([`StreamInfo`]: protocol, stream id, account or organization, participant,
//! custom parameters, tracks) and the in-band signals it carried ([`StreamSignal`]:
//! DTMF digits and marks, with their offsets in the stream's audio). A driver writes
//! them with [`CallStore::note_stream`](crate::store::CallStore::note_stream); the
//! call's snapshot lists them in order (`streams`, `signals`).
//!
//! Bounded per call: at most [`MAX_STREAMS_PER_CALL`] streams (reconnects included) and
//! [`MAX_SIGNALS_PER_CALL`] signals, each note at most [`MAX_NOTE_BYTES`] of JSON. A note
//! over a bound is refused with [`StoreError::InvalidArgument`],
//! which the driver logs and counts; the audio is never affected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// The most streams a call records (a reconnect is a new stream).
pub const MAX_STREAMS_PER_CALL: usize = 64;
/// The most signals (DTMF digits and marks) a call records.
pub const MAX_SIGNALS_PER_CALL: usize = 1000;
/// The most bytes one note takes as JSON.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

/// The participant a stream carries (AudioHook's `participant`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamParticipant {
    /// The vendor's participant id.
    pub id: String,
    /// The caller's number (ANI), as the PBX gives it.
    pub ani: String,
    /// The caller's name, if given.
    pub ani_name: String,
    /// The number dialled (DNIS).
    pub dnis: String,
}

/// One stream of a call, as it opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// `twilio`, `telnyx`, `audiohook` or `audiosocket`.
    pub protocol: String,
    /// The vendor's id of the stream (Twilio `streamSid`, Telnyx `stream_id`, the
    /// AudioHook session id), if it has one.
    pub stream_id: Option<String>,
    /// The vendor account (Twilio `accountSid`, the Genesys organization id), if given.
    pub account: Option<String>,
    /// The vendor's conversation the call belongs to (Genesys `conversationId`).
    pub conversation_id: Option<String>,
    /// The participant (AudioHook), if given.
    pub participant: Option<StreamParticipant>,
    /// The spoken language, if given (AudioHook).
    pub language: Option<String>,
    /// Custom parameters (Twilio `<Parameter>`, Telnyx `custom_parameters`, AudioHook
    /// `customConfig` as `customConfig`), sorted by name.
    pub custom_parameters: Vec<(String, String)>,
    /// The tracks, index = packet channel (`inbound`, `outbound`).
    pub tracks: Vec<String>,
    /// Milliseconds of the call's audio before this stream's first frame (non-zero for
    /// an AudioHook reconnect).
    pub start_offset_ms: u64,
    /// When the stream opened.
    pub started_at: DateTime<Utc>,
}

/// What kind of in-band signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// A DTMF digit.
    Dtmf,
    /// A mark (Twilio/Telnyx `mark`) that came back.
    Mark,
}

impl SignalKind {
    /// `dtmf` or `mark`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Dtmf => "dtmf",
            SignalKind::Mark => "mark",
        }
    }
}

/// One in-band signal of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSignal {
    /// DTMF or mark.
    pub kind: SignalKind,
    /// The digit (`0`-`9`, `*`, `#`, `A`-`D`) or the mark's name.
    pub value: String,
    /// Milliseconds of the stream's audio before it (the protocol's clock).
    pub offset_ms: u64,
    /// The stream it came on.
    pub stream_id: Option<String>,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

/// One thing to note about a call's streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamNote {
    /// A stream opened.
    Started(Box<StreamInfo>),
    /// A signal arrived.
    Signal(StreamSignal),
}

impl StreamNote {
    /// `stream` or `signal`: how stores tell the two apart.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamNote::Started(_) => "stream",
            StreamNote::Signal(_) => "signal",
        }
    }

    /// How many notes of this kind a call keeps.
    pub fn limit(&self) -> usize {
        match self {
            StreamNote::Started(_) => MAX_STREAMS_PER_CALL,
            StreamNote::Signal(_) => MAX_SIGNALS_PER_CALL,
        }
    }

    /// The note's JSON (the inner record), refused over [`MAX_NOTE_BYTES`].
    pub fn to_json(&self) -> Result<String, StoreError> {
        let json = match self {
            StreamNote::Started(info) => serde_json::to_string(info),
            StreamNote::Signal(signal) => serde_json::to_string(signal),
        }
        .map_err(StoreError::backend)?;
        if json.len() > MAX_NOTE_BYTES {
            return Err(StoreError::InvalidArgument(format!(
                "a stream note of {} bytes exceeds the limit of {MAX_NOTE_BYTES}",
                json.len()
            )));
        }
        Ok(json)
    }

    /// The error for a call that already holds [`limit`](Self::limit) notes of this kind.
    pub fn over_limit(&self) -> StoreError {
        StoreError::InvalidArgument(format!(
            "the call already holds {} {} notes, the most it keeps",
            self.limit(),
            self.kind()
        ))
    }
}

impl StreamInfo {
    /// What a Twilio, Telnyx or AudioSocket stream said about itself as it opened.
    pub fn from_session(m: &super::session::StreamMetadata, now: DateTime<Utc>) -> Self {
        Self {
            protocol: m.protocol.as_str().to_owned(),
            stream_id: m.stream_id.clone(),
            account: m.account.clone(),
            conversation_id: None,
            participant: None,
            language: None,
            custom_parameters: m.custom_parameters.clone(),
            tracks: m.tracks.iter().map(|t| t.as_str().to_owned()).collect(),
            start_offset_ms: 0,
            started_at: now,
        }
    }

    /// What an AudioHook `open` said. Genesys's channels are `external` (the customer)
    /// and `internal` (the agent); the custom config is kept as one parameter,
    /// `customConfig`, holding its JSON.
    pub fn from_audiohook(m: &super::audiohook::AudioHookMetadata, now: DateTime<Utc>) -> Self {
        let p = &m.participant;
        Self {
            protocol: "audiohook".to_owned(),
            stream_id: Some(m.session_id.clone()),
            account: Some(m.organization_id.clone()),
            conversation_id: Some(m.conversation_id.clone()),
            participant: Some(StreamParticipant {
                id: p.id.clone(),
                ani: p.ani.clone(),
                ani_name: p.ani_name.clone(),
                dnis: p.dnis.clone(),
            }),
            language: m.language.clone(),
            custom_parameters: m.custom_config.iter().map(|c| ("customConfig".to_owned(), c.clone())).collect(),
            tracks: m.media.channels.clone(),
            start_offset_ms: (m.start_position.max(0.0) * 1000.0).round() as u64,
            started_at: now,
        }
    }
}
