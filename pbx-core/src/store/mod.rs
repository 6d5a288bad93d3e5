//! The storage boundary: [`CallStore`], its records and its errors.
//!
//! Every backend (memory, PostgreSQL) implements the same trait and passes the same
//! conformance suite (`pbx_core::call_store_conformance!`, feature `testkit`).
//!
//! Time is an argument: every method that depends on the clock takes `now` from the
//! caller, so backends agree on time and tests control it without sleeping.

use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ai::AiResult;
use crate::events::{EventBody, EventId, EventPage};
use crate::id::{CallId, WorkerId};
use crate::media::MediaFormat;
use crate::ordering::{OrderingCounters, OrderingReport, PacketOrder};
use crate::packet::{NewPacket, StoredPacket};
use crate::state::{CallState, InvalidTransition, Transition};

/// A boxed error kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The largest page [`CallStore::list`] returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// A store operation that failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No call has this id.
    #[error("call {call_id} not found")]
    NotFound {
        /// The unknown id.
        call_id: CallId,
    },
    /// The state machine refuses the operation in the call's state.
    #[error("call {call_id}: {source}")]
    InvalidTransition {
        /// The call.
        call_id: CallId,
        /// What was refused.
        #[source]
        source: InvalidTransition,
    },
    /// The attempt no longer holds the call's lease: a newer attempt claimed it, or it
    /// already recorded its outcome. The stale worker's result is refused.
    #[error("call {call_id}: attempt {attempt} no longer holds the lease")]
    Fenced {
        /// The call.
        call_id: CallId,
        /// The stale attempt.
        attempt: u32,
    },
    /// The call was declared with another media format; the first declaration stays.
    #[error("call {call_id} has media format {declared}; it cannot change to {requested}")]
    FormatConflict {
        /// The call.
        call_id: CallId,
        /// Its format.
        declared: MediaFormat,
        /// The refused one.
        requested: MediaFormat,
    },
    /// An argument is out of range (a limit of 0, a malformed cursor).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend cannot be reached right now; retrying later can succeed.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// Any other backend failure.
    #[error("store backend error: {source}")]
    Backend {
        /// What went wrong.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wraps an error as [`StoreError::Unavailable`].
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        StoreError::Unavailable { source: source.into() }
    }

    /// Wraps an error as [`StoreError::Backend`].
    pub fn backend(source: impl Into<BoxError>) -> Self {
        StoreError::Backend { source: source.into() }
    }

    /// `true` when retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Why one packet of a batch was refused (the rest of the batch is unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketRejection {
    /// The sequence was stored before with different data; the first data is kept.
    #[error("call {call_id}: sequence {sequence} was already stored with different data")]
    Conflict {
        /// The call.
        call_id: CallId,
        /// The conflicting sequence.
        sequence: u64,
    },
    /// The call no longer takes packets.
    #[error("call {call_id} is {state} and takes no more packets")]
    CallClosed {
        /// The call.
        call_id: CallId,
        /// Its state.
        state: CallState,
    },
}

/// A packet the store accepted: newly stored, or an identical duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The ordering verdict; [`PacketOrder::Duplicate`] means nothing new was stored.
    pub order: PacketOrder,
    /// `true` when this packet created the call.
    pub created_call: bool,
}

impl Appended {
    /// `true` when the packet was not stored again.
    pub fn is_duplicate(&self) -> bool {
        matches!(self.order, PacketOrder::Duplicate)
    }
}

/// One packet's answer in a batch append.
pub type PacketOutcome = Result<Appended, PacketRejection>;

/// A lease on a call's AI work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding it.
    pub owner: WorkerId,
    /// When it expires unless extended.
    pub expires_at: DateTime<Utc>,
}

