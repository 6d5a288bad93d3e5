//! The request and answer shapes of the API, converted from pbx-core types with `From`.
//! Core types are never the API schema.

use chrono::{DateTime, Utc};
use pbx_core::gateway::ProcessorStatus;
use pbx_core::media::notes::{SignalKind, StreamInfo, StreamSignal};
use pbx_core::media::{AudioStats, MediaFormat, MediaFormatError};
use pbx_core::ordering::{OrderingReport, PacketOrder, SeqRange};
use pbx_core::state::Transition;
use pbx_core::store::{Appended, CallPage, CallSnapshot, CallSummary, PacketOutcome};
use pbx_core::{CallState, Packet, PacketError, Payload};
use poem_openapi::{Enum, Object};

use super::constraints::{ChannelRule, Constrained, MediaFormatRule, SequenceRule, TimestampRule};
use crate::error::rejection;

/// One audio packet, exactly as the seed sends it.
// It derives serde's `Deserialize` too, for `super::body::JsonBody`: the two must
// accept the same documents. (A comment, not a doc line: doc lines are the schema's
// description.) The constraints of its fields are described by `Constrained`, not
// enforced by poem-openapi: pbx-core enforces them on either path.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(example)]
pub struct PacketIn {
    /// The packet's sequence number within its call and channel: 1 to
    /// 9223372036854775807.
    pub sequence: Constrained<i64, SequenceRule>,
    /// The audio frame, standard base64 of its bytes in the call's media format (at
    /// most the configured size once decoded). A string that is not base64 (the
    /// seed's `audio_chunk_1`) is accepted too and kept as text: it reads back exactly
    /// as sent, and plays as silence (counted as an undecodable frame).
    pub data: StrictString,
    /// The sender's timestamp in seconds: finite and not negative.
    pub timestamp: Constrained<f64, TimestampRule>,
    /// The channel (track) the frame belongs to: 0 or 1; absent or `null` is 0. Each
    /// channel has its own sequence space and ordering counters (Twilio's inbound and
    /// outbound tracks, say).
    #[serde(default)]
    #[oai(nullable)]
    pub channel: Option<Constrained<i64, ChannelRule>>,
    /// Declares the call's media format, `ENCODING/RATE/CHANNELS` (`mulaw/8000/1`,
    /// `alaw/8000/1`, `l16/16000/2`; rates 8000, 12000, 16000, 24000, 32000, 44100,
    /// 48000; the rate defaults to 8000 and the channels to 1). Usually sent with the
    /// first packet only; the first declaration wins and another one later is a 409.
    /// Without one (or with `null`) the server's `--media-format` holds.
    #[serde(default)]
    #[oai(nullable, validator(max_length = 32))]
    pub media_format: Option<Constrained<String, MediaFormatRule>>,
}

impl PacketIn {
    /// The core packet, validated.
    pub(crate) fn packet(&self) -> Result<Packet, PacketError> {
        let packet = Packet::new(self.sequence.0, Payload::from_base64_or_text(&self.data.0), self.timestamp.0)?;
        match &self.channel {
            Some(channel) => packet.on_channel(channel.0),
            None => Ok(packet),
        }
    }

    /// The declared media format, if any.
    pub(crate) fn media_format(&self) -> Result<Option<MediaFormat>, MediaFormatError> {
        self.media_format.as_ref().map(|f| f.0.parse()).transpose()
    }
}

impl poem_openapi::types::Example for PacketIn {
    fn example() -> Self {
        Self {
            sequence: Constrained::new(1),
            data: StrictString("audio_chunk_1".into()),
            timestamp: Constrained::new(123.45),
            channel: None,
            media_format: None,
        }
    }
}

/// A JSON string that must be a string: unlike poem-openapi's `String`, a number or a
/// boolean is refused rather than turned into text (a mistyped field is a 400).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct StrictString(pub String);

