//! # pbx-store-memory
//!
//! [`MemoryCallStore`]: the embedded, in-memory [`CallStore`] for pbx, and its default.
//! It keeps everything in the process: fast, and gone when the process ends. Use
//! `pbx-store-postgres` when calls must survive a restart.
//!
//! Calls on different ids never contend on the ingest path: the call map is behind a
//! read-write lock taken for writing only to insert a new call, and each call has its
//! own mutex, held only for the few microseconds of an in-memory update (never across
//! an `.await`). Calls with pending AI work are also kept in an index ordered by when
//! they fall due, so claiming and `next_due_at` cost the same with 10,000 finished calls
//! as with none; appends never touch it. It passes the whole conformance suite of
//! `pbx_core::testkit`.
//!
//! ```
//! use std::sync::Arc;
//! use pbx_core::prelude::*;
//! use pbx_store_memory::MemoryCallStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::new(Arc::new(MemoryCallStore::new()), GatewayConfig::default())?;
//! let call = CallId::new("call-1")?;
//! gateway.ingest(call.clone(), Packet::new(1, "audio_chunk_1", 123.45)?).await?;
//! assert_eq!(gateway.call(&call).await?.ordering.counters.received, 1);
//! # Ok(()) }
//! ```

use std::collections::btree_map::Entry as TreeEntry;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pbx_core::ai::AiResult;
use pbx_core::events::{EventBody, EventId, EventPage, anomaly_event_due};
use pbx_core::id::{CallId, WorkerId};
use pbx_core::media::MediaFormat;
use pbx_core::media::notes::{StreamInfo, StreamNote, StreamSignal};
use pbx_core::ordering::{OrderingCounters, OrderingReport, SeqRange, missing_ranges};
use pbx_core::packet::{NewPacket, StoredPacket};
use pbx_core::retention::{KEPT_MISSING_RANGES, MAX_SWEEP_BATCH, PacketsSwept, Swept, kept_report};
use pbx_core::state::{CallState, Transition, Trigger, transition};
use pbx_core::store::{
    Appended, AttemptFailure, AttemptRef, CallPage, CallSnapshot, CallStore, CallSummary, Claim, Lease, ListQuery,
    MAX_LIST_LIMIT, Opened, PacketOutcome, PacketRejection, StoreError,
};
use pbx_core::webhooks::{Delivery, DeliveryId, DeliveryOutcome, NewDelivery, Redelivery};

mod events;
mod outbox;

pub use events::DEFAULT_EVENT_CAPACITY;
pub use outbox::KEPT_DELIVERIES;

/// The in-memory [`CallStore`]. See the crate docs.
#[derive(Debug, Default)]
pub struct MemoryCallStore {
    /// The event log: a ring of the newest [`DEFAULT_EVENT_CAPACITY`] events (or as
    /// set by [`MemoryCallStore::with_event_capacity`]). Pushed to under the lock of the
    /// call an event is about (lock order: a call, then this).
    events: events::EventLog,
    calls: RwLock<HashMap<CallId, Arc<Mutex<Call>>>>,
    /// Every call with pending AI work, by when it falls due ([`Call::due_at`]): claims
    /// and `next_due_at` read it instead of scanning every call. Updated under the call's
    /// lock (lock order: a call, then this), and never touched by appends.
    due: Mutex<BTreeSet<(DateTime<Utc>, CallId)>>,
    /// Finished calls, for retention's sweeps ([`Call::retention_keys`]); kept in step
    /// like `due`, with the same lock order.
    finished: Mutex<Finished>,
    /// The webhook outbox.
    outbox: outbox::Outbox,
}

/// Finished calls by when they finished.
#[derive(Debug, Default)]
struct Finished {
    /// ARCHIVED and FAILED calls: what `sweep_calls` reads.
    terminal: BTreeSet<(DateTime<Utc>, CallId)>,
    /// ARCHIVED calls that still have their packets: what `sweep_packets` reads.
    with_packets: BTreeSet<(DateTime<Utc>, CallId)>,
}

/// What a call keeps once its packets are swept.
#[derive(Debug, Clone)]
struct SweptPackets {
    info: PacketsSwept,
    /// Per channel: the lowest missing ranges, and whether there were more.
    kept: Vec<(Vec<SeqRange>, bool)>,
}

