//! The memory store's webhook outbox: deliveries in a map, the cursor beside them,
//! all under one lock (never taken with a call's lock held).

use std::collections::BTreeMap;
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
    next_id: DeliveryId,
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
        let old: Vec<DeliveryId> = inner
            .deliveries
            .values()
            .filter(|d| d.status != DeliveryStatus::Pending)
            .map(|d| d.id)
            .take(excess)
            .collect();
        for id in old {
            inner.deliveries.remove(&id);
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
        let mut due: Vec<(DateTime<Utc>, DeliveryId)> = inner
            .deliveries
            .values()
            .filter(|d| d.status == DeliveryStatus::Pending && d.next_attempt_at.is_some_and(|at| at <= now))
            .map(|d| (d.next_attempt_at.unwrap_or(now), d.id))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        Ok(due
            .into_iter()
            .filter_map(|(_, id)| {
                let d = inner.deliveries.get_mut(&id)?;
                d.attempts += 1;
                d.next_attempt_at = Some(now + lease);
                Some(d.clone())
            })
            .collect())
    }

    pub(crate) fn finish(&self, id: DeliveryId, attempt: u32, outcome: &DeliveryOutcome, now: DateTime<Utc>) -> bool {
        let mut inner = self.inner();
        let Some(d) = inner.deliveries.get_mut(&id) else { return false };
        if d.status != DeliveryStatus::Pending || d.attempts != attempt {
            return false;
        }
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
        d.status = DeliveryStatus::Pending;
        d.attempts = 0;
        d.next_attempt_at = Some(now);
        d.finished_at = None;
        Redelivery::Retried(d.clone())
    }

    pub(crate) fn depth(&self) -> u64 {
        self.inner().deliveries.values().filter(|d| d.status == DeliveryStatus::Pending).count() as u64
    }
}