/// Everything known about a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The call.
    pub call_id: CallId,
    /// Its state.
    pub state: CallState,
    /// The media format declared for the call ([`CallStore::open`]); `None` when the
    /// call was created by its packets alone, whose format is the deployment's
    /// default.
    pub media_format: Option<MediaFormat>,
    /// Ordering counters and missing ranges of channel 0.
    pub ordering: OrderingReport,
    /// Ordering per channel, index = channel: one entry per channel that received a
    /// packet, at least channel 0 (the same as `ordering`).
    pub channel_ordering: Vec<OrderingReport>,
    /// AI attempts started (claims); the number of the current or last attempt.
    pub attempts: u32,
    /// Failed AI attempts counted against the retry policy (rescues of expired leases
    /// are not failures).
    pub failures: u32,
    /// When the next AI attempt is due (COMPLETED, or PROCESSING_AI awaiting a retry).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The current lease, while a worker holds the call.
    pub lease: Option<Lease>,
    /// The last AI error.
    pub last_error: Option<String>,
    /// The AI result, once ARCHIVED.
    pub result: Option<AiResult>,
    /// When the first packet arrived.
    pub created_at: DateTime<Utc>,
    /// When anything last changed.
    pub updated_at: DateTime<Utc>,
    /// When the last packet was stored.
    pub last_packet_at: DateTime<Utc>,
    /// When the call hung up.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it reached ARCHIVED or FAILED.
    pub finished_at: Option<DateTime<Utc>>,
    /// What its packets were, once retention deleted them ([`crate::retention`]);
    /// `None` while the call keeps them.
    pub packets_swept: Option<crate::retention::PacketsSwept>,
    /// The media streams that fed the call, in the order they opened
    /// ([`crate::media::notes`]).
    pub streams: Vec<crate::media::notes::StreamInfo>,
    /// The streams' DTMF digits and marks, in the order they arrived.
    pub signals: Vec<crate::media::notes::StreamSignal>,
}

/// A connection pool's use ([`CallStore::pool_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Connections open.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// What [`CallStore::open`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    /// `true` when the call did not exist and was created (IN_PROGRESS).
    pub created: bool,
    /// The call's state after the operation.
    pub state: CallState,
}

/// One call in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    /// The call.
    pub call_id: CallId,
    /// Its state.
    pub state: CallState,
    /// Its ordering counters.
    pub counters: OrderingCounters,
    /// AI attempts started.
    pub attempts: u32,
    /// When the next AI attempt is due (a scheduled retry, or work not yet claimed).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The sentiment, once ARCHIVED.
    pub sentiment: Option<crate::ai::Sentiment>,
    /// When the first packet arrived.
    pub created_at: DateTime<Utc>,
    /// When the last packet was stored.
    pub last_packet_at: DateTime<Utc>,
    /// When the call hung up.
    pub completed_at: Option<DateTime<Utc>>,
    /// When anything last changed.
    pub updated_at: DateTime<Utc>,
}

/// A listing request: calls in ascending id order, after `after`, optionally in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only calls in this state.
    pub state: Option<CallState>,
    /// Page size, 1 ..= [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// Cursor: only ids strictly greater than this one.
    pub after: Option<CallId>,
}

/// One page of calls.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPage {
    /// The calls, ascending by id.
    pub calls: Vec<CallSummary>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<CallId>,
}

/// A call claimed for AI work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The call.
    pub call_id: CallId,
    /// This attempt's number: the fencing token every later write must present.
    pub attempt: u32,
    /// Failed attempts so far (for the retry policy).
    pub failures: u32,
    /// When the lease expires unless extended.
    pub lease_expires_at: DateTime<Utc>,
    /// `true` when the call was taken over from an expired lease.
    pub rescued: bool,
}

impl Claim {
    /// The (call, attempt) pair that fences this attempt's writes.
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef { call_id: self.call_id.clone(), attempt: self.attempt }
    }
}

/// Identifies one attempt on a call: the fencing token of every lease-held write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptRef {
    /// The call.
    pub call_id: CallId,
    /// The attempt number from its [`Claim`].
    pub attempt: u32,
}

/// A failed attempt, as the processor decided to record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The error, for operators.
    pub error: String,
    /// When to retry; `None` gives up (the call becomes FAILED).
    pub retry_at: Option<DateTime<Utc>>,
}

