//! The event log on PostgreSQL: reads, records, pruning, and the sequencer task.
//!
//! Events are written by triggers in the transaction of the change they describe
//! (migration `20261202230000_event_log.sql`), with no position yet. The sequencer
//! (`pbx_sequence_events`, one at a time under an advisory lock) numbers committed rows
//! in commit order and notifies `pbx_events` with the newest position; readers only
//! ever see numbered rows, so a reader that has seen position `n` never later finds a
//! smaller one appear, across every process on the database.
//!
//! Each store runs one background task, started by [`PgCallStore::listen`](crate::PgCallStore::listen)
//! or by the first [`CallStore::event_signal`](pbx_core::store::CallStore::event_signal):
//! it runs the sequencer when this process wrote events (a local poke), every
//! [`POLL`] (for rows other processes wrote while their own sequencer is busy or gone),
//! and publishes the newest position on the store's signal, also when another
//! process's `pbx_events` notification arrives (`LISTEN` on its own connection,
//! re-established with the poll as fallback; a reconnect re-reads the newest position,
//! since notifications sent meanwhile are lost). The task ends when the store is
//! dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::events::{EventBody, EventId, EventPage, MAX_EVENT_PAGE, StoredEvent};
use pbx_core::id::CallId;
use pbx_core::store::StoreError;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};

use crate::error::store_error;

/// How often the sequencer runs without being poked.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// Rows one sequencer run numbers at most.
const SEQUENCE_BATCH: i32 = 5_000;
/// The channel the sequencer notifies.
pub(crate) const CHANNEL: &str = "pbx_events";

/// The store's half of the event log.
#[derive(Debug)]
pub(crate) struct EventLog {
    signal: Arc<watch::Sender<EventId>>,
    poke: Arc<Notify>,
    started: AtomicBool,
    /// Dropped with the store: the task sees the channel close and ends.
    alive: watch::Sender<()>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            signal: Arc::new(watch::Sender::new(0)),
            poke: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            alive: watch::Sender::new(()),
        }
    }
}

impl EventLog {
    /// Starts the sequencer task once (inside a Tokio runtime).
    pub(crate) fn start(&self, pool: &PgPool) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let task = Task {
            pool: pool.clone(),
            signal: self.signal.clone(),
            poke: self.poke.clone(),
            alive: self.alive.subscribe(),
        };
        tokio::spawn(task.run());
    }

    /// The signal of the newest readable position (starts the task).
    pub(crate) fn signal(&self, pool: &PgPool) -> watch::Receiver<EventId> {
        self.start(pool);
        self.signal.subscribe()
    }

    /// This process wrote events: number them soon.
    pub(crate) fn poke(&self) {
        self.poke.notify_one();
    }
}

struct Task {
    pool: PgPool,
    signal: Arc<watch::Sender<EventId>>,
    poke: Arc<Notify>,
    alive: watch::Receiver<()>,
}

impl Task {
    fn publish(&self, latest: EventId) {
        self.signal.send_if_modified(|seen| {
            let newer = latest > *seen;
            if newer {
                *seen = latest;
            }
            newer
        });
    }

