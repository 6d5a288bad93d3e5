//! # pbx-store-postgres
//!
//! [`PgCallStore`]: the PostgreSQL [`CallStore`] for pbx, the production source of
//! truth. It passes the whole conformance suite of `pbx_core::testkit`.
//!
//! - **Schema**: the SQL migrations in `migrations/`, embedded as [`MIGRATOR`] and run by
//!   [`PgCallStore::migrate`]. The database guards its own invariants (states, counters,
//!   sequences, leases, results, foreign keys), so bypassing the code cannot store a bad row.
//! - **Ingest**: one statement per batch, whatever it holds (a PL/pgSQL function the
//!   migrations create): one round trip and one commit, the batch stored whole or not
//!   at all. Call rows are created and locked in byte order of their ids, so concurrent
//!   batches never deadlock. Each channel of a call has its own sequence space and
//!   counters; payloads are bytes plus their kind (audio or text).
//! - **AI work**: `FOR UPDATE SKIP LOCKED` claims with leases; every later write is
//!   fenced by the attempt number. A call that becomes due sends `NOTIFY pbx_work` in
//!   the same transaction, and [`CallStore::wait_for_work`] listens for it.
//! - **Webhook outbox**: `webhook_cursor` (moved by compare-and-set in the transaction
//!   that inserts the deliveries of the events it passes) and `webhook_deliveries`
//!   (claimed `FOR UPDATE SKIP LOCKED` with leases, finishes fenced by the attempt);
//!   the event pruner never drops an event after a live cursor.
//! - **Failures**: a lost, refused or terminated connection is
//!   [`StoreError::Unavailable`] (retryable); the pool and the listener reconnect by
//!   themselves. Anything else is [`StoreError::Backend`], with the sqlx error as source.
//!
//! The crate never reads the environment: hand it a URL or a pool.
//!
//! ```no_run
//! use std::sync::Arc;
//! use pbx_core::prelude::*;
//! use pbx_store_postgres::PgCallStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgCallStore::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
//! store.migrate().await?;
//! let gateway = Gateway::new(Arc::new(store), GatewayConfig::default())?;
//! # Ok(()) }
//! ```
//!
//! ## Tests
//!
//! The tests need a real PostgreSQL: `DATABASE_URL` must name a database whose user
//! may create databases (each test gets a fresh one through `#[sqlx::test]`), e.g.
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -p pbx-store-postgres`.
//! Without `DATABASE_URL`, or with the server unreachable, the tests **fail** (they
//! never skip), so CI cannot pass without having run them.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pbx_core::ai::AiResult;
use pbx_core::events::{EventBody, EventId, EventPage};
use pbx_core::id::{CallId, WorkerId};
use pbx_core::media::MediaFormat;
use pbx_core::packet::{NewPacket, StoredPacket};
use pbx_core::retention::Swept;
use pbx_core::state::{CallState, Transition};
use pbx_core::store::{
    AttemptFailure, AttemptRef, CallPage, CallSnapshot, CallStore, Claim, ListQuery, Opened, PacketOutcome, PoolStats,
    StoreError,
};
use pbx_core::webhooks::{Delivery, DeliveryId, DeliveryOutcome, NewDelivery, Redelivery};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

mod append;
mod error;
mod events;
mod listener;
mod notes;
mod open;
mod outbox;
mod reads;
mod retention;
mod rows;
mod stats;
mod work;

/// The schema's migrations (`migrations/`), embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Pool settings for [`PgCallStore::connect_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgStoreOptions {
    /// Most connections open at once (one of them listens for wake-ups). Default 16.
    pub max_connections: u32,
    /// Connections kept open when idle. Default 1.
    pub min_connections: u32,
    /// How long an operation waits for a connection before it fails as
    /// [`StoreError::Unavailable`]. Default 5 s.
    pub acquire_timeout: Duration,
    /// A connection idle for longer is pinged before use (a cheap guard against a
    /// server restart); busier connections skip the extra round trip. Default 1 s.
    pub ping_after_idle: Duration,
    /// Idle connections above `min_connections` are closed after this. Default 10 min.
    pub idle_timeout: Option<Duration>,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            ping_after_idle: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

impl PgStoreOptions {
    /// Sets [`max_connections`](Self::max_connections) (at least 2: one listens).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(2);
        self
    }

    /// Sets [`acquire_timeout`](Self::acquire_timeout).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets [`min_connections`](Self::min_connections).
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }

    /// Sets [`ping_after_idle`](Self::ping_after_idle).
    pub fn ping_after_idle(mut self, idle: Duration) -> Self {
        self.ping_after_idle = idle;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The sqlx pool options these settings make.
    pub fn pool_options(&self) -> PgPoolOptions {
        let ping_after_idle = self.ping_after_idle;
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections.min(self.max_connections))
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ping_after_idle {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }
}

