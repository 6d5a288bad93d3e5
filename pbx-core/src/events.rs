//! Events published by the gateway and the processor, for live feeds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::CallId;
use crate::ordering::PacketOrder;
use crate::state::CallState;

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A call changed state (`from` is `None` when its first packet created it).
    StateChanged {
        /// The call.
        call_id: CallId,
        /// The state before.
        from: Option<CallState>,
        /// The state after.
        to: CallState,
        /// When.
        at: DateTime<Utc>,
    },
    /// A packet arrived out of order, after a gap, or twice.
    OrderingAnomaly {
        /// The call.
        call_id: CallId,
        /// The packet's sequence.
        sequence: u64,
        /// The verdict.
        order: PacketOrder,
        /// When.
        at: DateTime<Utc>,
    },
    /// An AI attempt failed.
    AttemptFailed {
        /// The call.
        call_id: CallId,
        /// The attempt.
        attempt: u32,
        /// The error.
        error: String,
        /// When the next attempt is due; `None` when the call gave up.
        retry_at: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
}

impl Event {
    /// The call the event is about.
    pub fn call_id(&self) -> &CallId {
        match self {
            Event::StateChanged { call_id, .. }
            | Event::OrderingAnomaly { call_id, .. }
            | Event::AttemptFailed { call_id, .. } => call_id,
        }
    }
}
