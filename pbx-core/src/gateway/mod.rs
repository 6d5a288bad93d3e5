//! The orchestration every consumer uses: [`Gateway`] for ingest, hang-up, reads and
//! re-drive; [`Processor`] (from [`crate::processor`]) for the background AI work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};
use crate::events::EventId;
use crate::id::CallId;
use crate::media::{AssembleError, MediaFormat, PcmAudio};
use crate::ordering::DEFAULT_MAX_MISSING_RANGES;
use crate::packet::{NewPacket, Packet, PacketError, PacketLimits, StoredPacket};
use crate::retention::Swept;
use crate::state::Transition;
use crate::store::{
    Appended, CallPage, CallSnapshot, CallStore, ListQuery, Opened, PacketOutcome, PacketRejection, StoreError,
};

mod feed;
mod ingest;
mod recording;
mod tuner;

pub use feed::{Feed, FeedItem, ResyncReason};
pub use recording::Recording;

// The processor lives in `crate::processor`; its names stay reachable from here too.
pub use crate::processor::{Processor, ProcessorConfig, ProcessorHandle, ProcessorStatus};

/// The default bound on a group-commit batch.
pub const DEFAULT_MAX_GROUP_BATCH: usize = 1024;
/// The default bound on a batch handed to [`Gateway::ingest_batch`].
pub const DEFAULT_MAX_REQUEST_BATCH: usize = 1000;

/// Whether [`Gateway::ingest`] coalesces concurrent packets into batch appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GroupCommit {
    /// As the store prefers ([`CallStore::prefers_group_commit`]): on for PostgreSQL,
    /// off for the memory store. The default.
    #[default]
    Auto,
    /// Always: packets queue for the group-commit dispatcher.
    On,
    /// Never: each packet is its own append, run on the caller's task.
    Off,
}

/// The default upper bound of [`Writers::Adaptive`]: each batch in flight holds a
/// database connection.
pub const DEFAULT_MAX_WRITERS: usize = 4;

/// How many group-commit batches are appended at once ([`GatewayConfig::writers`]).
///
/// Batches in flight never share a call: a packet whose call is in a batch being
/// appended waits for the next one, so each call's packets keep their order and
/// concurrent transactions never wait for each other's row locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Writers {
    /// Starts at one and follows what commits measure, between 1 and `max`: every few
    /// hundred milliseconds under a backlog, a neighbouring number is tried for one
    /// window and kept only when it commits more packets per second, twice in a row.
    /// The current number is the `pbx_group_commit_writers` gauge. ARCHITECTURE.md
    /// explains the controller.
    Adaptive {
        /// The most batches in flight (at least 1).
        max: usize,
    },
    /// Exactly this many batches in flight whenever there are packets to form them.
    Fixed(usize),
}

impl Default for Writers {
    fn default() -> Self {
        Self::Adaptive { max: DEFAULT_MAX_WRITERS }
    }
}

/// Settings of a [`Gateway`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Limits applied to every packet.
    pub limits: PacketLimits,
    /// Whether single-packet ingests are coalesced (group commit). Default
    /// [`GroupCommit::Auto`]: on the memory store, appending on the caller's task
    /// saves the two hand-offs to and from the dispatcher, which cost more than the
    /// append itself (BENCHMARKS.md has the measurement).
    pub group_commit: GroupCommit,
    /// Most packets coalesced into one store append by the group commit. Default 1024.
    pub max_group_batch: usize,
    /// How many group-commit batches are appended at once. Default
    /// [`Writers::Adaptive`] up to [`DEFAULT_MAX_WRITERS`]: the best number depends on
    /// the machine (one on 2 cores, more where the database has cores to spare), so it
    /// is measured while running.
    pub writers: Writers,
    /// Most packets accepted by one [`Gateway::ingest_batch`]. Default 1000.
    pub max_request_batch: usize,
    /// Most missing ranges listed in a snapshot. Default 100.
    pub max_missing_ranges: usize,
    /// Events the live feed's broadcast ring holds (shared by every [`Feed`]); a feed
    /// further behind than this reads from the store's log instead. Default 4096.
    pub event_capacity: usize,
    /// The media format of calls that never declared one ([`Gateway::open`]): what
    /// the deployment's PBX sends. Default `mulaw/8000/1`.
    pub default_media_format: MediaFormat,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            limits: PacketLimits::default(),
            group_commit: GroupCommit::Auto,
            max_group_batch: DEFAULT_MAX_GROUP_BATCH,
            writers: Writers::default(),
            max_request_batch: DEFAULT_MAX_REQUEST_BATCH,
            max_missing_ranges: DEFAULT_MAX_MISSING_RANGES,
            event_capacity: 4096,
            default_media_format: MediaFormat::TELEPHONY,
        }
    }
}

