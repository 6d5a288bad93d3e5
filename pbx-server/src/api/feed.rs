//! The feed's messages and filters, shared by the WebSocket (`GET /v1/events/ws`) and
//! Server-Sent Events (`GET /v1/events`) transports.
//!
//! Every message is one JSON object with a top-level `id` (the event log's cursor:
//! pass it back as `since`, or as SSE's `Last-Event-ID`), a `type`, the `call_id` where
//! it has one, `at`, and its payload. [`FeedMessage`] is the union the OpenAPI document
//! describes.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use pbx_core::events::{EventBody, EventFilter, EventId, EventType, StoredEvent};
use pbx_core::gateway::FeedItem;
use pbx_core::{CallId, CallState};
use poem_openapi::{Object, Union};

use super::types::{ChannelSentimentView, SegmentView, SentimentView, StateView};
use crate::error::ApiError;

/// A call was created (IN_PROGRESS), by its first packet or a stream's start.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct CallCreatedMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Always IN_PROGRESS.
    pub state: StateView,
}

/// A call changed state.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct StateChangedMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The state before.
    pub from: StateView,
    /// The state after.
    pub to: StateView,
}

/// Packets of one channel arrived late, after a gap, or twice. Aggregated: at most one
/// per call channel per second (and one for a channel's first anomaly), carrying the
/// channel's counters, so a burst of late packets is a few messages.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct OrderingAnomalyMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The channel (0, or 1 for a second track).
    pub channel: u8,
    /// Distinct sequences stored on the channel.
    pub received: u64,
    /// Highest sequence stored.
    pub highest: u64,
    /// Sequences between 1 and `highest` not received.
    pub missing: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets that arrived below the highest and filled a gap.
    pub out_of_order: u64,
}

/// An AI attempt started.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct AttemptStartedMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// `true` when it took over a crashed worker's expired lease.
    pub rescued: bool,
}

/// An AI attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct AttemptFailedMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The attempt.
    pub attempt: u32,
    /// The error.
    pub error: String,
    /// When the next attempt is due; `null` when the call gave up (FAILED).
    #[oai(nullable)]
    pub retry_at: Option<DateTime<Utc>>,
    /// `true` when no attempt follows.
    pub gave_up: bool,
}

/// An AI attempt succeeded (`transcript_ready` follows).
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct AttemptSucceededMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The attempt.
    pub attempt: u32,
}

/// A call's transcript and sentiment.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct TranscriptReadyMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The transcript.
    pub text: String,
    /// Its sentiment.
    pub sentiment: SentimentView,
    /// Timed segments (may be empty).
    pub segments: Vec<SegmentView>,
    /// Per-channel sentiment of a 2-channel call.
    pub channel_sentiment: Vec<ChannelSentimentView>,
}

/// An operator re-drove a FAILED call.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct RedrivenMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A media stream started feeding a call.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct StreamStartedMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// `twilio`, `telnyx`, `audiohook` or `audiosocket`.
    pub protocol: String,
    /// The protocol's stream id.
    pub stream_id: String,
}

/// A media stream ended.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct StreamEndedMessage {
    /// The event's cursor.
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// As in `stream_started`.
    pub protocol: String,
    /// As in `stream_started`.
    pub stream_id: String,
    /// Why: `stop`, `close`, `hangup`, `disconnected`...
    pub reason: String,
}

/// The cursor asked for cannot be continued (retention dropped what followed it, or
/// it is not a cursor of this log): reload `GET /v1/calls`, then carry on; the messages
/// that follow come after `id`.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ResyncMessage {
    /// The cursor the feed continues from.
    pub id: u64,
    /// `pruned` or `unknown_cursor`.
    pub reason: String,
}

/// This subscriber fell behind live by `missed` events; the server now reads them from
/// its log, so none is lost. Informational.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct LaggedMessage {
    /// The last cursor delivered before falling behind.
    pub id: u64,
    /// How far behind.
    pub missed: u64,
}

/// An event type, as the `type` filter of the feeds takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum EventTypeParam {
    /// `call_created`.
    CallCreated,
    /// `state_changed`.
    StateChanged,
    /// `ordering_anomaly`.
    OrderingAnomaly,
    /// `attempt_started`.
    AttemptStarted,
    /// `attempt_failed`.
    AttemptFailed,
    /// `attempt_succeeded`.
    AttemptSucceeded,
    /// `transcript_ready`.
    TranscriptReady,
    /// `redriven`.
    Redriven,
    /// `stream_started`.
    StreamStarted,
    /// `stream_ended`.
    StreamEnded,
}