impl poem_openapi::types::Type for StrictString {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Inline(Box::new(poem_openapi::registry::MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ParseFromJSON for StrictString {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(s)) => Ok(Self(s)),
            other => Err(poem_openapi::types::ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl poem_openapi::types::ToJSON for StrictString {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// What became of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum PacketStatus {
    /// Stored.
    Accepted,
    /// Stored before with the same data; nothing new stored.
    Duplicate,
    /// Refused (batch answers only; see `error`).
    Rejected,
}

/// The ordering verdict of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OrderView {
    /// The next sequence after the highest received.
    InOrder,
    /// Beyond the next expected sequence; `missing` were skipped.
    Gap,
    /// Below the highest received; fills part of a gap.
    OutOfOrder,
    /// Received before with the same data.
    Duplicate,
}

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Object)]
pub struct SeqRangeView {
    /// First sequence of the range.
    pub first: u64,
    /// Last sequence of the range (inclusive).
    pub last: u64,
}

impl From<SeqRange> for SeqRangeView {
    fn from(r: SeqRange) -> Self {
        Self { first: r.first, last: r.last }
    }
}

fn order_view(order: PacketOrder) -> (OrderView, Option<SeqRangeView>) {
    match order {
        PacketOrder::InOrder => (OrderView::InOrder, None),
        PacketOrder::Gap { missing } => (OrderView::Gap, Some(missing.into())),
        PacketOrder::OutOfOrder => (OrderView::OutOfOrder, None),
        PacketOrder::Duplicate => (OrderView::Duplicate, None),
    }
}

/// A stored (or duplicate) packet's answer: `{"status": "accepted", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PacketAck {
    /// `accepted`, or `duplicate` for an identical resend.
    pub status: PacketStatus,
    /// The ordering verdict.
    pub order: OrderView,
    /// The sequences this packet skipped (for a `gap`).
    pub missing: Option<SeqRangeView>,
    /// `true` when this packet created the call.
    pub created_call: bool,
}

impl From<Appended> for PacketAck {
    fn from(a: Appended) -> Self {
        let (order, missing) = order_view(a.order);
        let status = if a.is_duplicate() { PacketStatus::Duplicate } else { PacketStatus::Accepted };
        Self { status, order, missing, created_call: a.created_call }
    }
}

/// One packet's answer in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BatchItem {
    /// The packet's sequence.
    pub sequence: u64,
    /// `accepted`, `duplicate` or `rejected`.
    pub status: PacketStatus,
    /// The ordering verdict of a stored or duplicate packet.
    pub order: Option<OrderView>,
    /// The sequences a `gap` packet skipped.
    pub missing: Option<SeqRangeView>,
    /// Why a packet was rejected: `conflict` or `call_closed`.
    pub error: Option<String>,
    /// The rejection, for humans.
    pub message: Option<String>,
}

impl BatchItem {
    /// The answer for the packet with `sequence`.
    pub fn new(sequence: u64, outcome: &PacketOutcome) -> Self {
        match outcome {
            Ok(a) => {
                let ack = PacketAck::from(*a);
                Self {
                    sequence,
                    status: ack.status,
                    order: Some(ack.order),
                    missing: ack.missing,
                    error: None,
                    message: None,
                }
            }
            Err(rejected) => {
                let (code, message) = rejection(rejected);
                Self {
                    sequence,
                    status: PacketStatus::Rejected,
                    order: None,
                    missing: None,
                    error: Some(code.to_owned()),
                    message: Some(message),
                }
            }
        }
    }
}

/// A batch's answer: one item per packet, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct BatchAck {
    /// Packets newly stored.
    pub accepted: u64,
    /// Identical resends.
    pub duplicates: u64,
    /// Packets refused.
    pub rejected: u64,
    /// One answer per packet, in request order.
    pub results: Vec<BatchItem>,
}

impl FromIterator<BatchItem> for BatchAck {
    fn from_iter<I: IntoIterator<Item = BatchItem>>(iter: I) -> Self {
        let results: Vec<BatchItem> = iter.into_iter().collect();
        let count = |s| results.iter().filter(|r| r.status == s).count() as u64;
        Self {
            accepted: count(PacketStatus::Accepted),
            duplicates: count(PacketStatus::Duplicate),
            rejected: count(PacketStatus::Rejected),
            results,
        }
    }
}

