//! Completion webhooks: the durable outbox's records and rules.
//!
//! The outbox is built on the event log ([`crate::events`]), not beside it: every
//! state change already writes its event in the change's own transaction, so a crash
//! between a call reaching ARCHIVED and its webhook going out loses nothing. A worker
//! (pbx-server's) reads the log after the outbox's durable *cursor*, renders one
//! [`NewDelivery`] per matching event and endpoint, and hands them to
//! [`CallStore::outbox_enqueue`](crate::store::CallStore::outbox_enqueue), which stores
//! them and moves the cursor in one step, refusing if another instance moved it first
//! (so each event is enqueued once, whatever the number of instances). Deliveries are
//! then claimed with a lease ([`CallStore::claim_deliveries`](crate::store::CallStore::claim_deliveries),
//! `SKIP LOCKED` on PostgreSQL), sent, and finished with a [`DeliveryOutcome`] fenced
//! by the attempt number, exactly like AI work: a worker that dies mid-send leaves a
//! lease that expires, and the delivery is sent again (at least once).
//!
//! While the cursor is kept moving, the log is never pruned past it, so an event
//! cannot be pruned before it was enqueued; a cursor nobody moved for longer than the
//! event retention (webhooks turned off) stops holding the log back.

use chrono::{DateTime, Utc};

use crate::events::{EventBody, EventId, EventType, StoredEvent};
use crate::id::CallId;
use crate::state::CallState;

/// A delivery's id in the outbox.
pub type DeliveryId = u64;

/// The most deliveries one read or claim returns.
pub const MAX_DELIVERY_PAGE: usize = 1000;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being sent).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up: attempts spent, the endpoint answered 410 Gone, or it was refused
    /// for good. [`CallStore::retry_delivery`](crate::store::CallStore::retry_delivery) re-drives it.
    Dead,
}

impl DeliveryStatus {
    /// The lower-case name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// The status named `name` ([`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Dead]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A delivery to store: one event for one endpoint, its body rendered once so that
/// every attempt sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The `webhook-id`: unique per message, the same on every attempt.
    pub message_id: String,
    /// The event it announces.
    pub event_id: EventId,
    /// The call.
    pub call_id: CallId,
    /// The configured URL it goes to.
    pub endpoint: String,
    /// The webhook's `type` (`call.archived`, `call.failed`, ...).
    pub kind: String,
    /// The JSON body.
    pub body: String,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// What it was enqueued as.
    pub message_id: String,
    /// The event it announces.
    pub event_id: EventId,
    /// The call.
    pub call_id: CallId,
    /// The URL.
    pub endpoint: String,
    /// The webhook's type.
    pub kind: String,
    /// The JSON body.
    pub body: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far (a claimed delivery counts the one being made).
    pub attempts: u32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When a pending delivery is next due (for a claimed one: when its lease ends).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx.
    Delivered,
    /// Try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// Give up.
    Dead {
        /// Why.
        error: String,
    },
}

/// What [`CallStore::retry_delivery`](crate::store::CallStore::retry_delivery) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// The dead delivery is pending again, due now, with a fresh attempt budget.
    Retried(Delivery),
    /// It is not dead (pending or delivered): nothing changed.
    NotDead(Delivery),
    /// No delivery has this id.
    Unknown,
}

/// Which events become webhooks: a call reaching ARCHIVED or FAILED always, plus the
/// feed's event types listed in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEvents {
    /// Further event types sent as `call.<type>` (`call.transcript_ready`, ...).
    pub extra: Vec<EventType>,
}

impl WebhookEvents {
    /// The webhook `type` of `event`, or `None` when it is not sent. A state change
    /// to ARCHIVED is `call.archived`, to FAILED `call.failed`; an extra type `t` is
    /// `call.t` (a state change not to a terminal state, when listed, is
    /// `call.state_changed`).
    pub fn kind(&self, event: &StoredEvent) -> Option<String> {
        match &event.body {
            EventBody::StateChanged { to: CallState::Archived, .. } => return Some("call.archived".to_owned()),
            EventBody::StateChanged { to: CallState::Failed, .. } => return Some("call.failed".to_owned()),
            _ => {}
        }
        let kind = event.body.event_type();
        self.extra.contains(&kind).then(|| format!("call.{}", kind.as_str()))
    }
}

/// Checks a delivery page's limit.
pub fn check_limit(limit: usize) -> Result<(), crate::store::StoreError> {
    if limit == 0 || limit > MAX_DELIVERY_PAGE {
        return Err(crate::store::StoreError::InvalidArgument(format!(
            "limit must be 1..={MAX_DELIVERY_PAGE}, got {limit}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: EventBody) -> StoredEvent {
        StoredEvent { id: 1, at: DateTime::UNIX_EPOCH, call_id: CallId::new("c").unwrap(), body }
    }

    #[test]
    fn terminal_states_always_become_webhooks_and_extras_on_request() {
        let none = WebhookEvents::default();
        let archived = event(EventBody::StateChanged { from: CallState::ProcessingAi, to: CallState::Archived });
        let failed = event(EventBody::StateChanged { from: CallState::ProcessingAi, to: CallState::Failed });
        let completed = event(EventBody::StateChanged { from: CallState::InProgress, to: CallState::Completed });
        assert_eq!(none.kind(&archived).as_deref(), Some("call.archived"));
        assert_eq!(none.kind(&failed).as_deref(), Some("call.failed"));
        assert_eq!(none.kind(&completed), None);
        assert_eq!(none.kind(&event(EventBody::CallCreated {})), None);
        let some = WebhookEvents { extra: vec![EventType::CallCreated, EventType::StateChanged] };
        assert_eq!(some.kind(&event(EventBody::CallCreated {})).as_deref(), Some("call.call_created"));
        assert_eq!(some.kind(&completed).as_deref(), Some("call.state_changed"));
        assert_eq!(some.kind(&archived).as_deref(), Some("call.archived"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Dead] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("gone"), None);
        assert!(check_limit(0).is_err() && check_limit(MAX_DELIVERY_PAGE + 1).is_err() && check_limit(1).is_ok());
    }
}