/// The PostgreSQL [`CallStore`]. See the crate docs.
#[derive(Debug)]
pub struct PgCallStore {
    pool: PgPool,
    listener: listener::WorkListener,
    events: events::EventLog,
}

impl PgCallStore {
    /// A store over an existing pool (whose database is migrated, see [`MIGRATOR`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool, listener: listener::WorkListener::default(), events: events::EventLog::default() }
    }

    /// Connects with the default [`PgStoreOptions`]. Does not migrate.
    ///
    /// A bad URL is [`StoreError::InvalidArgument`]; an unreachable server is
    /// [`StoreError::Unavailable`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PgStoreOptions::default()).await
    }

    /// Connects with the given pool settings. Does not migrate.
    pub async fn connect_with(url: &str, options: PgStoreOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions =
            url.parse().map_err(|e| StoreError::InvalidArgument(format!("invalid PostgreSQL URL: {e}")))?;
        let connect = connect.application_name("pbx");
        let pool = options.pool_options().connect_with(connect).await.map_err(error::store_error)?;
        Ok(Self::new(pool))
    }

    /// Runs the pending migrations ([`MIGRATOR`]); safe to run concurrently and again.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(error::migrate_error)
    }

    /// The store's pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts listening for wake-ups now ([`CallStore::wait_for_work`] otherwise starts
    /// on its first call). Notifications sent before the listener exists are lost, so a
    /// processor that wants every one of them calls this first.
    pub async fn listen(&self) -> Result<(), StoreError> {
        // The event log's sequencer runs in every serving process from the start.
        self.events.start(&self.pool);
        self.listener.listen(&self.pool).await
    }

    /// Runs `write`, then has the sequencer number the events it wrote.
    async fn writing<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let out = write.await;
        if out.is_ok() {
            self.events.poke();
        }
        out
    }
}