/// An invalid [`GatewayConfig`] setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gateway setting {setting}: {reason}")]
pub struct InvalidGatewayConfig {
    /// The setting.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl GatewayConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidGatewayConfig> {
        let positive = |setting, value: usize| {
            if value == 0 { Err(InvalidGatewayConfig { setting, reason: "must be at least 1" }) } else { Ok(()) }
        };
        positive("max_group_batch", self.max_group_batch)?;
        match self.writers {
            Writers::Adaptive { max } => positive("writers.max", max)?,
            Writers::Fixed(n) => positive("writers", n)?,
        }
        positive("max_request_batch", self.max_request_batch)?;
        positive("event_capacity", self.event_capacity)?;
        positive("limits.max_data_bytes", self.limits.max_data_bytes)
    }
}

/// Why a gateway operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The packet is malformed or too large; nothing was stored.
    #[error(transparent)]
    InvalidPacket(#[from] PacketError),
    /// The store refused the packet (conflicting data, or the call takes no packets).
    #[error(transparent)]
    Rejected(#[from] PacketRejection),
    /// A batch holds more packets than allowed; nothing was stored.
    #[error("batch of {len} packets exceeds the limit of {limit}")]
    BatchTooLarge {
        /// Packets in the batch.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The call's audio cannot be assembled (it would be too long).
    #[error(transparent)]
    Audio(#[from] AssembleError),
    /// The call has no packet, so no audio.
    #[error("call {call_id} has no audio")]
    NoAudio {
        /// The call.
        call_id: CallId,
    },
    /// The call's packets were deleted by retention ([`crate::retention`]): no audio,
    /// recording or packets to read any more.
    #[error("the packets of call {call_id} were deleted by retention at {swept_at}")]
    PacketsSwept {
        /// The call.
        call_id: CallId,
        /// When they were deleted.
        swept_at: chrono::DateTime<chrono::Utc>,
    },
    /// The store failed (see [`StoreError`]: not found, invalid transition, unavailable...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gateway is shutting down and takes no more packets.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl GatewayError {
    /// `true` when trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            GatewayError::Store(e) => e.is_retryable(),
            GatewayError::ShuttingDown => true,
            _ => false,
        }
    }
}

/// Shared by the gateway, its group-commit dispatcher and its feeds (the processor goes through the
/// gateway's methods).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn CallStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: feed::Hub,
    /// Signalled when this process makes AI work due (hang-up, re-drive).
    pub(crate) work: Notify,
}

impl std::fmt::Debug for dyn CallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn CallStore")
    }
}

/// The one entry point of pbx: ingest, hang-up, reads, re-drive, events.
///
/// Single-packet ingests are coalesced into batch appends (group commit) where the
/// store gains from it ([`GatewayConfig::group_commit`]): whatever queued while the
/// previous append was in flight forms the next batch, with no timer delay. Either way
/// each caller is answered only once its own packet is stored.
///
/// Cheap to clone; all clones share one queue and one event channel. Build it inside a
/// Tokio runtime: with group commit it spawns its dispatcher, which stops when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    config: Arc<GatewayConfig>,
    /// The group-commit queue; `None` appends each packet on the caller's task.
    queue: Option<ingest::Queue>,
}

