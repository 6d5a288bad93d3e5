//! The memory store's webhook outbox: deliveries in a map, the cursor beside them,
//! all under one lock (never taken with a call's lock held). Pending deliveries are
//! also indexed by when they fall due, finished ones by id, so a claim, the depth and
//! pruning cost the same with 100,000 delivered messages as with none.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::events::EventId;
use pbx_core::store::StoreError;
use pbx_core::webhooks::{Delivery, DeliveryId, DeliveryOutcome, DeliveryStatus, NewDelivery, Redelivery, check_limit};

/// How many deliveries the memory store keeps: beyond this, the oldest finished ones
/// are dropped (pending ones never are).
pub const KEPT_DELIVERIES: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The cursor and when it last moved or was marked alive; `None` until opened.
    cursor: Option<(EventId, DateTime<Utc>)>,
    deliveries: BTreeMap<DeliveryId, Delivery>,
    /// Pending deliveries by `next_attempt_at`.
    due: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    /// Delivered and dead deliveries by `finished_at`.
    finished: BTreeSet<(DateTime<Utc>, DeliveryId)>,
    next_id: DeliveryId,
}

impl Inner {
    /// Drops up to `limit` finished deliveries, oldest finished first, those finished
    /// before `before`.
    fn drop_finished(&mut self, limit: usize, before: DateTime<Utc>) -> u64 {
        let keys: Vec<(DateTime<Utc>, DeliveryId)> =
            self.finished.iter().take_while(|(at, _)| *at < before).take(limit).copied().collect();
        for key in &keys {
            self.finished.remove(key);
            self.deliveries.remove(&key.1);
        }
        keys.len() as u64
    }
}

impl Outbox {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update below is complete before anything can panic.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn open(&self, start: EventId, now: DateTime<Utc>) -> EventId {
        self.inner().cursor.get_or_insert((start, now)).0
    }

    pub(crate) fn enqueue(
        &self,
        from: EventId,
        to: EventId,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if to < from {
            return Err(StoreError::InvalidArgument(format!("outbox cursor cannot move back from {from} to {to}")));
        }
        let mut inner = self.inner();
        match inner.cursor {
            Some((cursor, _)) if cursor == from => {}
            Some(_) => return Ok(false),
            None => return Err(StoreError::InvalidArgument("the outbox is not open".into())),
        }
        for new in deliveries {
            inner.next_id += 1;
            let id = inner.next_id;
            inner.due.insert((now, id));
            inner.deliveries.insert(
                id,
                Delivery {
                    id,
                    message_id: new.message_id.clone(),
                    event_id: new.event_id,
                    call_id: new.call_id.clone(),
                    endpoint: new.endpoint.clone(),
                    kind: new.kind.clone(),
                    body: new.body.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    created_at: now,
                    next_attempt_at: Some(now),
                    finished_at: None,
                },
            );
        }
        inner.cursor = Some((to, now));
        // Finished deliveries are history: keep the newest, never a pending one.
        let excess = inner.deliveries.len().saturating_sub(KEPT_DELIVERIES);
        if excess > 0 {
            inner.drop_finished(excess, DateTime::<Utc>::MAX_UTC);
        }
        Ok(true)
    }

    /// The newest event the log must keep for the outbox: `None` when no cursor
    /// holds it back (none opened, or none alive since `alive_since`).
    pub(crate) fn pin(&self, alive_since: DateTime<Utc>) -> Option<EventId> {
        self.inner().cursor.filter(|(_, at)| *at >= alive_since).map(|(cursor, _)| cursor)
    }

    pub(crate) fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        check_limit(limit)?;
        let lease = chrono::Duration::from_std(lease).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let mut inner = self.inner();
        let due: Vec<(DateTime<Utc>, DeliveryId)> =
            inner.due.iter().take_while(|(at, _)| *at <= now).take(limit).copied().collect();
        let mut claimed = Vec::with_capacity(due.len());
        for key in due {
            inner.due.remove(&key);
            inner.due.insert((now + lease, key.1));
            if let Some(d) = inner.deliveries.get_mut(&key.1) {
                d.attempts += 1;
                d.next_attempt_at = Some(now + lease);
                claimed.push(d.clone());
            }
        }
        Ok(claimed)
    }

    pub(crate) fn finish(&self, id: DeliveryId, attempt: u32, outcome: &DeliveryOutcome, now: DateTime<Utc>) -> bool {
        let mut inner = self.inner();
        let Some(d) = inner.deliveries.get_mut(&id) else { return false };
        if d.status != DeliveryStatus::Pending || d.attempts != attempt {
            return false;
        }
        let was_due = d.next_attempt_at;
        match outcome {
            DeliveryOutcome::Delivered => {
                d.status = DeliveryStatus::Delivered;
                d.next_attempt_at = None;
                d.finished_at = Some(now);
            }
            DeliveryOutcome::Retry { at, error } => {
                d.next_attempt_at = Some(*at);
                d.last_error = Some(error.clone());
            }
            DeliveryOutcome::Dead { error } => {
                d.status = DeliveryStatus::Dead;
                d.next_attempt_at = None;
                d.last_error = Some(error.clone());
                d.finished_at = Some(now);
            }
        }
        let (now_due, finished_at) = (d.next_attempt_at, d.finished_at);
        if let Some(at) = was_due {
            inner.due.remove(&(at, id));
        }
        if let Some(at) = now_due {
            inner.due.insert((at, id));
        }
        if let Some(at) = finished_at {
            inner.finished.insert((at, id));
        }
        true
    }

    pub(crate) fn list(&self, limit: usize, before: Option<DeliveryId>) -> Result<Vec<Delivery>, StoreError> {
        check_limit(limit)?;
        let inner = self.inner();
        let end = before.unwrap_or(DeliveryId::MAX);
        Ok(inner.deliveries.range(..end).rev().take(limit).map(|(_, d)| d.clone()).collect())
    }

    pub(crate) fn retry(&self, id: DeliveryId, now: DateTime<Utc>) -> Redelivery {
        let mut inner = self.inner();
        let Some(d) = inner.deliveries.get_mut(&id) else { return Redelivery::Unknown };
        if d.status != DeliveryStatus::Dead {
            return Redelivery::NotDead(d.clone());
        }
        let finished_at = d.finished_at;
        d.status = DeliveryStatus::Pending;
        d.attempts = 0;
        d.next_attempt_at = Some(now);
        d.finished_at = None;
        let retried = d.clone();
        if let Some(at) = finished_at {
            inner.finished.remove(&(at, id));
        }
        inner.due.insert((now, id));
        Redelivery::Retried(retried)
    }

    pub(crate) fn depth(&self) -> u64 {
        self.inner().due.len() as u64
    }

    pub(crate) fn prune(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        if limit > pbx_core::webhooks::MAX_DELIVERY_PAGE {
            check_limit(limit)?;
        }
        Ok(self.inner().drop_finished(limit, before))
    }
}