impl EventTypeParam {
    /// The name, as in each message's `type`.
    pub fn name(self) -> String {
        match poem_openapi::types::ToJSON::to_json(&self) {
            Some(serde_json::Value::String(name)) => name,
            _ => String::new(),
        }
    }
}

/// One message of the event feed, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum FeedMessage {
    /// `call_created`.
    #[oai(mapping = "call_created")]
    CallCreated(CallCreatedMessage),
    /// `state_changed`.
    #[oai(mapping = "state_changed")]
    StateChanged(StateChangedMessage),
    /// `ordering_anomaly`.
    #[oai(mapping = "ordering_anomaly")]
    OrderingAnomaly(OrderingAnomalyMessage),
    /// `attempt_started`.
    #[oai(mapping = "attempt_started")]
    AttemptStarted(AttemptStartedMessage),
    /// `attempt_failed`.
    #[oai(mapping = "attempt_failed")]
    AttemptFailed(AttemptFailedMessage),
    /// `attempt_succeeded`.
    #[oai(mapping = "attempt_succeeded")]
    AttemptSucceeded(AttemptSucceededMessage),
    /// `transcript_ready`.
    #[oai(mapping = "transcript_ready")]
    TranscriptReady(TranscriptReadyMessage),
    /// `redriven`.
    #[oai(mapping = "redriven")]
    Redriven(RedrivenMessage),
    /// `stream_started`.
    #[oai(mapping = "stream_started")]
    StreamStarted(StreamStartedMessage),
    /// `stream_ended`.
    #[oai(mapping = "stream_ended")]
    StreamEnded(StreamEndedMessage),
    /// `resync`.
    #[oai(mapping = "resync")]
    Resync(ResyncMessage),
    /// `lagged`.
    #[oai(mapping = "lagged")]
    Lagged(LaggedMessage),
}

/// Each event's JSON text, rendered once for every WebSocket that sends it.
///
/// A live event reaches every subscriber, and rendering it (building the message,
/// then its JSON) cost more than anything else a subscriber does: with 100
/// subscribers it was done 100 times. The cache keeps the text of the last
/// [`RENDERED_SLOTS`] events in slots indexed by id (four times the gateway's default
/// ring, so a subscriber that lagged and reads the recent past from the log still
/// finds them); one that replays older events renders them again, which is correct,
/// only slower. Memory stays bounded (one text per slot, about 4 MB in all), and an
/// id's text never changes, so a stale slot is simply overwritten.
#[derive(Debug)]
pub(crate) struct Rendered {
    slots: Box<[Mutex<Slot>]>,
}

/// One cached text and the event it is of.
type Slot = Option<(EventId, Arc<str>)>;

/// How many events' texts [`Rendered`] keeps.
pub(crate) const RENDERED_SLOTS: usize = 16384;

impl Default for Rendered {
    fn default() -> Self {
        Self { slots: (0..RENDERED_SLOTS).map(|_| Mutex::new(None)).collect() }
    }
}

impl Rendered {
    /// The JSON text of `item`'s message, if it passes `filter` (as
    /// [`FeedMessage::from_item`]).
    pub(crate) fn text(&self, item: &FeedItem, filter: &EventFilter) -> Option<Arc<str>> {
        let FeedItem::Event(event) = item else {
            return FeedMessage::from_item(item, filter).map(|message| json(&message));
        };
        if !filter.matches(event) {
            return None;
        }
        let slot = &self.slots[(event.id % RENDERED_SLOTS as u64) as usize];
        if let Some((id, text)) = &*slot.lock().unwrap_or_else(PoisonError::into_inner)
            && *id == event.id
        {
            return Some(text.clone());
        }
        // Rendered outside the lock: subscribers that miss together may each render
        // it, and the last one's copy stays.
        let text = json(&FeedMessage::from_event(event)?);
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((event.id, text.clone()));
        Some(text)
    }
}

/// A message's JSON text.
fn json(message: &FeedMessage) -> Arc<str> {
    poem_openapi::types::ToJSON::to_json_string(message).into()
}

impl FeedMessage {
    /// The message's cursor.
    pub fn id(&self) -> u64 {
        match self {
            FeedMessage::CallCreated(m) => m.id,
            FeedMessage::StateChanged(m) => m.id,
            FeedMessage::OrderingAnomaly(m) => m.id,
            FeedMessage::AttemptStarted(m) => m.id,
            FeedMessage::AttemptFailed(m) => m.id,
            FeedMessage::AttemptSucceeded(m) => m.id,
            FeedMessage::TranscriptReady(m) => m.id,
            FeedMessage::Redriven(m) => m.id,
            FeedMessage::StreamStarted(m) => m.id,
            FeedMessage::StreamEnded(m) => m.id,
            FeedMessage::Resync(m) => m.id,
            FeedMessage::Lagged(m) => m.id,
        }
    }