/// A call's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateView {
    /// Packets are streaming in.
    InProgress,
    /// Hung up; AI work pending.
    Completed,
    /// AI work running, or a retry of it scheduled.
    ProcessingAi,
    /// AI work succeeded.
    Archived,
    /// AI work failed for good; an admin may re-drive it.
    Failed,
}

impl From<StateView> for CallState {
    fn from(s: StateView) -> Self {
        match s {
            StateView::InProgress => CallState::InProgress,
            StateView::Completed => CallState::Completed,
            StateView::ProcessingAi => CallState::ProcessingAi,
            StateView::Archived => CallState::Archived,
            StateView::Failed => CallState::Failed,
        }
    }
}

impl From<CallState> for StateView {
    fn from(s: CallState) -> Self {
        match s {
            CallState::InProgress => StateView::InProgress,
            CallState::Completed => StateView::Completed,
            CallState::ProcessingAi => StateView::ProcessingAi,
            CallState::Archived => StateView::Archived,
            CallState::Failed => StateView::Failed,
        }
    }
}

/// The answer to a hang-up or a re-drive.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct TransitionView {
    /// The call.
    pub call_id: String,
    /// The state before.
    pub from: StateView,
    /// The state now.
    pub state: StateView,
    /// `false` when nothing changed (a hang-up of a call already hung up).
    pub applied: bool,
}

impl TransitionView {
    /// The view of `t` on `call_id`.
    pub fn new(call_id: &pbx_core::CallId, t: Transition) -> Self {
        Self { call_id: call_id.to_string(), from: t.from.into(), state: t.to.into(), applied: t.applied }
    }
}

/// A call's ordering report.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct OrderingView {
    /// Distinct sequences stored.
    pub received: u64,
    /// Highest sequence stored.
    pub highest: u64,
    /// Sequences between 1 and `highest` not received.
    pub missing: u64,
    /// Identical resends.
    pub duplicates: u64,
    /// Packets that arrived below the highest sequence and filled a gap.
    pub out_of_order: u64,
    /// The lowest missing ranges.
    pub missing_ranges: Vec<SeqRangeView>,
    /// `true` when more missing ranges exist than are listed.
    pub missing_ranges_truncated: bool,
}

impl From<OrderingReport> for OrderingView {
    fn from(r: OrderingReport) -> Self {
        let c = r.counters;
        Self {
            received: c.received,
            highest: c.highest,
            missing: c.missing(),
            duplicates: c.duplicates,
            out_of_order: c.out_of_order,
            missing_ranges: r.missing_ranges.into_iter().map(Into::into).collect(),
            missing_ranges_truncated: r.missing_ranges_truncated,
        }
    }
}

/// The sentiment of a transcript.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct SentimentView {
    /// `POSITIVE`, `NEUTRAL` or `NEGATIVE`.
    pub label: String,
    /// From -1 (most negative) to 1 (most positive).
    pub score: f64,
}

/// The worker holding a call's AI work.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct LeaseView {
    /// The worker.
    pub owner: String,
    /// When the lease expires unless extended.
    pub expires_at: DateTime<Utc>,
}