#[async_trait]
impl CallStore for PgCallStore {
    #[tracing::instrument(level = "debug", skip_all, fields(packets = batch.len()), err)]
    async fn append(&self, batch: &[NewPacket], now: DateTime<Utc>) -> Result<Vec<PacketOutcome>, StoreError> {
        self.writing(append::append(&self.pool, batch, now)).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(call_id = %call_id), err)]
    async fn complete(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        self.writing(work::complete(&self.pool, call_id, now)).await
    }

    async fn get(&self, call_id: &CallId, max_missing_ranges: usize) -> Result<CallSnapshot, StoreError> {
        reads::get(&self.pool, call_id, max_missing_ranges).await
    }

    async fn list(&self, query: &ListQuery) -> Result<CallPage, StoreError> {
        reads::list(&self.pool, query).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(call_id = %call_id), err)]
    async fn open(&self, call_id: &CallId, format: MediaFormat, now: DateTime<Utc>) -> Result<Opened, StoreError> {
        self.writing(open::open(&self.pool, call_id, format, now)).await
    }

    async fn packets(&self, call_id: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
        reads::packets(&self.pool, call_id).await
    }

    async fn packet_page(
        &self,
        call_id: &CallId,
        channel: u8,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredPacket>, StoreError> {
        reads::packet_page(&self.pool, call_id, channel, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn claim(
        &self,
        worker: &WorkerId,
        lease: Duration,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StoreError> {
        self.writing(work::claim(&self.pool, worker, lease, limit, now)).await
    }

    async fn heartbeat(
        &self,
        attempt: &AttemptRef,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        work::heartbeat(&self.pool, attempt, lease, now).await
    }

    #[tracing::instrument(level = "debug", skip(self, result), err)]
    async fn record_success(
        &self,
        attempt: &AttemptRef,
        result: &AiResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.writing(work::record_success(&self.pool, attempt, result, now)).await
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn record_failure(
        &self,
        attempt: &AttemptRef,
        failure: &AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<CallState, StoreError> {
        self.writing(work::record_failure(&self.pool, attempt, failure, now)).await
    }

    async fn release(&self, attempt: &AttemptRef, now: DateTime<Utc>) -> Result<(), StoreError> {
        work::release(&self.pool, attempt, now).await
    }

    async fn complete_idle(
        &self,
        idle_since: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<CallId>, StoreError> {
        self.writing(work::complete_idle(&self.pool, idle_since, limit, now)).await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(call_id = %call_id), err)]
    async fn redrive(&self, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        self.writing(work::redrive(&self.pool, call_id, now)).await
    }

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        work::next_due_at(&self.pool).await
    }

    async fn wait_for_work(&self) {
        self.listener.wait(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(error::store_error)
    }

    async fn count_by_state(&self) -> Result<Vec<(CallState, u64)>, StoreError> {
        stats::count_by_state(&self.pool).await
    }

    async fn events(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        events::page(&self.pool, after, limit).await
    }

    async fn record_event(&self, call_id: &CallId, event: &EventBody, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.writing(events::record(&self.pool, call_id, event, now)).await
    }

    async fn prune_events(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        events::prune(&self.pool, before, limit).await
    }

    async fn note_stream(
        &self,
        call_id: &CallId,
        note: &pbx_core::media::notes::StreamNote,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        notes::note(&self.pool, call_id, note, now).await
    }

    async fn sweep_packets(
        &self,
        finished_before: DateTime<Utc>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Swept, StoreError> {
        retention::sweep_packets(&self.pool, finished_before, limit, now).await
    }

    async fn sweep_calls(&self, finished_before: DateTime<Utc>, limit: usize) -> Result<Swept, StoreError> {
        retention::sweep_calls(&self.pool, finished_before, limit).await
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
        retention::prune_deliveries(&self.pool, before, limit).await
    }

    async fn outbox_open(&self, start: EventId, now: DateTime<Utc>) -> Result<EventId, StoreError> {
        outbox::open(&self.pool, start, now).await
    }

    async fn outbox_enqueue(
        &self,
        from: EventId,
        to: EventId,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        outbox::enqueue(&self.pool, from, to, deliveries, now).await
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        outbox::claim(&self.pool, now, lease, limit).await
    }

    async fn finish_delivery(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        outbox::finish(&self.pool, id, attempt, outcome, now).await
    }

    async fn deliveries(&self, limit: usize, before: Option<DeliveryId>) -> Result<Vec<Delivery>, StoreError> {
        outbox::list(&self.pool, limit, before).await
    }

    async fn retry_delivery(&self, id: DeliveryId, now: DateTime<Utc>) -> Result<Redelivery, StoreError> {
        outbox::retry(&self.pool, id, now).await
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        outbox::depth(&self.pool).await
    }

    fn event_signal(&self) -> Option<tokio::sync::watch::Receiver<EventId>> {
        Some(self.events.signal(&self.pool))
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        Some(stats::pool_stats(&self.pool))
    }
}