    /// The message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            FeedMessage::Resync(_) => "resync",
            FeedMessage::Lagged(_) => "lagged",
            FeedMessage::CallCreated(_) => EventType::CallCreated.as_str(),
            FeedMessage::StateChanged(_) => EventType::StateChanged.as_str(),
            FeedMessage::OrderingAnomaly(_) => EventType::OrderingAnomaly.as_str(),
            FeedMessage::AttemptStarted(_) => EventType::AttemptStarted.as_str(),
            FeedMessage::AttemptFailed(_) => EventType::AttemptFailed.as_str(),
            FeedMessage::AttemptSucceeded(_) => EventType::AttemptSucceeded.as_str(),
            FeedMessage::TranscriptReady(_) => EventType::TranscriptReady.as_str(),
            FeedMessage::Redriven(_) => EventType::Redriven.as_str(),
            FeedMessage::StreamStarted(_) => EventType::StreamStarted.as_str(),
            FeedMessage::StreamEnded(_) => EventType::StreamEnded.as_str(),
        }
    }

    /// The message of a feed item that passes `filter` (resync and lagged always do);
    /// `None` for events the filter drops or this server does not know.
    pub fn from_item(item: &FeedItem, filter: &EventFilter) -> Option<Self> {
        match item {
            FeedItem::Event(event) => filter.matches(event).then(|| Self::from_event(event)).flatten(),
            FeedItem::Resync { id, reason } => {
                Some(FeedMessage::Resync(ResyncMessage { id: *id, reason: reason.as_str().to_owned() }))
            }
            FeedItem::Lagged { id, missed } => Some(FeedMessage::Lagged(LaggedMessage { id: *id, missed: *missed })),
            _ => None,
        }
    }

    /// The message of one event.
    pub fn from_event(e: &StoredEvent) -> Option<Self> {
        let (id, call_id, at) = (e.id, e.call_id.to_string(), e.at);
        let sentiment =
            |s: pbx_core::ai::Sentiment| SentimentView { label: s.label.as_str().to_owned(), score: s.score };
        Some(match &e.body {
            EventBody::CallCreated {} => {
                FeedMessage::CallCreated(CallCreatedMessage { id, call_id, at, state: StateView::InProgress })
            }
            EventBody::StateChanged { from, to } => FeedMessage::StateChanged(StateChangedMessage {
                id,
                call_id,
                at,
                from: (*from).into(),
                to: (*to).into(),
            }),
            EventBody::OrderingAnomaly { channel, counters, missing } => {
                FeedMessage::OrderingAnomaly(OrderingAnomalyMessage {
                    id,
                    call_id,
                    at,
                    channel: *channel,
                    received: counters.received,
                    highest: counters.highest,
                    missing: *missing,
                    duplicates: counters.duplicates,
                    out_of_order: counters.out_of_order,
                })
            }
            EventBody::AttemptStarted { attempt, rescued } => FeedMessage::AttemptStarted(AttemptStartedMessage {
                id,
                call_id,
                at,
                attempt: *attempt,
                rescued: *rescued,
            }),
            EventBody::AttemptFailed { attempt, error, retry_at } => FeedMessage::AttemptFailed(AttemptFailedMessage {
                id,
                call_id,
                at,
                attempt: *attempt,
                error: error.clone(),
                retry_at: *retry_at,
                gave_up: retry_at.is_none(),
            }),
            EventBody::AttemptSucceeded { attempt } => {
                FeedMessage::AttemptSucceeded(AttemptSucceededMessage { id, call_id, at, attempt: *attempt })
            }
            EventBody::TranscriptReady { text, sentiment: s, segments, channel_sentiment } => {
                FeedMessage::TranscriptReady(TranscriptReadyMessage {
                    id,
                    call_id,
                    at,
                    text: text.clone(),
                    sentiment: sentiment(*s),
                    segments: segments
                        .iter()
                        .map(|g| SegmentView { start: g.start, end: g.end, text: g.text.clone(), channel: g.channel })
                        .collect(),
                    channel_sentiment: channel_sentiment
                        .iter()
                        .map(|c| ChannelSentimentView { channel: c.channel, sentiment: sentiment(c.sentiment) })
                        .collect(),
                })
            }
            EventBody::Redriven {} => FeedMessage::Redriven(RedrivenMessage { id, call_id, at }),
            EventBody::StreamStarted { protocol, stream_id } => FeedMessage::StreamStarted(StreamStartedMessage {
                id,
                call_id,
                at,
                protocol: protocol.clone(),
                stream_id: stream_id.clone(),
            }),
            EventBody::StreamEnded { protocol, stream_id, reason } => FeedMessage::StreamEnded(StreamEndedMessage {
                id,
                call_id,
                at,
                protocol: protocol.clone(),
                stream_id: stream_id.clone(),
                reason: reason.clone(),
            }),
            _ => return None,
        })
    }
}