/// Everything known about a call.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct CallView {
    /// The call.
    pub call_id: String,
    /// Its state.
    pub state: StateView,
    /// The media format its audio is read with: `ENCODING/RATE/CHANNELS`.
    pub media_format: String,
    /// `true` when the call declared its format; `false` when it is the server's
    /// default (`--media-format`).
    pub media_format_declared: bool,
    /// Counters and missing ranges (channel 0).
    pub ordering: OrderingView,
    /// Counters and missing ranges per channel (index = channel): one entry for a
    /// mono call, two for a call with a second track.
    pub channels: Vec<OrderingView>,
    /// AI attempts started.
    pub attempts: u32,
    /// Failed AI attempts counted against the retry policy.
    pub failures: u32,
    /// When the next AI attempt is due.
    #[oai(nullable)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The worker holding the call, while one does.
    #[oai(nullable)]
    pub lease: Option<LeaseView>,
    /// The last AI error.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// The transcript, once ARCHIVED.
    #[oai(nullable)]
    pub transcript: Option<String>,
    /// The sentiment, once ARCHIVED.
    #[oai(nullable)]
    pub sentiment: Option<SentimentView>,
    /// The transcript's timed segments, once ARCHIVED (empty where the provider gives
    /// none).
    pub segments: Vec<SegmentView>,
    /// Per-channel sentiment of a 2-channel call, once ARCHIVED.
    pub channel_sentiment: Vec<ChannelSentimentView>,
    /// What assembling the audio for the AI found, once ARCHIVED.
    #[oai(nullable)]
    pub audio: Option<AudioStatsView>,
    /// When the first packet arrived.
    pub created_at: DateTime<Utc>,
    /// When anything last changed.
    pub updated_at: DateTime<Utc>,
    /// When the last packet was stored.
    pub last_packet_at: DateTime<Utc>,
    /// When the call hung up.
    #[oai(nullable)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it reached ARCHIVED or FAILED.
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    /// What the call's packets were, once retention (`--retain-packets`) deleted
    /// them; `null` while it keeps them. Its counters, missing ranges (the lowest 1,000
    /// per channel) and result stay; its recording and packets answer 410.
    #[oai(nullable)]
    pub packets_swept: Option<PacketsSweptView>,
    /// The media streams that fed the call (Twilio, Telnyx, AudioHook, AudioSocket), in
    /// the order they opened: a reconnect is another entry. Empty for HTTP ingest.
    pub streams: Vec<StreamView>,
    /// The streams' DTMF digits and marks, in the order they arrived.
    pub signals: Vec<SignalView>,
}

/// One media stream of a call, as it opened.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct StreamView {
    /// `twilio`, `telnyx`, `audiohook` or `audiosocket`.
    pub protocol: String,
    /// The vendor's stream id (Twilio `streamSid`, Telnyx `stream_id`, the AudioHook
    /// session id).
    #[oai(nullable)]
    pub stream_id: Option<String>,
    /// The vendor account (Twilio `accountSid`, the Genesys organization id).
    #[oai(nullable)]
    pub account: Option<String>,
    /// The vendor's conversation (Genesys `conversationId`).
    #[oai(nullable)]
    pub conversation_id: Option<String>,
    /// The participant (AudioHook).
    #[oai(nullable)]
    pub participant: Option<ParticipantView>,
    /// The spoken language (AudioHook).
    #[oai(nullable)]
    pub language: Option<String>,
    /// Custom parameters (Twilio `<Parameter>`, Telnyx `custom_parameters`, AudioHook
    /// `customConfig` as one JSON-valued `customConfig`).
    pub custom_parameters: std::collections::BTreeMap<String, String>,
    /// The tracks, index = channel (`inbound`/`outbound`; AudioHook `external`/`internal`).
    pub tracks: Vec<String>,
    /// Milliseconds of the call's audio before this stream's first frame.
    pub start_offset_ms: u64,
    /// When it opened.
    pub started_at: DateTime<Utc>,
}

/// A stream's participant.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ParticipantView {
    /// The vendor's participant id.
    pub id: String,
    /// The caller's number (ANI).
    pub ani: String,
    /// The caller's name.
    pub ani_name: String,
    /// The number dialled (DNIS).
    pub dnis: String,
}

/// What kind of signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SignalKindView {
    /// A DTMF digit.
    Dtmf,
    /// A mark that came back.
    Mark,
}

/// A DTMF digit or mark of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct SignalView {
    /// `dtmf` or `mark`.
    pub kind: SignalKindView,
    /// The digit (`0`-`9`, `*`, `#`, `A`-`D`) or the mark's name.
    pub value: String,
    /// Milliseconds of the stream's audio before it.
    pub offset_ms: u64,
    /// The stream it came on.
    #[oai(nullable)]
    pub stream_id: Option<String>,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

