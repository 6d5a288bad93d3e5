//! The event log: what happened to calls, in one durable order.
//!
//! Every store writes its events in the same transaction (or under the same lock) as the
//! change they describe ([`CallStore`](crate::store::CallStore)'s contract), so an event
//! exists exactly when its change does, and one store-wide cursor ([`EventId`]) orders
//! them: it only grows, it is the same for every process reading that store, and a
//! reader that has seen id `n` has seen every event numbered below `n` that is still
//! kept. Readers page through it with [`CallStore::events`](crate::store::CallStore::events);
//! live consumers follow it with [`Gateway::feed`](crate::gateway::Gateway::feed), which
//! replays from a cursor and then goes live with no gap and no duplicate at the seam.
//!
//! Ordering anomalies are aggregated: a store writes at most one
//! [`EventBody::OrderingAnomaly`] per call channel per [`ANOMALY_EVENT_INTERVAL_MS`]
//! (and always one for a channel's first anomaly), carrying the channel's cumulative
//! counters, so a burst of late packets is a few events, not thousands. The call's
//! counters, not the events, are the record ([`CallStore::get`](crate::store::CallStore::get)).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ai::{AiResult, ChannelSentiment, Segment, Sentiment};
use crate::id::CallId;
use crate::ordering::OrderingCounters;
use crate::state::CallState;

/// An event's position in the log: only grows, the same for every reader of a store.
/// `0` is before the first event.
pub type EventId = u64;

/// A store writes at most one ordering-anomaly event per call channel per this many
/// milliseconds (besides the channel's first).
pub const ANOMALY_EVENT_INTERVAL_MS: i64 = 1000;

/// Most events one [`CallStore::events`](crate::store::CallStore::events) call may ask for.
pub const MAX_EVENT_PAGE: usize = 1000;

/// One event as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Its position in the log.
    pub id: EventId,
    /// When the change happened (the store operation's `now`).
    pub at: DateTime<Utc>,
    /// The call it is about.
    pub call_id: CallId,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened to a call. Serialized with a `type` tag in snake case
/// (`call_created`, `state_changed`, ...), the names of [`EventType`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventBody {
    /// The call was created (IN_PROGRESS), by its first packet or by a declaration.
    CallCreated {},
    /// The call changed state.
    StateChanged {
        /// The state before.
        from: CallState,
        /// The state after.
        to: CallState,
    },
    /// Packets of one channel arrived late, after a gap, or twice; the channel's
    /// counters after the batch that carried them (aggregated: see the module docs).
    OrderingAnomaly {
        /// The channel.
        channel: u8,
        /// The channel's counters.
        #[serde(flatten)]
        counters: OrderingCounters,
        /// Sequences between 1 and `highest` not received.
        missing: u64,
    },
    /// An AI attempt started (the call was claimed).
    AttemptStarted {
        /// The attempt's number (1 for the first).
        attempt: u32,
        /// `true` when it took over an expired lease.
        rescued: bool,
    },
    /// An AI attempt failed.
    AttemptFailed {
        /// The attempt.
        attempt: u32,
        /// The error.
        error: String,
        /// When the next attempt is due; `None` when the call gave up (FAILED).
        retry_at: Option<DateTime<Utc>>,
    },
    /// An AI attempt succeeded; [`EventBody::TranscriptReady`] carries its result.
    AttemptSucceeded {
        /// The attempt.
        attempt: u32,
    },
    /// The call's transcript and sentiment.
    TranscriptReady {
        /// The transcript.
        text: String,
        /// Its sentiment.
        sentiment: Sentiment,
        /// Timed segments (may be empty).
        segments: Vec<Segment>,
        /// Per-channel sentiment of 2-channel calls.
        channel_sentiment: Vec<ChannelSentiment>,
    },
    /// An operator re-drove the FAILED call.
    Redriven {},
    /// A media stream (Twilio, AudioHook, AudioSocket...) started feeding the call.
    StreamStarted {
        /// `twilio`, `telnyx`, `audiohook` or `audiosocket`.
        protocol: String,
        /// The protocol's stream id.
        stream_id: String,
    },
    /// A media stream ended.
    StreamEnded {
        /// As in [`EventBody::StreamStarted`].
        protocol: String,
        /// As in [`EventBody::StreamStarted`].
        stream_id: String,
        /// Why: `stop`, `close`, `hangup`, `idle`, `error`...
        reason: String,
    },
}