/// A feed's filters from their query parameters: `call_id`, `type` (any number),
/// `state`. Bad values are a 400 naming the parameter.
pub fn parse_filter(call_id: Option<&str>, types: &[String], state: Option<&str>) -> Result<EventFilter, ApiError> {
    // Empty `type=` or `state=` values are no filter, as `state=` is on GET /v1/calls
    // (the WebSocket's query is parsed by hand).
    let call_id = call_id.map(CallId::new).transpose()?;
    let state = state.filter(|s| !s.is_empty());
    let types = types
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<EventType>().map_err(|e| ApiError::bad_request("invalid_filter", format!("type: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let state = state
        .map(|s| s.parse::<CallState>().map_err(|e| ApiError::bad_request("invalid_filter", format!("state: {e}"))))
        .transpose()?;
    Ok(EventFilter { call_id, types, state })
}

#[cfg(test)]
mod tests {
    use pbx_core::ordering::OrderingCounters;
    use poem_openapi::types::ToJSON;

    use super::*;

    fn event(body: EventBody) -> StoredEvent {
        StoredEvent {
            id: 42,
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            call_id: CallId::new("c1").unwrap(),
            body,
        }
    }

    #[test]
    fn messages_are_flat_objects_with_id_type_and_call() {
        let m = FeedMessage::from_event(&event(EventBody::StateChanged {
            from: CallState::Completed,
            to: CallState::ProcessingAi,
        }))
        .unwrap();
        let json = m.to_json().unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"state_changed","id":42,"call_id":"c1","at":"2027-01-15T08:00:00+00:00","from":"COMPLETED","to":"PROCESSING_AI"})
        );
        let anomaly =
            EventBody::anomaly(1, OrderingCounters { received: 3, highest: 5, duplicates: 1, out_of_order: 0 });
        let json = FeedMessage::from_event(&event(anomaly)).unwrap().to_json().unwrap();
        assert_eq!(
            (json["type"].as_str(), json["missing"].as_u64(), json["channel"].as_u64()),
            (Some("ordering_anomaly"), Some(2), Some(1))
        );
        let failed = EventBody::AttemptFailed { attempt: 2, error: "x".into(), retry_at: None };
        let json = FeedMessage::from_event(&event(failed)).unwrap().to_json().unwrap();
        assert_eq!((json["gave_up"].as_bool(), json["retry_at"].is_null()), (Some(true), true));
    }

    #[test]
    fn filters_parse_with_clear_errors() {
        let f = parse_filter(Some("c1"), &["call_created".into(), "state_changed".into()], Some("FAILED")).unwrap();
        assert_eq!(f.types.len(), 2);
        assert_eq!(f.state, Some(CallState::Failed));
        assert!(parse_filter(None, &["nope".into()], None).is_err());
        assert!(parse_filter(None, &[], Some("DONE")).is_err());
        assert!(parse_filter(Some("bad id!"), &[], None).is_err());
    }

    #[test]
    fn rendered_texts_are_the_messages_json_once_per_event() {
        let rendered = Rendered::default();
        let all = EventFilter::default();
        let created = FeedItem::Event(Arc::new(event(EventBody::CallCreated {})));
        let first = rendered.text(&created, &all).unwrap();
        let expected = FeedMessage::from_event(&event(EventBody::CallCreated {})).unwrap().to_json_string();
        assert_eq!(&*first, expected);
        // A second subscriber gets the same text without rendering it again.
        assert!(Arc::ptr_eq(&first, &rendered.text(&created, &all).unwrap()));

        // An event with the same slot but another id replaces it and is rendered for itself.
        let mut later = event(EventBody::StateChanged { from: CallState::InProgress, to: CallState::Completed });
        later.id += RENDERED_SLOTS as u64;
        let later_text = rendered.text(&FeedItem::Event(Arc::new(later)), &all).unwrap();
        assert!(later_text.contains("\"state_changed\"") && !Arc::ptr_eq(&first, &later_text));
        assert!(!Arc::ptr_eq(&first, &rendered.text(&created, &all).unwrap()));

        // The filter still applies, and lagged/resync are rendered per subscriber.
        let only_failed = EventFilter { state: Some(CallState::Failed), ..EventFilter::default() };
        assert_eq!(rendered.text(&created, &only_failed), None);
        let lagged = rendered.text(&FeedItem::Lagged { id: 7, missed: 3 }, &only_failed).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&lagged).unwrap()["missed"], 3);
    }
}