impl From<StreamInfo> for StreamView {
    fn from(i: StreamInfo) -> Self {
        Self {
            protocol: i.protocol,
            stream_id: i.stream_id,
            account: i.account,
            conversation_id: i.conversation_id,
            participant: i.participant.map(|p| ParticipantView {
                id: p.id,
                ani: p.ani,
                ani_name: p.ani_name,
                dnis: p.dnis,
            }),
            language: i.language,
            custom_parameters: i.custom_parameters.into_iter().collect(),
            tracks: i.tracks,
            start_offset_ms: i.start_offset_ms,
            started_at: i.started_at,
        }
    }
}

impl From<StreamSignal> for SignalView {
    fn from(s: StreamSignal) -> Self {
        let kind = match s.kind {
            SignalKind::Dtmf => SignalKindView::Dtmf,
            SignalKind::Mark => SignalKindView::Mark,
        };
        Self { kind, value: s.value, offset_ms: s.offset_ms, stream_id: s.stream_id, at: s.at }
    }
}

/// What a call's packets were, once deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct PacketsSweptView {
    /// When they were deleted.
    pub swept_at: DateTime<Utc>,
    /// How many there were, every channel.
    pub packets: u64,
    /// Their payloads' bytes.
    pub bytes: u64,
}

/// One timed piece of a transcript.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct SegmentView {
    /// Start, seconds from the start of the call's audio.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// What was said.
    pub text: String,
    /// The channel it was said on (2-channel calls; `null` for one channel).
    #[oai(nullable)]
    pub channel: Option<u8>,
}

/// One channel's sentiment.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct ChannelSentimentView {
    /// The channel.
    pub channel: u8,
    /// Its sentiment.
    pub sentiment: SentimentView,
}

/// What assembling a call's audio found.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct AudioStatsView {
    /// Frame slots per track (sequences 1 to the highest).
    pub frames: u64,
    /// Missing frames, played as silence.
    pub gaps: u64,
    /// Frames that could not be decoded (text, a partial sample), played as silence.
    pub undecodable: u64,
    /// Frames of another length than the call's, cut or padded.
    pub resized: u64,
}

impl From<AudioStats> for AudioStatsView {
    fn from(a: AudioStats) -> Self {
        Self { frames: a.frames, gaps: a.gaps, undecodable: a.undecodable, resized: a.resized }
    }
}

fn sentiment_view(s: pbx_core::ai::Sentiment) -> SentimentView {
    SentimentView { label: s.label.as_str().to_owned(), score: s.score }
}

impl CallView {
    /// The view of a snapshot; `default_format` is the server's `--media-format`.
    pub fn new(s: CallSnapshot, default_format: MediaFormat) -> Self {
        let mut view = Self::from(s);
        if !view.media_format_declared {
            view.media_format = default_format.to_string();
        }
        view
    }
}

impl From<CallSnapshot> for CallView {
    fn from(s: CallSnapshot) -> Self {
        let (transcript, sentiment, segments, channel_sentiment, audio) = match s.result {
            Some(r) => (
                Some(r.transcript),
                Some(sentiment_view(r.sentiment)),
                r.segments
                    .into_iter()
                    .map(|g| SegmentView { start: g.start, end: g.end, text: g.text, channel: g.channel })
                    .collect(),
                r.channel_sentiment
                    .into_iter()
                    .map(|c| ChannelSentimentView { channel: c.channel, sentiment: sentiment_view(c.sentiment) })
                    .collect(),
                r.audio.map(Into::into),
            ),
            None => (None, None, Vec::new(), Vec::new(), None),
        };
        Self {
            call_id: s.call_id.into_string(),
            state: s.state.into(),
            media_format: s.media_format.unwrap_or_default().to_string(),
            media_format_declared: s.media_format.is_some(),
            ordering: s.ordering.into(),
            channels: s.channel_ordering.into_iter().map(Into::into).collect(),
            attempts: s.attempts,
            failures: s.failures,
            next_attempt_at: s.next_attempt_at,
            lease: s.lease.map(|l| LeaseView { owner: l.owner.to_string(), expires_at: l.expires_at }),
            last_error: s.last_error,
            transcript,
            sentiment,
            segments,
            channel_sentiment,
            audio,
            created_at: s.created_at,
            updated_at: s.updated_at,
            last_packet_at: s.last_packet_at,
            completed_at: s.completed_at,
            finished_at: s.finished_at,
            packets_swept: s.packets_swept.map(|p| PacketsSweptView {
                swept_at: p.swept_at,
                packets: p.packets,
                bytes: p.bytes,
            }),
            streams: s.streams.into_iter().map(Into::into).collect(),
            signals: s.signals.into_iter().map(Into::into).collect(),
        }
    }
}