/// One call and its packets.
#[derive(Debug)]
struct Call {
    id: CallId,
    state: CallState,
    media_format: Option<MediaFormat>,
    /// Per channel, index = channel; at least channel 0.
    counters: Vec<OrderingCounters>,
    /// Per channel, when its last ordering-anomaly event was written.
    anomaly_event_at: Vec<Option<DateTime<Utc>>>,
    packets: BTreeMap<(u8, u64), StoredPacket>,
    attempts: u32,
    failures: u32,
    next_attempt_at: Option<DateTime<Utc>>,
    lease: Option<Lease>,
    last_error: Option<String>,
    result: Option<AiResult>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_packet_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    swept: Option<SweptPackets>,
    streams: Vec<StreamInfo>,
    signals: Vec<StreamSignal>,
    /// Deleted by `sweep_calls`: whoever looked the call up before it went and locks
    /// it after finds it gone (an append then creates the call anew).
    deleted: bool,
}

fn lock(call: &Mutex<Call>) -> MutexGuard<'_, Call> {
    // Nothing panics while holding a call's lock; if something ever did, the call's
    // data is still whole (every update is a few assignments), so carry on.
    call.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

impl Call {
    fn new(id: CallId, now: DateTime<Utc>) -> Self {
        Self {
            id,
            state: CallState::InProgress,
            media_format: None,
            counters: vec![OrderingCounters::default()],
            anomaly_event_at: vec![None],
            packets: BTreeMap::new(),
            attempts: 0,
            failures: 0,
            next_attempt_at: None,
            lease: None,
            last_error: None,
            result: None,
            created_at: now,
            updated_at: now,
            last_packet_at: now,
            completed_at: None,
            finished_at: None,
            swept: None,
            streams: Vec::new(),
            signals: Vec::new(),
            deleted: false,
        }
    }

    /// The call's keys in [`Finished`]: `(terminal, with_packets)`.
    fn retention_keys(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let finished = self.finished_at.filter(|_| self.state.is_terminal());
        let with_packets = finished.filter(|_| self.state == CallState::Archived && self.swept.is_none());
        (finished, with_packets)
    }

    /// [`StoreError::NotFound`] once deleted.
    fn live(&self) -> Result<(), StoreError> {
        if self.deleted { Err(StoreError::NotFound { call_id: self.id.clone() }) } else { Ok(()) }
    }

    /// Deletes the packets, keeping what [`SweptPackets`] says.
    fn sweep_packets(&mut self, now: DateTime<Utc>) -> u64 {
        let kept = (0u8..)
            .zip(&self.counters)
            .map(|(channel, counters)| {
                if counters.missing() == 0 {
                    return (Vec::new(), false);
                }
                let seqs = self.packets.range((channel, 0)..=(channel, u64::MAX)).map(|(&(_, seq), _)| seq);
                missing_ranges(seqs, KEPT_MISSING_RANGES)
            })
            .collect();
        let packets = self.packets.len() as u64;
        let bytes = self.packets.values().map(|p| p.data.bytes().len() as u64).sum();
        self.packets = BTreeMap::new();
        self.swept = Some(SweptPackets { info: PacketsSwept { swept_at: now, packets, bytes }, kept });
        self.updated_at = now;
        packets
    }

    fn apply(&self, trigger: Trigger) -> Result<Transition, StoreError> {
        transition(self.state, trigger)
            .map_err(|source| StoreError::InvalidTransition { call_id: self.id.clone(), source })
    }

    fn append(&mut self, new: &NewPacket, now: DateTime<Utc>) -> PacketOutcome {
        if !self.state.accepts_packets() {
            return Err(PacketRejection::CallClosed { call_id: self.id.clone(), state: self.state });
        }
        let (channel, sequence) = (new.packet.channel(), new.packet.sequence());
        if self.counters.len() <= usize::from(channel) {
            self.counters.resize(usize::from(channel) + 1, OrderingCounters::default());
        }
        // One walk of the tree (entry), not a lookup and then an insert.
        let order = match self.packets.entry((channel, sequence)) {
            TreeEntry::Occupied(stored) => {
                if stored.get().data != *new.packet.data() {
                    return Err(PacketRejection::Conflict { call_id: self.id.clone(), sequence });
                }
                self.counters[usize::from(channel)].observe(sequence, true)
            }
            TreeEntry::Vacant(slot) => {
                slot.insert(StoredPacket {
                    channel,
                    sequence,
                    data: new.packet.data().clone(),
                    timestamp: new.packet.timestamp(),
                    received_at: now,
                });
                self.last_packet_at = now;
                self.counters[usize::from(channel)].observe(sequence, false)
            }
        };
        self.updated_at = now;
        Ok(Appended { order, created_call: false })
    }