/// Durable storage of calls and their packets.
///
/// # Contract
/// - [`append`](CallStore::append) answers one outcome per packet, in input order. Each
///   packet's effect is atomic with its call's counters and its state check: a packet
///   answered as stored is stored, and no packet is stored once its call left
///   IN_PROGRESS. A call's first packet creates it (IN_PROGRESS). A packet is keyed by
///   (call, channel, sequence): each channel has its own sequence space and its own
///   ordering counters, so two tracks both counting from 1 never collide. A packet
///   whose key is stored with the same payload (bytes and kind) is a duplicate; with
///   another payload, a conflict.
/// - Claiming hands a due call to exactly one worker. A call is due when COMPLETED, or
///   PROCESSING_AI with a retry due, or PROCESSING_AI with an expired lease (a rescue,
///   which does not count as a failure). Every claim increments `attempts`; writes under
///   the lease present that number and are refused ([`StoreError::Fenced`]) once it is
///   stale.
/// - Methods whose outcome depends on time take `now`.
///
/// # Example: a store that keeps nothing
/// ```
/// # use async_trait::async_trait;
/// # use chrono::{DateTime, Utc};
/// # use std::time::Duration;
/// use pbx_core::prelude::*;
/// use pbx_core::store::*;
///
/// struct Nothing;
///
/// #[async_trait]
/// impl CallStore for Nothing {
///     async fn append(&self, batch: &[NewPacket], _: DateTime<Utc>) -> Result<Vec<PacketOutcome>, StoreError> {
///         Err(StoreError::unavailable("this store keeps nothing"))
///     }
///     async fn complete(&self, id: &CallId, _: DateTime<Utc>) -> Result<Transition, StoreError> {
///         Err(StoreError::NotFound { call_id: id.clone() })
///     }
///     async fn get(&self, id: &CallId, _: usize) -> Result<CallSnapshot, StoreError> {
///         Err(StoreError::NotFound { call_id: id.clone() })
///     }
///     async fn list(&self, _: &ListQuery) -> Result<CallPage, StoreError> {
///         Ok(CallPage { calls: vec![], next: None })
///     }
///     async fn open(&self, id: &CallId, _: MediaFormat, _: DateTime<Utc>) -> Result<Opened, StoreError> {
///         Err(StoreError::unavailable("this store keeps nothing"))
///     }
///     async fn packets(&self, id: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
///         Err(StoreError::NotFound { call_id: id.clone() })
///     }
///     async fn packet_page(&self, id: &CallId, _: u8, _: u64, _: usize) -> Result<Vec<StoredPacket>, StoreError> {
///         Err(StoreError::NotFound { call_id: id.clone() })
///     }
///     async fn claim(&self, _: &WorkerId, _: Duration, _: usize, _: DateTime<Utc>) -> Result<Vec<Claim>, StoreError> {
///         Ok(vec![])
///     }
///     async fn heartbeat(&self, a: &AttemptRef, _: Duration, _: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
///         Err(StoreError::Fenced { call_id: a.call_id.clone(), attempt: a.attempt })
///     }
///     async fn record_success(&self, a: &AttemptRef, _: &AiResult, _: DateTime<Utc>) -> Result<(), StoreError> {
///         Err(StoreError::Fenced { call_id: a.call_id.clone(), attempt: a.attempt })
///     }
///     async fn record_failure(&self, a: &AttemptRef, _: &AttemptFailure, _: DateTime<Utc>) -> Result<CallState, StoreError> {
///         Err(StoreError::Fenced { call_id: a.call_id.clone(), attempt: a.attempt })
///     }
///     async fn release(&self, a: &AttemptRef, _: DateTime<Utc>) -> Result<(), StoreError> {
///         Err(StoreError::Fenced { call_id: a.call_id.clone(), attempt: a.attempt })
///     }
///     async fn complete_idle(&self, _: DateTime<Utc>, _: usize, _: DateTime<Utc>) -> Result<Vec<CallId>, StoreError> {
///         Ok(vec![])
///     }
///     async fn redrive(&self, id: &CallId, _: DateTime<Utc>) -> Result<Transition, StoreError> {
///         Err(StoreError::NotFound { call_id: id.clone() })
///     }
///     async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
///         Ok(None)
///     }
///     async fn ping(&self) -> Result<(), StoreError> {
///         Ok(())
///     }
/// }
///
/// let store: std::sync::Arc<dyn CallStore> = std::sync::Arc::new(Nothing);
/// ```
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Appends a batch of packets, for one call or many, answering one outcome per
    /// packet in input order. The batch is stored whole or not at all. An error means
    /// nothing was stored, except where the store cannot know: a connection lost (or
    /// the call cancelled) after the batch reached a remote store may leave it stored.
    /// Appending the same batch again is safe: what was stored answers `Duplicate`.
    async fn append(&self, batch: &[NewPacket], now: DateTime<Utc>) -> Result<Vec<PacketOutcome>, StoreError>;

    /// Hangs up a call: IN_PROGRESS -> COMPLETED, its AI work due at `now`. A no-op
    /// (`applied == false`) for a call already past IN_PROGRESS.
    async fn complete(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError>;

    /// A call's snapshot, listing at most `max_missing_ranges` missing ranges.
    async fn get(&self, call_id: &CallId, max_missing_ranges: usize) -> Result<CallSnapshot, StoreError>;

    /// One page of calls ([`ListQuery`]); `limit` outside 1 ..= [`MAX_LIST_LIMIT`] is
    /// [`StoreError::InvalidArgument`].
    async fn list(&self, query: &ListQuery) -> Result<CallPage, StoreError>;

    /// Declares a call and its media format before (or with) its first packet:
    /// creates the call IN_PROGRESS if it does not exist. For an existing call, the
    /// first declaration wins: declaring the same format again is a no-op, another one
    /// is [`StoreError::FormatConflict`], and a call created by its packets alone takes
    /// the format declared now. Works in any state (a stream reconnecting after the
    /// call closed learns so from its next append).
    async fn open(&self, call_id: &CallId, format: MediaFormat, now: DateTime<Utc>) -> Result<Opened, StoreError>;

    /// A call's packets, ascending by channel, then sequence.
    async fn packets(&self, call_id: &CallId) -> Result<Vec<StoredPacket>, StoreError>;

    /// One page of a channel's packets: those with a sequence above `after`,
    /// ascending, at most `limit` (1 ..= [`MAX_LIST_LIMIT`]). An unknown call is
    /// [`StoreError::NotFound`]; a channel without packets gives an empty page. What
    /// streaming readers (the recording) use, so a long call is never read whole.
    async fn packet_page(
        &self,
        call_id: &CallId,
        channel: u8,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredPacket>, StoreError>;

    /// Claims up to `limit` due calls for `worker`, each leased until `now + lease`,
    /// oldest due first. Each claimed call is PROCESSING_AI with `attempts` incremented.
    async fn claim(
        &self,
        worker: &WorkerId,
        lease: Duration,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Extends the attempt's lease to `now + lease` and returns the new expiry;
    /// [`StoreError::Fenced`] when the attempt is stale.
    async fn heartbeat(
        &self,
        attempt: &AttemptRef,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError>;

    /// Records success: PROCESSING_AI -> ARCHIVED with the result, lease released.
    async fn record_success(
        &self,
        attempt: &AttemptRef,
        result: &AiResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records a failed attempt: `failures` + 1 and `last_error` set; with `retry_at`
    /// the call stays PROCESSING_AI due then, without it the call becomes FAILED.
    /// Returns the call's new state.
    async fn record_failure(
        &self,
        attempt: &AttemptRef,
        failure: &AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<CallState, StoreError>;

    /// Gives the attempt's lease back unfinished (graceful shutdown): the call is due
    /// again at `now`, and no failure is counted.
    async fn release(&self, attempt: &AttemptRef, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Hangs up to `limit` IN_PROGRESS calls whose last packet is older than
    /// `idle_since`; returns their ids.
    async fn complete_idle(
        &self,
        idle_since: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<CallId>, StoreError>;

    /// Re-drives a FAILED call: -> COMPLETED, failures reset, due at `now`. Any other
    /// state is [`StoreError::InvalidTransition`].
    async fn redrive(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError>;

    /// When the earliest AI work falls due (possibly in the past), if any is pending.
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Resolves when another process may have made AI work due (PostgreSQL's NOTIFY).
    /// The default never resolves: a store without such a signal relies on the
    /// processor's own wake-ups and its fallback poll.
    async fn wait_for_work(&self) {
        std::future::pending::<()>().await
    }

    /// Checks that the store is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How many calls are in each state (operators' gauges); states without calls may
    /// be left out. The default pages through [`list`](CallStore::list); a store with
    /// an aggregate query should override it.
    async fn count_by_state(&self) -> Result<Vec<(CallState, u64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<&'static str, (CallState, u64)> = Default::default();
        let mut after = None;
        loop {
            let page = self.list(&ListQuery { state: None, limit: MAX_LIST_LIMIT, after }).await?;
            for call in &page.calls {
                counts.entry(call.state.as_str()).or_insert((call.state, 0)).1 += 1;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(counts.into_values().collect()),
            }
        }
    }

    /// One page of the event log ([`crate::events`]): the events after `after`,
    /// ascending by id, at most `limit` (1 ..= [`MAX_EVENT_PAGE`](crate::events::MAX_EVENT_PAGE)). Every store writes
    /// its events with the change they describe (in its transaction, or under its
    /// lock): a creation writes `call_created`; [`append`](CallStore::append) an
    /// `ordering_anomaly` per channel with anomalies, throttled by
    /// [`anomaly_event_due`](crate::events::anomaly_event_due); every state change a
    /// `state_changed`; [`claim`](CallStore::claim) an `attempt_started`;
    /// [`record_success`](CallStore::record_success) `attempt_succeeded` then
    /// `transcript_ready` (then the state change); [`record_failure`](CallStore::record_failure)
    /// `attempt_failed`; [`redrive`](CallStore::redrive) `redriven`. Within one
    /// operation, events come in that order. Ids only grow, and a reader never sees id
    /// `n` before every kept id below `n` is readable.
    ///
    /// The default keeps no log: an empty page.
    async fn events(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        let _ = (after, limit);
        Ok(EventPage { events: Vec::new(), first: 1, latest: 0 })
    }

    /// Writes one event about a call that exists (stream starts and ends, from
    /// whatever drives the stream). An unknown call is [`StoreError::NotFound`]. The
    /// default keeps nothing.
    async fn record_event(&self, call_id: &CallId, event: &EventBody, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _ = (call_id, event, now);
        Ok(())
    }

    /// Drops up to `limit` of the oldest events written before `before`; returns how
    /// many. The default keeps nothing, so drops nothing.
    async fn prune_events(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        let _ = (before, limit);
        Ok(0)
    }

    /// Notes something about a call's media streams ([`crate::media::notes`]): a stream
    /// that opened, a DTMF digit or a mark. Kept with the call (not the packets: a
    /// packets sweep leaves them) and listed by [`get`](CallStore::get) in the order
    /// written. An unknown call is [`StoreError::NotFound`]; a note over its size, or
    /// beyond the per-call count, [`StoreError::InvalidArgument`] (storing nothing).
    /// The default keeps no notes: an error.
    async fn note_stream(
        &self,
        call_id: &CallId,
        note: &crate::media::notes::StreamNote,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (call_id, note, now);
        Err(StoreError::backend("this store keeps no stream notes"))
    }

    /// Deletes the packets of up to `limit` (0 ..= [`MAX_SWEEP_BATCH`](crate::retention::MAX_SWEEP_BATCH))
    /// ARCHIVED calls finished before `finished_before` that still have them, oldest
    /// finished first, in one short step that skips calls someone else holds. Each
    /// keeps its counters, its lowest [`KEPT_MISSING_RANGES`](crate::retention::KEPT_MISSING_RANGES)
    /// missing ranges per channel, its result, and records [`PacketsSwept`](crate::retention::PacketsSwept)
    /// at `now` (also its `updated_at`). A call's packets are swept once. The default
    /// sweeps nothing: an error.
    async fn sweep_packets(
        &self,
        finished_before: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<crate::retention::Swept, StoreError> {
        let _ = (finished_before, limit, now);
        Err(StoreError::backend("this store does not sweep packets"))
    }

    /// Deletes up to `limit` (0 ..= `MAX_SWEEP_BATCH`) ARCHIVED or FAILED calls
    /// finished before `finished_before`, oldest finished first, with their packets and
    /// counters, in one short step that skips calls someone else holds. The default
    /// deletes nothing: an error.
    async fn sweep_calls(
        &self,
        finished_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<crate::retention::Swept, StoreError> {
        let _ = (finished_before, limit);
        Err(StoreError::backend("this store does not sweep calls"))
    }

    /// Drops up to `limit` (0 ..= `MAX_DELIVERY_PAGE`) finished webhook deliveries
    /// (delivered or dead) that finished before `before`, oldest finished first; returns how
    /// many. Pending deliveries are never dropped.
    async fn prune_deliveries(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        let _ = (before, limit);
        Err(no_outbox())
    }

    /// The webhook outbox's cursor ([`crate::webhooks`]): the event id up to which
    /// deliveries are enqueued. A store whose outbox has never been opened starts it
    /// at `start` (pass the log's end to send only what happens from now on) and
    /// returns that. The default keeps no outbox: an error.
    async fn outbox_open(&self, start: EventId, now: DateTime<Utc>) -> Result<EventId, StoreError> {
        let _ = (start, now);
        Err(no_outbox())
    }

    /// Stores `deliveries` (those of the events in `(from, to]`) and moves the
    /// cursor from `from` to `to`, in one step. `Ok(false)`, storing nothing, when the
    /// cursor is no longer `from` (another worker moved it: read it again). With
    /// nothing to store and `from == to`, it only marks the cursor as alive, which
    /// keeps the log from being pruned past it.
    async fn outbox_enqueue(
        &self,
        from: EventId,
        to: EventId,
        deliveries: &[crate::webhooks::NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _ = (from, to, deliveries, now);
        Err(no_outbox())
    }

    /// Claims up to `limit` (1 ..= [`MAX_DELIVERY_PAGE`](crate::webhooks::MAX_DELIVERY_PAGE))
    /// pending deliveries due at `now`, oldest due first: each gets one more attempt
    /// and is leased until `now + lease` (it is due again then, should its sender
    /// die). Concurrent claimers never get the same delivery.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<crate::webhooks::Delivery>, StoreError> {
        let _ = (now, lease, limit);
        Err(no_outbox())
    }

    /// Records how attempt `attempt` of delivery `id` ended. `Ok(false)`, changing
    /// nothing, when that is no longer the delivery's current attempt (its lease
    /// expired and it was claimed again) or it is no longer pending.
    async fn finish_delivery(
        &self,
        id: crate::webhooks::DeliveryId,
        attempt: u32,
        outcome: &crate::webhooks::DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _ = (id, attempt, outcome, now);
        Err(no_outbox())
    }

    /// Deliveries newest first, at most `limit` (1 ..= `MAX_DELIVERY_PAGE`), those
    /// with an id below `before` when given.
    async fn deliveries(
        &self,
        limit: usize,
        before: Option<crate::webhooks::DeliveryId>,
    ) -> Result<Vec<crate::webhooks::Delivery>, StoreError> {
        let _ = (limit, before);
        Err(no_outbox())
    }

    /// Re-drives a dead delivery: pending again, due at `now`, attempts back to 0.
    async fn retry_delivery(
        &self,
        id: crate::webhooks::DeliveryId,
        now: DateTime<Utc>,
    ) -> Result<crate::webhooks::Redelivery, StoreError> {
        let _ = (id, now);
        Err(no_outbox())
    }

    /// How many deliveries are pending.
    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        Err(no_outbox())
    }

    /// A signal of new events: its value is the newest id readable (or any value: a
    /// change is what matters). `None` for a store without an event log; the gateway's
    /// feed then has nothing to follow.
    fn event_signal(&self) -> Option<tokio::sync::watch::Receiver<EventId>> {
        None
    }

    /// The store's connection pool, for stores that have one.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// Whether concurrent single-packet ingests should be coalesced into batch appends
    /// (group commit; [`GroupCommit::Auto`](crate::gateway::GroupCommit::Auto)). Yes,
    /// the default, for a store whose every append pays a fixed cost (a transaction, a
    /// round trip, an fsync); no for one whose append costs only its own work, where
    /// the queue's hand-offs between tasks would cost more than they save.
    fn prefers_group_commit(&self) -> bool {
        true
    }
}

/// What a store without a webhook outbox answers.
fn no_outbox() -> StoreError {
    StoreError::backend("this store keeps no webhook outbox")
}