impl EventBody {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::CallCreated {} => EventType::CallCreated,
            EventBody::StateChanged { .. } => EventType::StateChanged,
            EventBody::OrderingAnomaly { .. } => EventType::OrderingAnomaly,
            EventBody::AttemptStarted { .. } => EventType::AttemptStarted,
            EventBody::AttemptFailed { .. } => EventType::AttemptFailed,
            EventBody::AttemptSucceeded { .. } => EventType::AttemptSucceeded,
            EventBody::TranscriptReady { .. } => EventType::TranscriptReady,
            EventBody::Redriven {} => EventType::Redriven,
            EventBody::StreamStarted { .. } => EventType::StreamStarted,
            EventBody::StreamEnded { .. } => EventType::StreamEnded,
        }
    }

    /// The state the event puts its call in, where it does (creation, state changes).
    pub fn new_state(&self) -> Option<CallState> {
        match self {
            EventBody::CallCreated {} => Some(CallState::InProgress),
            EventBody::StateChanged { to, .. } => Some(*to),
            _ => None,
        }
    }

    /// The anomaly event of a channel whose counters are now `counters`.
    pub fn anomaly(channel: u8, counters: OrderingCounters) -> Self {
        EventBody::OrderingAnomaly { channel, counters, missing: counters.missing() }
    }

    /// The transcript event of an AI result.
    pub fn transcript(result: &AiResult) -> Self {
        EventBody::TranscriptReady {
            text: result.transcript.clone(),
            sentiment: result.sentiment,
            segments: result.segments.clone(),
            channel_sentiment: result.channel_sentiment.clone(),
        }
    }
}

/// The kinds of [`EventBody`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventType {
    /// [`EventBody::CallCreated`].
    CallCreated,
    /// [`EventBody::StateChanged`].
    StateChanged,
    /// [`EventBody::OrderingAnomaly`].
    OrderingAnomaly,
    /// [`EventBody::AttemptStarted`].
    AttemptStarted,
    /// [`EventBody::AttemptFailed`].
    AttemptFailed,
    /// [`EventBody::AttemptSucceeded`].
    AttemptSucceeded,
    /// [`EventBody::TranscriptReady`].
    TranscriptReady,
    /// [`EventBody::Redriven`].
    Redriven,
    /// [`EventBody::StreamStarted`].
    StreamStarted,
    /// [`EventBody::StreamEnded`].
    StreamEnded,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 10] = [
        EventType::CallCreated,
        EventType::StateChanged,
        EventType::OrderingAnomaly,
        EventType::AttemptStarted,
        EventType::AttemptFailed,
        EventType::AttemptSucceeded,
        EventType::TranscriptReady,
        EventType::Redriven,
        EventType::StreamStarted,
        EventType::StreamEnded,
    ];

    /// The type's name: `call_created`, `state_changed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallCreated => "call_created",
            EventType::StateChanged => "state_changed",
            EventType::OrderingAnomaly => "ordering_anomaly",
            EventType::AttemptStarted => "attempt_started",
            EventType::AttemptFailed => "attempt_failed",
            EventType::AttemptSucceeded => "attempt_succeeded",
            EventType::TranscriptReady => "transcript_ready",
            EventType::Redriven => "redriven",
            EventType::StreamStarted => "stream_started",
            EventType::StreamEnded => "stream_ended",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown event type {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// One page of the log ([`CallStore::events`](crate::store::CallStore::events)).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventPage {
    /// Events after the cursor asked for, ascending by id.
    pub events: Vec<StoredEvent>,
    /// The oldest id still kept; `latest + 1` when the log keeps none. A cursor `c`
    /// with `c + 1 < first` has lost events to retention.
    pub first: EventId,
    /// The newest id ever written (0 when none).
    pub latest: EventId,
}

