//! The memory store's event log: a bounded ring, oldest dropped first.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use pbx_core::events::{EventBody, EventId, EventPage, MAX_EVENT_PAGE, StoredEvent};
use pbx_core::id::CallId;
use pbx_core::store::StoreError;
use tokio::sync::watch;

/// The default number of events the memory store keeps.
pub const DEFAULT_EVENT_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub(crate) struct EventLog {
    ring: Mutex<Ring>,
    signal: watch::Sender<EventId>,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<StoredEvent>,
    latest: EventId,
    capacity: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_EVENT_CAPACITY)
    }
}

impl EventLog {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let ring = Ring { events: VecDeque::new(), latest: 0, capacity: capacity.max(1) };
        Self { ring: Mutex::new(ring), signal: watch::Sender::new(0) }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // Every update is a push and maybe a pop; a panic cannot leave it half done.
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends events in order. Callers hold the lock of the call the events are
    /// about, so one call's events enter the log in the order of its changes.
    pub(crate) fn push(&self, call_id: &CallId, at: DateTime<Utc>, bodies: impl IntoIterator<Item = EventBody>) {
        let mut ring = self.ring();
        let before = ring.latest;
        for body in bodies {
            ring.latest += 1;
            let event = StoredEvent { id: ring.latest, at, call_id: call_id.clone(), body };
            if ring.events.len() == ring.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(event);
        }
        let latest = ring.latest;
        drop(ring);
        if latest != before {
            self.signal.send_replace(latest);
        }
    }

    pub(crate) fn page(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        if limit == 0 || limit > MAX_EVENT_PAGE {
            return Err(StoreError::InvalidArgument(format!("limit must be 1..={MAX_EVENT_PAGE}, got {limit}")));
        }
        let ring = self.ring();
        let first = ring.events.front().map_or(ring.latest + 1, |e| e.id);
        // Ids in the ring are contiguous: the event after `after` sits at a known index.
        let start = usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        let events = ring.events.iter().skip(start).take(limit).cloned().collect();
        Ok(EventPage { events, first, latest: ring.latest })
    }

    /// Drops up to `limit` events older than `before` from the front, none after `pin`.
    pub(crate) fn prune(&self, before: DateTime<Utc>, limit: usize, pin: Option<EventId>) -> u64 {
        let mut ring = self.ring();
        let mut dropped = 0;
        let pin = pin.unwrap_or(EventId::MAX);
        while dropped < limit && ring.events.front().is_some_and(|e| e.at < before && e.id <= pin) {
            ring.events.pop_front();
            dropped += 1;
        }
        dropped as u64
    }

    pub(crate) fn signal(&self) -> watch::Receiver<EventId> {
        self.signal.subscribe()
    }
}