/// One call in a listing.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct CallSummaryView {
    /// The call.
    pub call_id: String,
    /// Its state.
    pub state: StateView,
    /// Distinct sequences stored.
    pub received: u64,
    /// Highest sequence stored.
    pub highest: u64,
    /// Sequences between 1 and `highest` not received.
    pub missing: u64,
    /// Identical resends.
    pub duplicates: u64,
    /// Packets that filled a gap.
    pub out_of_order: u64,
    /// AI attempts started.
    pub attempts: u32,
    /// When the next AI attempt is due (a scheduled retry, or work not yet claimed).
    #[oai(nullable)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The sentiment, once ARCHIVED.
    #[oai(nullable)]
    pub sentiment: Option<SentimentView>,
    /// When the first packet arrived.
    pub created_at: DateTime<Utc>,
    /// When the last packet was stored.
    pub last_packet_at: DateTime<Utc>,
    /// When the call hung up.
    #[oai(nullable)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When anything last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<CallSummary> for CallSummaryView {
    fn from(s: CallSummary) -> Self {
        let c = s.counters;
        Self {
            call_id: s.call_id.into_string(),
            state: s.state.into(),
            received: c.received,
            highest: c.highest,
            missing: c.missing(),
            duplicates: c.duplicates,
            out_of_order: c.out_of_order,
            attempts: s.attempts,
            next_attempt_at: s.next_attempt_at,
            sentiment: s.sentiment.map(sentiment_view),
            created_at: s.created_at,
            last_packet_at: s.last_packet_at,
            completed_at: s.completed_at,
            updated_at: s.updated_at,
        }
    }
}

/// One page of calls, ascending by id.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct CallPageView {
    /// The calls.
    pub calls: Vec<CallSummaryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl From<CallPage> for CallPageView {
    fn from(p: CallPage) -> Self {
        Self {
            calls: p.calls.into_iter().map(Into::into).collect(),
            next_cursor: p.next.map(pbx_core::CallId::into_string),
        }
    }
}

/// What an AI processor is doing.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ProcessorView {
    /// The name its leases carry.
    pub worker_id: String,
    /// Most attempts, and so AI requests, in flight at once.
    pub concurrency: u64,
    /// Attempts running now.
    pub attempts_in_flight: u64,
    /// AI requests (transcription or sentiment) awaiting an answer now.
    pub ai_requests_in_flight: u64,
    /// The most AI requests ever awaiting an answer at once since the server started.
    pub ai_requests_peak: u64,
}

impl From<ProcessorStatus> for ProcessorView {
    fn from(s: ProcessorStatus) -> Self {
        Self {
            worker_id: s.worker_id.to_string(),
            concurrency: s.concurrency as u64,
            attempts_in_flight: s.attempts_in_flight as u64,
            ai_requests_in_flight: s.ai_requests_in_flight as u64,
            ai_requests_peak: s.ai_requests_peak as u64,
        }
    }
}

/// A liveness or readiness answer.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct HealthView {
    /// `ok` or `ready`.
    pub status: String,
}