impl EventPage {
    /// Whether a reader at `cursor` can continue from this log without missing events:
    /// nothing after it was pruned, and it is not ahead of the log (a cursor from
    /// another store, or from before a memory store restarted).
    pub fn continues(&self, cursor: EventId) -> bool {
        cursor <= self.latest && cursor.saturating_add(1) >= self.first
    }
}

/// Which events a consumer wants. The default wants every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events of this call.
    pub call_id: Option<CallId>,
    /// Only events of these types (empty: all).
    pub types: Vec<EventType>,
    /// Only events that put a call in this state (`call_created` for IN_PROGRESS,
    /// `state_changed` with this `to`).
    pub state: Option<CallState>,
}

impl EventFilter {
    /// `true` when `event` passes the filter.
    pub fn matches(&self, event: &StoredEvent) -> bool {
        self.call_id.as_ref().is_none_or(|id| *id == event.call_id)
            && (self.types.is_empty() || self.types.contains(&event.body.event_type()))
            && self.state.is_none_or(|state| event.body.new_state() == Some(state))
    }
}

/// Whether a channel whose last anomaly event was written at `last` (if ever) gets a
/// new one at `now` ([`ANOMALY_EVENT_INTERVAL_MS`]). Every store applies this rule.
pub fn anomaly_event_due(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last.is_none_or(|last| (now - last).num_milliseconds() >= ANOMALY_EVENT_INTERVAL_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: EventBody) -> StoredEvent {
        StoredEvent {
            id: 7,
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            call_id: CallId::new("c1").unwrap(),
            body,
        }
    }

    #[test]
    fn events_serialize_flat_with_a_type_tag() {
        let e = event(EventBody::StateChanged { from: CallState::Completed, to: CallState::ProcessingAi });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id":7,"at":"2023-11-14T22:13:20Z","call_id":"c1","type":"state_changed","from":"COMPLETED","to":"PROCESSING_AI"})
        );
        assert_eq!(serde_json::from_value::<StoredEvent>(json).unwrap(), e);
        let counters = OrderingCounters { received: 8, highest: 10, duplicates: 1, out_of_order: 2 };
        let json = serde_json::to_value(event(EventBody::anomaly(1, counters))).unwrap();
        assert_eq!(json["missing"], 2);
        assert_eq!(json["received"], 8);
        assert_eq!(json["type"], "ordering_anomaly");
    }

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!("nope".parse::<EventType>().unwrap_err().contains("call_created"));
    }

    #[test]
    fn filters_combine() {
        let created = event(EventBody::CallCreated {});
        let failed = event(EventBody::StateChanged { from: CallState::ProcessingAi, to: CallState::Failed });
        let all = EventFilter::default();
        assert!(all.matches(&created) && all.matches(&failed));
        let state = EventFilter { state: Some(CallState::Failed), ..Default::default() };
        assert!(!state.matches(&created) && state.matches(&failed));
        let types = EventFilter { types: vec![EventType::CallCreated], ..Default::default() };
        assert!(types.matches(&created) && !types.matches(&failed));
        let other = EventFilter { call_id: Some(CallId::new("c2").unwrap()), ..Default::default() };
        assert!(!other.matches(&created));
    }

    #[test]
    fn pages_tell_whether_a_cursor_continues() {
        let page = EventPage { events: vec![], first: 5, latest: 9 };
        assert!(page.continues(4) && page.continues(9));
        assert!(!page.continues(3), "events 4 was pruned");
        assert!(!page.continues(10), "ahead of the log");
        let empty = EventPage { events: vec![], first: 1, latest: 0 };
        assert!(empty.continues(0) && !empty.continues(1));
    }

    #[test]
    fn anomaly_events_are_throttled_per_interval() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert!(anomaly_event_due(None, t0));
        assert!(!anomaly_event_due(Some(t0), t0 + chrono::Duration::milliseconds(999)));
        assert!(anomaly_event_due(Some(t0), t0 + chrono::Duration::milliseconds(1000)));
    }
}