impl Gateway {
    /// A gateway over `store` on the system clock.
    pub fn new(store: Arc<dyn CallStore>, config: GatewayConfig) -> Result<Self, InvalidGatewayConfig> {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// A gateway with an injected clock (tests).
    pub fn with_clock(
        store: Arc<dyn CallStore>,
        config: GatewayConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InvalidGatewayConfig> {
        config.validate()?;
        let hub = feed::Hub::new(config.event_capacity);
        let shared = Arc::new(Shared { store, clock, hub, work: Notify::new() });
        let coalesce = match config.group_commit {
            GroupCommit::Auto => shared.store.prefers_group_commit(),
            GroupCommit::On => true,
            GroupCommit::Off => false,
        };
        let queue = coalesce.then(|| ingest::Queue::spawn(shared.clone(), &config));
        Ok(Self { shared, config: Arc::new(config), queue })
    }

    /// The settings in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Whether single-packet ingests go through the group commit (the resolved
    /// [`GatewayConfig::group_commit`]).
    pub fn group_commits(&self) -> bool {
        self.queue.is_some()
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn CallStore> {
        &self.shared.store
    }

    // What the processor (`crate::processor`) uses beyond the public API; see its
    // module docs.

    /// Resolves once this process made AI work due: a hang-up, a re-drive, an idle
    /// hang-up or [`notify_work`](Gateway::notify_work). A signal raised while nobody
    /// waits is kept for the next waiter.
    pub(crate) fn work_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.work.notified()
    }

    /// Raises the signal [`work_notified`](Gateway::work_notified) waits for: AI work
    /// became due, or its due time changed.
    pub(crate) fn notify_work(&self) {
        self.shared.work.notify_one();
    }

    /// [`Gateway::complete_idle`], failing with what it can fail with: the store.
    pub(crate) async fn hang_up_idle(&self, idle_for: Duration, limit: usize) -> Result<Vec<CallId>, StoreError> {
        let now = self.shared.clock.now();
        let idle_since = now - chrono::Duration::from_std(idle_for).unwrap_or(chrono::Duration::MAX);
        let ids = self.shared.store.complete_idle(idle_since, limit, now).await?;
        if !ids.is_empty() {
            self.shared.work.notify_one();
        }
        Ok(ids)
    }

    /// Live [`Feed`]s of this gateway.
    pub fn subscriber_count(&self) -> usize {
        self.shared.hub.subscribers()
    }

    /// Follows the store's event log ([`crate::events`]): with `since`, every event
    /// after that id, then live; without, live from now. Call inside a Tokio runtime
    /// (the first feed starts the gateway's tailer). A store without an event log
    /// ([`CallStore::event_signal`] is `None`) gives a feed that replays what
    /// [`CallStore::events`] has and then waits for ever.
    ///
    /// Live from now means after the newest event when this returns, which reads the
    /// log's end from the store (hence async, and the store's errors).
    pub async fn feed(&self, since: Option<EventId>) -> Result<Feed, GatewayError> {
        Feed::open(&self.shared, since).await
    }

    /// Stores one packet (the call is created by its first packet) and answers once it
    /// is durably stored: its ordering verdict, or a duplicate.
    #[tracing::instrument(level = "trace", skip(self, packet), fields(call_id = %call_id, sequence = packet.sequence()))]
    pub async fn ingest(&self, call_id: CallId, packet: Packet) -> Result<Appended, GatewayError> {
        self.config.limits.check(&packet)?;
        let packet = NewPacket::new(call_id, packet);
        let outcome = match &self.queue {
            Some(queue) => queue.submit(packet).await?,
            None => {
                let mut outcomes = self.append(&[packet]).await?;
                outcomes.pop().expect("append checked one outcome per packet")
            }
        };
        Ok(outcome?)
    }

    /// Stores a batch of packets (one call or many) in one append; one outcome per
    /// packet, in order. The whole batch is refused, nothing stored, when it is larger
    /// than `max_request_batch` or holds a packet over the size limit.
    pub async fn ingest_batch(&self, packets: Vec<NewPacket>) -> Result<Vec<PacketOutcome>, GatewayError> {
        if packets.len() > self.config.max_request_batch {
            return Err(GatewayError::BatchTooLarge { len: packets.len(), limit: self.config.max_request_batch });
        }
        for p in &packets {
            self.config.limits.check(&p.packet)?;
        }
        if packets.is_empty() {
            return Ok(Vec::new());
        }
        self.append(&packets).await
    }

    /// Stores a media stream's frames: through the group-commit queue when there is
    /// one, so that the frames of many streams (each a frame per 20 ms) share commits
    /// instead of each stream committing alone; else in one append. Unlike
    /// [`ingest_batch`](Gateway::ingest_batch) it is not all-or-nothing: on an error
    /// some frames may be stored, so a retry of the same frames answers those as
    /// duplicates (same data), never as conflicts.
    pub async fn ingest_frames(&self, packets: Vec<NewPacket>) -> Result<Vec<PacketOutcome>, GatewayError> {
        if packets.len() > self.config.max_request_batch {
            return Err(GatewayError::BatchTooLarge { len: packets.len(), limit: self.config.max_request_batch });
        }
        for p in &packets {
            self.config.limits.check(&p.packet)?;
        }
        match &self.queue {
            Some(queue) => queue.submit_many(packets).await,
            None if packets.is_empty() => Ok(Vec::new()),
            None => self.append(&packets).await,
        }
    }

    /// One store append on the caller's task: one outcome per packet, events published.
    async fn append(&self, packets: &[NewPacket]) -> Result<Vec<PacketOutcome>, GatewayError> {
        let now = self.shared.clock.now();
        let outcomes = self.shared.store.append(packets, now).await?;
        ingest::check_len(packets, &outcomes)?;
        Ok(outcomes)
    }

    /// Declares a call's media format ([`CallStore::open`]), creating the call
    /// IN_PROGRESS if it does not exist yet.
    pub async fn open(&self, call_id: &CallId, format: MediaFormat) -> Result<Opened, GatewayError> {
        let now = self.shared.clock.now();
        Ok(self.shared.store.open(call_id, format, now).await?)
    }

    /// The media format a call's packets are read with: the one it declared, else the
    /// deployment's default.
    pub fn media_format(&self, snapshot: &CallSnapshot) -> MediaFormat {
        snapshot.media_format.unwrap_or(self.config.default_media_format)
    }

    /// A call's whole audio, assembled (what the AI receives). For long calls prefer
    /// [`Gateway::recording`], which streams.
    pub async fn audio(&self, call_id: &CallId) -> Result<(MediaFormat, PcmAudio), GatewayError> {
        let snapshot = self.call_with_packets(call_id).await?;
        let format = self.media_format(&snapshot);
        let packets = self.shared.store.packets(call_id).await?;
        if packets.is_empty() {
            return Err(GatewayError::NoAudio { call_id: call_id.clone() });
        }
        // Up to MAX_AUDIO_SECONDS of PCM (12 h is 691 MB at 8 kHz): seconds of CPU for a
        // long or sparse call, which on a runtime worker would stall every request and
        // heartbeat sharing it.
        match tokio::task::spawn_blocking(move || crate::media::assemble(format, &packets)).await {
            Ok(audio) => Ok((format, audio?)),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(GatewayError::ShuttingDown),
        }
    }

    /// A call's recording as a streamed WAV: the header and length now, the PCM page by
    /// page ([`Recording::next_chunk`]).
    pub async fn recording(&self, call_id: &CallId) -> Result<Recording, GatewayError> {
        let snapshot = self.call_with_packets(call_id).await?;
        let format = self.media_format(&snapshot);
        Recording::open(self.shared.store.clone(), snapshot, format).await
    }

    /// Hangs up a call (idempotent: a call already past IN_PROGRESS is left as is).
    #[tracing::instrument(level = "debug", skip(self), fields(call_id = %call_id), err)]
    pub async fn complete(&self, call_id: &CallId) -> Result<Transition, GatewayError> {
        let now = self.shared.clock.now();
        let t = self.shared.store.complete(call_id, now).await?;
        if t.applied {
            self.shared.work.notify_one();
        }
        Ok(t)
    }

    /// Hangs up calls silent for longer than `idle_for` (at most `limit`); their ids.
    pub async fn complete_idle(&self, idle_for: Duration, limit: usize) -> Result<Vec<CallId>, GatewayError> {
        Ok(self.hang_up_idle(idle_for, limit).await?)
    }

    /// Re-drives a FAILED call back to COMPLETED so its AI work runs again.
    #[tracing::instrument(level = "debug", skip(self), fields(call_id = %call_id), err)]
    pub async fn redrive(&self, call_id: &CallId) -> Result<Transition, GatewayError> {
        let now = self.shared.clock.now();
        let t = self.shared.store.redrive(call_id, now).await?;
        self.shared.work.notify_one();
        Ok(t)
    }

    /// A call's snapshot.
    pub async fn call(&self, call_id: &CallId) -> Result<CallSnapshot, GatewayError> {
        Ok(self.shared.store.get(call_id, self.config.max_missing_ranges).await?)
    }

    /// A call's snapshot, [`GatewayError::PacketsSwept`] when retention deleted its
    /// packets.
    async fn call_with_packets(&self, call_id: &CallId) -> Result<CallSnapshot, GatewayError> {
        let snapshot = self.call(call_id).await?;
        match snapshot.packets_swept {
            Some(swept) => Err(GatewayError::PacketsSwept { call_id: call_id.clone(), swept_at: swept.swept_at }),
            None => Ok(snapshot),
        }
    }

    /// A call's packets in sequence order ([`GatewayError::PacketsSwept`] once
    /// retention deleted them).
    pub async fn packets(&self, call_id: &CallId) -> Result<Vec<StoredPacket>, GatewayError> {
        self.call_with_packets(call_id).await?;
        Ok(self.shared.store.packets(call_id).await?)
    }

    /// One page of calls.
    pub async fn list(&self, query: &ListQuery) -> Result<CallPage, GatewayError> {
        Ok(self.shared.store.list(query).await?)
    }

    /// Checks that the store is reachable.
    pub async fn ready(&self) -> Result<(), GatewayError> {
        Ok(self.shared.store.ping().await?)
    }

    /// The gateway's clock: what stream drivers stamp their notes with.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.clock.now()
    }

    /// Notes a stream opening, a DTMF digit or a mark on an existing call
    /// ([`CallStore::note_stream`]).
    pub async fn note_stream(
        &self,
        call_id: &CallId,
        note: &crate::media::notes::StreamNote,
    ) -> Result<(), GatewayError> {
        let now = self.shared.clock.now();
        Ok(self.shared.store.note_stream(call_id, note, now).await?)
    }

    /// Writes an event about an existing call to the store's log (media streams
    /// starting and ending, say).
    pub async fn record_event(&self, call_id: &CallId, event: &crate::events::EventBody) -> Result<(), GatewayError> {
        let now = self.shared.clock.now();
        Ok(self.shared.store.record_event(call_id, event, now).await?)
    }

    /// One batch of retention's packets rule: deletes the packets of up to `limit`
    /// calls ARCHIVED more than `older_than` ago ([`CallStore::sweep_packets`]).
    pub async fn sweep_packets(&self, older_than: Duration, limit: usize) -> Result<Swept, GatewayError> {
        let now = self.shared.clock.now();
        Ok(self.shared.store.sweep_packets(before(now, older_than), limit, now).await?)
    }

    /// One batch of retention's calls rule: deletes up to `limit` calls finished
    /// more than `older_than` ago ([`CallStore::sweep_calls`]).
    pub async fn sweep_calls(&self, older_than: Duration, limit: usize) -> Result<Swept, GatewayError> {
        let now = self.shared.clock.now();
        Ok(self.shared.store.sweep_calls(before(now, older_than), limit).await?)
    }

    /// Drops up to `limit` webhook deliveries finished more than `older_than` ago.
    pub async fn prune_deliveries(&self, older_than: Duration, limit: usize) -> Result<u64, GatewayError> {
        let now = self.shared.clock.now();
        Ok(self.shared.store.prune_deliveries(before(now, older_than), limit).await?)
    }

    /// Drops the log's events older than `older_than` (at most `limit`); how many.
    pub async fn prune_events(&self, older_than: Duration, limit: usize) -> Result<u64, GatewayError> {
        Ok(self.shared.store.prune_events(before(self.shared.clock.now(), older_than), limit).await?)
    }
}

/// `now - ago`, or the earliest time there is when `ago` reaches further back.
fn before(now: chrono::DateTime<chrono::Utc>, ago: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}