    fn hang_up(&mut self, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        let t = self.apply(Trigger::HangUp)?;
        if t.applied {
            self.state = t.to;
            self.completed_at = Some(now);
            self.next_attempt_at = Some(now);
            self.updated_at = now;
        }
        Ok(t)
    }

    /// When the call's AI work falls due, if it is pending at all.
    fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.state, &self.lease) {
            (CallState::ProcessingAi, Some(lease)) => Some(lease.expires_at),
            (CallState::Completed | CallState::ProcessingAi, None) => self.next_attempt_at,
            _ => None,
        }
    }

    /// The lease check every fenced write makes.
    fn fence(&self, attempt: &AttemptRef) -> Result<(), StoreError> {
        if self.state == CallState::ProcessingAi && self.lease.is_some() && self.attempts == attempt.attempt {
            Ok(())
        } else {
            Err(StoreError::Fenced { call_id: self.id.clone(), attempt: attempt.attempt })
        }
    }

    fn snapshot(&self, max_missing_ranges: usize) -> CallSnapshot {
        let channel_ordering: Vec<OrderingReport> = self
            .counters
            .iter()
            .zip(0u8..)
            .map(|(counters, channel)| {
                if let Some((kept, truncated)) = self.swept.as_ref().and_then(|s| s.kept.get(usize::from(channel))) {
                    return kept_report(*counters, kept, *truncated, max_missing_ranges);
                }
                let (missing, truncated) = if counters.missing() == 0 {
                    (Vec::new(), false)
                } else {
                    let seqs = self.packets.range((channel, 0)..=(channel, u64::MAX)).map(|(&(_, seq), _)| seq);
                    missing_ranges(seqs, max_missing_ranges)
                };
                OrderingReport { counters: *counters, missing_ranges: missing, missing_ranges_truncated: truncated }
            })
            .collect();
        CallSnapshot {
            call_id: self.id.clone(),
            state: self.state,
            media_format: self.media_format,
            ordering: channel_ordering[0].clone(),
            channel_ordering,
            attempts: self.attempts,
            failures: self.failures,
            next_attempt_at: self.next_attempt_at,
            lease: self.lease.clone(),
            last_error: self.last_error.clone(),
            result: self.result.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_packet_at: self.last_packet_at,
            completed_at: self.completed_at,
            finished_at: self.finished_at,
            packets_swept: self.swept.as_ref().map(|s| s.info),
            streams: self.streams.clone(),
            signals: self.signals.clone(),
        }
    }
}