    /// Runs the sequencer until it numbers nothing more (or another process holds it).
    async fn sequence(&self) {
        let mut last = None;
        loop {
            match sequence(&self.pool, false).await {
                Ok(Some(latest)) => {
                    self.publish(latest);
                    if last == Some(latest) {
                        return;
                    }
                    last = Some(latest);
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "event log: the sequencer failed; retrying on the next poll");
                    return;
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(CHANNEL).await.ok()?;
        // Notifications sent while nobody listened are lost: read where the log is.
        if let Ok(latest) = latest(&self.pool).await {
            self.publish(latest);
        }
        Some(listener)
    }

    async fn run(mut self) {
        let mut listener: Option<PgListener> = None;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.sequence().await;
            if listener.is_none() {
                listener = self.listen().await;
            }
            let heard = async {
                match listener.as_mut() {
                    Some(l) => Some(l.try_recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.alive.changed() => if changed.is_err() { return },
                () = self.poke.notified() => {}
                _ = poll.tick() => {}
                heard = heard => match heard {
                    Some(Ok(Some(n))) => {
                        if let Ok(latest) = n.payload().parse::<EventId>() {
                            self.publish(latest);
                        }
                    }
                    // The connection dropped (try_recv answers None) or failed.
                    _ => listener = None,
                },
            }
        }
    }
}

/// Runs the sequencer once. `wait`: behind one running elsewhere, so that every event
/// committed before the call is numbered when it returns (readers); otherwise `None`
/// at once when one is running (the task).
async fn sequence(pool: &PgPool, wait: bool) -> Result<Option<EventId>, StoreError> {
    let latest: Option<i64> = sqlx::query_scalar("SELECT pbx_sequence_events($1, $2)")
        .bind(SEQUENCE_BATCH)
        .bind(wait)
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    Ok(latest.map(|l| u64::try_from(l).unwrap_or(0)))
}

async fn latest(pool: &PgPool) -> Result<EventId, StoreError> {
    let latest: i64 =
        sqlx::query_scalar("SELECT latest FROM event_log_state").fetch_one(pool).await.map_err(store_error)?;
    Ok(u64::try_from(latest).unwrap_or(0))
}

const PAGE: &str = r#"
SELECT p.position, p.call_id, p.at, p.body::text AS body, s.latest, f.first
FROM (SELECT latest FROM event_log_state) AS s
CROSS JOIN (SELECT min(position) AS first FROM events) AS f
LEFT JOIN LATERAL (
    SELECT e.position, e.call_id, e.at, e.body FROM events AS e
    WHERE e.position > $1 ORDER BY e.position LIMIT $2
) AS p ON true
ORDER BY p.position
"#;

#[derive(sqlx::FromRow)]
struct PageRow {
    position: Option<i64>,
    call_id: Option<String>,
    at: Option<DateTime<Utc>>,
    body: Option<String>,
    latest: i64,
    first: Option<i64>,
}

/// One page of numbered events. Runs the sequencer first (behind one running
/// elsewhere), so a reader sees every event committed before it asked, also when no
/// task of this process runs.
pub(crate) async fn page(pool: &PgPool, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
    if limit == 0 || limit > MAX_EVENT_PAGE {
        return Err(StoreError::InvalidArgument(format!("limit must be 1..={MAX_EVENT_PAGE}, got {limit}")));
    }
    sequence(pool, true).await?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows: Vec<PageRow> = sqlx::query_as(PAGE)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    let latest = rows.first().map_or(0, |r| u64::try_from(r.latest).unwrap_or(0));
    let first = rows.first().and_then(|r| r.first).map_or(latest + 1, |f| u64::try_from(f).unwrap_or(0));
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(position), Some(call_id), Some(at), Some(body)) = (row.position, row.call_id, row.at, row.body)
        else {
            continue;
        };
        let id = u64::try_from(position).unwrap_or(0);
        let parsed = CallId::new(call_id.clone()).map_err(|e| e.to_string()).and_then(|call_id| {
            serde_json::from_str::<EventBody>(&body).map(|body| (call_id, body)).map_err(|e| e.to_string())
        });
        match parsed {
            Ok((call_id, body)) => events.push(StoredEvent { id, at, call_id, body }),
            // A newer version's event type (a rolling upgrade) or a damaged row: said,
            // skipped, never a panic. The cursor still moves past it.
            Err(error) => tracing::warn!(id, call_id, %error, "event log: skipping an event this version cannot read"),
        }
    }
    Ok(EventPage { events, first, latest })
}

/// Writes one event of an existing call.
pub(crate) async fn record(
    pool: &PgPool,
    call_id: &CallId,
    event: &EventBody,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(event).map_err(StoreError::backend)?;
    let inserted = sqlx::query(
        "INSERT INTO events (call_id, type, at, body) SELECT c.call_id, $2, $3, $4::jsonb FROM calls AS c WHERE c.call_id = $1",
    )
    .bind(call_id.as_str())
    .bind(event.event_type().as_str())
    .bind(now)
    .bind(body)
    .execute(pool)
    .await
    .map_err(store_error)?
    .rows_affected();
    if inserted == 0 { Err(StoreError::NotFound { call_id: call_id.clone() }) } else { Ok(()) }
}

const PRUNE: &str = r#"
WITH front AS (
    SELECT position, at FROM events WHERE position IS NOT NULL ORDER BY position LIMIT $2
), stop AS (
    SELECT min(position) AS position FROM front WHERE at >= $1
)
DELETE FROM events AS e USING front AS f
WHERE e.position = f.position AND f.position < COALESCE((SELECT position FROM stop), 9223372036854775807)
  -- A webhook cursor alive within the retention window keeps what it has not enqueued.
  AND f.position <= COALESCE((SELECT position FROM webhook_cursor WHERE alive_at >= $1), 9223372036854775807)
"#;

/// Drops up to `limit` of the oldest events, from the front while older than `before`
/// (as the memory store's ring).
pub(crate) async fn prune(pool: &PgPool, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
    // What was committed is numbered first, so that it can be pruned in order.
    sequence(pool, true).await?;
    let done = sqlx::query(PRUNE)
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(pool)
        .await
        .map_err(store_error)?;
    Ok(done.rows_affected())
}