impl MemoryCallStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose event log keeps the newest `capacity` events (at least 1).
    pub fn with_event_capacity(capacity: usize) -> Self {
        Self { events: events::EventLog::with_capacity(capacity), ..Self::default() }
    }

    /// Writes the state change of an applied transition.
    fn push_transition(&self, call: &Call, t: &Transition, now: DateTime<Utc>) {
        if t.applied && t.from != t.to {
            self.events.push(&call.id, now, [EventBody::StateChanged { from: t.from, to: t.to }]);
        }
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// `true` when the store holds no call.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CallId, Arc<Mutex<Call>>>> {
        self.calls.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn call(&self, call_id: &CallId) -> Result<Arc<Mutex<Call>>, StoreError> {
        self.read().get(call_id).cloned().ok_or_else(|| StoreError::NotFound { call_id: call_id.clone() })
    }

    /// Runs `f` on the call under its lock, creating it IN_PROGRESS if new (`true` when
    /// this call created it). A new call is locked before it is published in the map, so
    /// nobody sees it before its first packet is stored (no empty call can be read,
    /// listed or hung up).
    fn with_call_or_create<T>(&self, call_id: &CallId, now: DateTime<Utc>, f: impl FnOnce(&mut Call, bool) -> T) -> T {
        let existing = self.read().get(call_id).cloned();
        if let Some(call) = existing {
            let mut guard = lock(&call);
            if !guard.deleted {
                return f(&mut guard, false);
            }
            // Deleted since the lookup, and gone from the map: start the call anew.
        }
        let fresh = Arc::new(Mutex::new(Call::new(call_id.clone(), now)));
        let mut guard = lock(&fresh);
        let raced = {
            let mut calls = self.calls.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            match calls.entry(call_id.clone()) {
                Entry::Occupied(entry) => Some(entry.get().clone()),
                Entry::Vacant(entry) => {
                    entry.insert(fresh.clone());
                    None
                }
            }
        };
        match raced {
            Some(call) => {
                drop(guard);
                // Published by another append (`sweep_calls` never deletes a call that
                // is still IN_PROGRESS, so it is live).
                f(&mut lock(&call), false)
            }
            None => f(&mut guard, true),
        }
    }

    /// Every call, for scans (listing, claiming, idle sweeps).
    fn all(&self) -> Vec<Arc<Mutex<Call>>> {
        self.read().values().cloned().collect()
    }

    /// Runs a fenced write on an attempt's call.
    fn fenced<T>(
        &self,
        attempt: &AttemptRef,
        write: impl FnOnce(&mut Call) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let call = self.call(&attempt.call_id)?;
        let mut call = lock(&call);
        call.fence(attempt)?;
        self.write(&mut call, write)
    }

    /// Runs `write` on a locked call and keeps the due index in step with it. Every
    /// change to a call's AI bookkeeping goes through here.
    fn write<T>(
        &self,
        call: &mut Call,
        write: impl FnOnce(&mut Call) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        call.live()?;
        let before = call.due_at();
        let keys_before = call.retention_keys();
        let out = write(call);
        let after = call.due_at();
        let keys_after = call.retention_keys();
        if keys_before != keys_after {
            let mut finished = self.finished_index();
            let Finished { terminal, with_packets } = &mut *finished;
            let id = &call.id;
            for (set, was, is) in [(terminal, keys_before.0, keys_after.0), (with_packets, keys_before.1, keys_after.1)]
            {
                if was != is {
                    if let Some(at) = was {
                        set.remove(&(at, id.clone()));
                    }
                    if let Some(at) = is {
                        set.insert((at, id.clone()));
                    }
                }
            }
        }
        if before != after {
            let mut due = self.due_index();
            if let Some(at) = before {
                due.remove(&(at, call.id.clone()));
            }
            if let Some(at) = after {
                due.insert((at, call.id.clone()));
            }
        }
        out
    }

    fn finished_index(&self) -> MutexGuard<'_, Finished> {
        // Every update is a remove and an insert; a panic cannot leave it half done.
        self.finished.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Up to `limit` calls of `pick`'s set in [`Finished`] finished before `before`.
    fn finished_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
        pick: impl Fn(&Finished) -> &BTreeSet<(DateTime<Utc>, CallId)>,
    ) -> Result<Vec<CallId>, StoreError> {
        if limit > MAX_SWEEP_BATCH {
            return Err(StoreError::InvalidArgument(format!("limit must be 0..={MAX_SWEEP_BATCH}, got {limit}")));
        }
        let index = self.finished_index();
        Ok(pick(&index).iter().take_while(|(at, _)| *at < before).take(limit).map(|(_, id)| id.clone()).collect())
    }

    fn due_index(&self) -> MutexGuard<'_, BTreeSet<(DateTime<Utc>, CallId)>> {
        // Every update is one remove and one insert; a panic cannot leave it half done.
        self.due.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Up to `n` index entries due at `now`, after `cursor` (exclusive).
    fn due_after(
        &self,
        cursor: Option<&(DateTime<Utc>, CallId)>,
        now: DateTime<Utc>,
        n: usize,
    ) -> Vec<(DateTime<Utc>, CallId)> {
        let due = self.due_index();
        let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        due.range((lower, Bound::Unbounded)).take_while(|(at, _)| *at <= now).take(n).cloned().collect()
    }
}

#[async_trait]
impl CallStore for MemoryCallStore {
    async fn append(&self, batch: &[NewPacket], now: DateTime<Utc>) -> Result<Vec<PacketOutcome>, StoreError> {
        // Group by call, keeping input order within each call, so each call is locked
        // once per batch.
        let mut by_call: Vec<(&CallId, Vec<usize>)> = Vec::new();
        let mut index: HashMap<&CallId, usize> = HashMap::new();
        for (i, p) in batch.iter().enumerate() {
            let slot = *index.entry(&p.call_id).or_insert_with(|| {
                by_call.push((&p.call_id, Vec::new()));
                by_call.len() - 1
            });
            by_call[slot].1.push(i);
        }
        let mut outcomes: Vec<Option<PacketOutcome>> = vec![None; batch.len()];
        for (call_id, positions) in by_call {
            self.with_call_or_create(call_id, now, |call, created| {
                let mut first = created;
                let mut anomalous: Vec<u8> = Vec::new();
                for i in positions {
                    let mut outcome = call.append(&batch[i], now);
                    if let Ok(appended) = &mut outcome {
                        appended.created_call = std::mem::take(&mut first);
                        let channel = batch[i].packet.channel();
                        if appended.order.is_anomaly() && !anomalous.contains(&channel) {
                            anomalous.push(channel);
                        }
                    }
                    outcomes[i] = Some(outcome);
                }
                let mut bodies = Vec::new();
                if created {
                    bodies.push(EventBody::CallCreated {});
                }
                anomalous.sort_unstable();
                for channel in anomalous {
                    let c = usize::from(channel);
                    if call.anomaly_event_at.len() <= c {
                        call.anomaly_event_at.resize(c + 1, None);
                    }
                    if anomaly_event_due(call.anomaly_event_at[c], now) {
                        call.anomaly_event_at[c] = Some(now);
                        bodies.push(EventBody::anomaly(channel, call.counters[c]));
                    }
                }
                self.events.push(&call.id, now, bodies);
            });
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::backend("internal error: a packet was left unanswered")))
            .collect()
    }

    async fn complete(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        let call = self.call(call_id)?;
        let mut call = lock(&call);
        let t = self.write(&mut call, |call| call.hang_up(now))?;
        self.push_transition(&call, &t, now);
        Ok(t)
    }

    async fn get(&self, call_id: &CallId, max_missing_ranges: usize) -> Result<CallSnapshot, StoreError> {
        let call = self.call(call_id)?;
        let call = lock(&call);
        call.live()?;
        Ok(call.snapshot(max_missing_ranges))
    }

    async fn list(&self, query: &ListQuery) -> Result<CallPage, StoreError> {
        if query.limit == 0 || query.limit > MAX_LIST_LIMIT {
            return Err(StoreError::InvalidArgument(format!(
                "limit must be 1..={MAX_LIST_LIMIT}, got {}",
                query.limit
            )));
        }
        let mut candidates: Vec<(CallId, Arc<Mutex<Call>>)> = self
            .read()
            .iter()
            .filter(|(id, _)| query.after.as_ref().is_none_or(|after| *id > after))
            .map(|(id, call)| (id.clone(), call.clone()))
            .collect();
        candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut calls = Vec::with_capacity(query.limit.min(candidates.len()));
        for (_, call) in candidates {
            let call = lock(&call);
            if call.deleted || query.state.is_some_and(|s| s != call.state) {
                continue;
            }
            calls.push(CallSummary {
                call_id: call.id.clone(),
                state: call.state,
                counters: call.counters[0],
                attempts: call.attempts,
                next_attempt_at: call.next_attempt_at,
                sentiment: call.result.as_ref().map(|r| r.sentiment),
                created_at: call.created_at,
                last_packet_at: call.last_packet_at,
                completed_at: call.completed_at,
                updated_at: call.updated_at,
            });
            if calls.len() == query.limit {
                break;
            }
        }
        let next = if calls.len() == query.limit { calls.last().map(|c| c.call_id.clone()) } else { None };
        Ok(CallPage { calls, next })
    }

    async fn open(&self, call_id: &CallId, format: MediaFormat, now: DateTime<Utc>) -> Result<Opened, StoreError> {
        self.with_call_or_create(call_id, now, |call, created| {
            if created {
                self.events.push(&call.id, now, [EventBody::CallCreated {}]);
            }
            match call.media_format {
                Some(declared) if declared != format => {
                    Err(StoreError::FormatConflict { call_id: call_id.clone(), declared, requested: format })
                }
                Some(_) => Ok(Opened { created, state: call.state }),
                None => {
                    call.media_format = Some(format);
                    if !created {
                        call.updated_at = now;
                    }
                    Ok(Opened { created, state: call.state })
                }
            }
        })
    }

    async fn packets(&self, call_id: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
        let call = self.call(call_id)?;
        let call = lock(&call);
        Ok(call.packets.values().cloned().collect())
    }

    async fn packet_page(
        &self,
        call_id: &CallId,
        channel: u8,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredPacket>, StoreError> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(StoreError::InvalidArgument(format!("limit must be 1..={MAX_LIST_LIMIT}, got {limit}")));
        }
        let call = self.call(call_id)?;
        let call = lock(&call);
        let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
        Ok(call.packets.range((channel, first)..=(channel, u64::MAX)).take(limit).map(|(_, p)| p.clone()).collect())
    }

    async fn claim(
        &self,
        worker: &WorkerId,
        lease: Duration,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Walk the due index oldest first, a page at a time (the index lock is never held
        // while a call is locked here); re-check each call under its own lock, since
        // another claimer may have taken it since the page was read.
        let mut claims = Vec::new();
        let mut cursor = None;
        while claims.len() < limit {
            let page = self.due_after(cursor.as_ref(), now, limit - claims.len());
            let Some(last) = page.last().cloned() else { break };
            cursor = Some(last);
            for (_, call_id) in page {
                let Ok(call) = self.call(&call_id) else { continue };
                let mut call = lock(&call);
                if call.due_at().is_none_or(|at| at > now) {
                    continue;
                }
                let claim = self.write(&mut call, |call| {
                    let rescued = call.state == CallState::ProcessingAi && call.lease.is_some();
                    let t = call.apply(Trigger::Claim)?;
                    let expires_at = lease_until(now, lease);
                    call.state = t.to;
                    call.attempts = call.attempts.saturating_add(1);
                    call.lease = Some(Lease { owner: worker.clone(), expires_at });
                    call.updated_at = now;
                    Ok((
                        t,
                        Claim {
                            call_id: call.id.clone(),
                            attempt: call.attempts,
                            failures: call.failures,
                            lease_expires_at: expires_at,
                            rescued,
                        },
                    ))
                })?;
                let (t, claim) = claim;
                let started = EventBody::AttemptStarted { attempt: claim.attempt, rescued: claim.rescued };
                self.events.push(&call.id, now, [started]);
                self.push_transition(&call, &t, now);
                claims.push(claim);
            }
        }
        Ok(claims)
    }

    async fn heartbeat(
        &self,
        attempt: &AttemptRef,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.fenced(attempt, |call| {
            let expires_at = lease_until(now, lease);
            if let Some(l) = call.lease.as_mut() {
                l.expires_at = expires_at;
            }
            call.updated_at = now;
            Ok(expires_at)
        })
    }

    async fn record_success(
        &self,
        attempt: &AttemptRef,
        result: &AiResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.fenced(attempt, |call| {
            let t = call.apply(Trigger::Succeed)?;
            call.state = t.to;
            call.result = Some(result.clone());
            call.lease = None;
            call.next_attempt_at = None;
            call.finished_at = Some(now);
            call.updated_at = now;
            let done = [EventBody::AttemptSucceeded { attempt: attempt.attempt }, EventBody::transcript(result)];
            self.events.push(&call.id, now, done);
            self.push_transition(call, &t, now);
            Ok(())
        })
    }

    async fn record_failure(
        &self,
        attempt: &AttemptRef,
        failure: &AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<CallState, StoreError> {
        self.fenced(attempt, |call| {
            let t = call.apply(if failure.retry_at.is_some() { Trigger::RetryLater } else { Trigger::GiveUp })?;
            call.state = t.to;
            call.failures = call.failures.saturating_add(1);
            call.last_error = Some(failure.error.clone());
            call.lease = None;
            call.next_attempt_at = failure.retry_at;
            if failure.retry_at.is_none() {
                call.finished_at = Some(now);
            }
            call.updated_at = now;
            let failed = EventBody::AttemptFailed {
                attempt: attempt.attempt,
                error: failure.error.clone(),
                retry_at: failure.retry_at,
            };
            self.events.push(&call.id, now, [failed]);
            self.push_transition(call, &t, now);
            Ok(call.state)
        })
    }

    async fn release(&self, attempt: &AttemptRef, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.fenced(attempt, |call| {
            call.lease = None;
            call.next_attempt_at = Some(now);
            call.updated_at = now;
            Ok(())
        })
    }

    async fn complete_idle(
        &self,
        idle_since: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<CallId>, StoreError> {
        let mut idle: Vec<(DateTime<Utc>, CallId, Arc<Mutex<Call>>)> = self
            .all()
            .into_iter()
            .filter_map(|call| {
                let c = lock(&call);
                let found = (c.state == CallState::InProgress && c.last_packet_at < idle_since)
                    .then(|| (c.last_packet_at, c.id.clone()));
                drop(c);
                found.map(|(at, id)| (at, id, call))
            })
            .collect();
        idle.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut done = Vec::new();
        for (_, id, call) in idle {
            if done.len() == limit {
                break;
            }
            let mut call = lock(&call);
            // A packet may have arrived since the scan.
            if call.state == CallState::InProgress && call.last_packet_at < idle_since {
                let t = self.write(&mut call, |call| call.hang_up(now))?;
                self.push_transition(&call, &t, now);
                if t.applied {
                    done.push(id);
                }
            }
        }
        Ok(done)
    }

    async fn redrive(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        let call = self.call(call_id)?;
        let mut call = lock(&call);
        self.write(&mut call, |call| {
            let t = call.apply(Trigger::Redrive)?;
            call.state = t.to;
            call.failures = 0;
            call.next_attempt_at = Some(now);
            call.lease = None;
            call.finished_at = None;
            call.updated_at = now;
            self.events.push(&call.id, now, [EventBody::Redriven {}]);
            self.push_transition(call, &t, now);
            Ok(t)
        })
    }

    async fn note_stream(&self, call_id: &CallId, note: &StreamNote, now: DateTime<Utc>) -> Result<(), StoreError> {
        note.to_json()?;
        let call = self.call(call_id)?;
        let mut call = lock(&call);
        call.live()?;
        let held = match note {
            StreamNote::Started(_) => call.streams.len(),
            StreamNote::Signal(_) => call.signals.len(),
        };
        if held >= note.limit() {
            return Err(note.over_limit());
        }
        match note {
            StreamNote::Started(info) => call.streams.push((**info).clone()),
            StreamNote::Signal(signal) => call.signals.push(signal.clone()),
        }
        call.updated_at = now;
        Ok(())
    }

    async fn sweep_packets(
        &self,
        finished_before: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        for id in self.finished_before(finished_before, limit, |f| &f.with_packets)? {
            let Ok(call) = self.call(&id) else { continue };
            let mut call = lock(&call);
            let (_, with_packets) = call.retention_keys();
            if call.deleted || with_packets.is_none_or(|at| at >= finished_before) {
                continue;
            }
            swept.packets += call.sweep_packets(now);
            swept.calls += 1;
            if let Some(at) = with_packets {
                self.finished_index().with_packets.remove(&(at, id));
            }
        }
        Ok(swept)
    }

    async fn sweep_calls(&self, finished_before: DateTime<Utc>, limit: usize) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        for id in self.finished_before(finished_before, limit, |f| &f.terminal)? {
            let Ok(call) = self.call(&id) else { continue };
            let mut call = lock(&call);
            let (terminal, with_packets) = call.retention_keys();
            if call.deleted || terminal.is_none_or(|at| at >= finished_before) {
                continue;
            }
            call.deleted = true;
            swept.calls += 1;
            swept.packets += std::mem::take(&mut call.packets).len() as u64;
            let mut index = self.finished_index();
            if let Some(at) = terminal {
                index.terminal.remove(&(at, id.clone()));
            }
            if let Some(at) = with_packets {
                index.with_packets.remove(&(at, id.clone()));
            }
            drop(index);
            // Lock order: a call, then the map (as a new call is published).
            self.calls.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
        }
        Ok(swept)
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        self.outbox.prune(before, limit)
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.due_index().first().map(|(at, _)| *at))
    }

    async fn count_by_state(&self) -> Result<Vec<(CallState, u64)>, StoreError> {
        let mut counts: Vec<(CallState, u64)> = Vec::new();
        for call in self.all() {
            let call = lock(&call);
            if call.deleted {
                continue;
            }
            let state = call.state;
            drop(call);
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state, 1)),
            }
        }
        Ok(counts)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn events(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        self.events.page(after, limit)
    }

    async fn record_event(&self, call_id: &CallId, event: &EventBody, now: DateTime<Utc>) -> Result<(), StoreError> {
        let call = self.call(call_id)?;
        let call = lock(&call);
        self.events.push(&call.id, now, [event.clone()]);
        Ok(())
    }

    async fn prune_events(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        // A webhook cursor alive within the retention window holds the log back.
        Ok(self.events.prune(before, limit, self.outbox.pin(before)))
    }

    async fn outbox_open(&self, start: EventId, now: DateTime<Utc>) -> Result<EventId, StoreError> {
        Ok(self.outbox.open(start, now))
    }

    async fn outbox_enqueue(
        &self,
        from: EventId,
        to: EventId,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.outbox.enqueue(from, to, deliveries, now)
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.outbox.claim(now, lease, limit)
    }

    async fn finish_delivery(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.outbox.finish(id, attempt, outcome, now))
    }

    async fn deliveries(&self, limit: usize, before: Option<DeliveryId>) -> Result<Vec<Delivery>, StoreError> {
        self.outbox.list(limit, before)
    }

    async fn retry_delivery(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<Redelivery, StoreError> {
        Ok(self.outbox.retry(id, now))
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        Ok(self.outbox.depth())
    }

    fn event_signal(&self) -> Option<tokio::sync::watch::Receiver<EventId>> {
        Some(self.events.signal())
    }

    /// No: an append is a per-call lock and a map insert, cheaper than the group
    /// commit's two hand-offs between tasks (1.28 times the throughput relative to
    /// `/healthz` without them, BENCHMARKS.md).
    fn prefers_group_commit(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use pbx_core::packet::Packet;
    use pbx_core::testkit::conformance::at;

    use super::*;

    fn packet(call: &str, seq: i64) -> NewPacket {
        NewPacket::new(CallId::new(call).expect("id"), Packet::new(seq, "x", 0.0).expect("packet"))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    /// While one call's lock is held, appends to another call (existing or new) and reads
    /// of it run to completion on another thread: there is no store-wide lock on the
    /// ingest path. The wait is bounded so a regression fails instead of hanging.
    #[test]
    fn a_held_call_does_not_block_other_calls() {
        let store = Arc::new(MemoryCallStore::new());
        let rt = runtime();
        rt.block_on(store.append(&[packet("held", 1), packet("other", 1)], at(0))).expect("append");
        let held = store.call(&CallId::new("held").expect("id")).expect("held call");
        let guard = lock(&held);
        let (tx, rx) = mpsc::channel();
        let other = store.clone();
        std::thread::spawn(move || {
            let rt = runtime();
            let out = rt.block_on(other.append(&[packet("other", 2), packet("new", 1)], at(1)));
            let snap = rt.block_on(other.get(&CallId::new("other").expect("id"), 0));
            let _ = tx.send((out.map(|o| o.iter().all(Result::is_ok)), snap.map(|s| s.ordering.counters.received)));
        });
        let (appended, received) = rx.recv_timeout(Duration::from_secs(60)).expect("other calls were not blocked");
        assert!(appended.expect("append"));
        assert_eq!(received.expect("get"), 2);
        drop(guard);
        assert_eq!(store.len(), 3);
    }

    /// A poisoned call lock is recovered, not propagated as a panic.
    #[test]
    fn a_poisoned_call_lock_is_recovered() {
        let store = Arc::new(MemoryCallStore::new());
        let rt = runtime();
        rt.block_on(store.append(&[packet("c", 1)], at(0))).expect("append");
        let call = store.call(&CallId::new("c").expect("id")).expect("call");
        let poisoner = call.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the call's lock");
        })
        .join();
        assert!(call.is_poisoned());
        let out = rt.block_on(store.append(&[packet("c", 2)], at(1))).expect("append");
        assert!(out[0].is_ok());
        assert_eq!(
            rt.block_on(store.get(&CallId::new("c").expect("id"), 0)).expect("get").ordering.counters.received,
            2
        );
    }
}
