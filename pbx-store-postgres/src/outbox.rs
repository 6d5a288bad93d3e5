//! The webhook outbox ([`pbx_core::webhooks`]): `webhook_cursor` and
//! `webhook_deliveries` (migration `20261203100000_webhook_outbox.sql`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::events::EventId;
use pbx_core::id::CallId;
use pbx_core::store::StoreError;
use pbx_core::webhooks::{Delivery, DeliveryId, DeliveryOutcome, DeliveryStatus, NewDelivery, Redelivery, check_limit};
use sqlx::PgPool;

use crate::error::{CorruptRow, store_error};

const COLUMNS: &str = "id, message_id, event_id, call_id, endpoint, kind, body, status, attempts, last_error, \
                       created_at, next_attempt_at, finished_at";

#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    message_id: String,
    event_id: i64,
    call_id: String,
    endpoint: String,
    kind: String,
    body: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self, StoreError> {
        let bad = |what: &str| CorruptRow::error(row.call_id.clone(), format!("webhook delivery {}: {what}", row.id));
        Ok(Delivery {
            id: u64::try_from(row.id).map_err(|_| bad("negative id"))?,
            event_id: u64::try_from(row.event_id).map_err(|_| bad("negative event id"))?,
            call_id: CallId::new(row.call_id.clone()).map_err(|e| bad(&e.to_string()))?,
            status: DeliveryStatus::parse(&row.status).ok_or_else(|| bad(&format!("status {:?}", row.status)))?,
            attempts: u32::try_from(row.attempts).map_err(|_| bad("negative attempts"))?,
            message_id: row.message_id,
            endpoint: row.endpoint,
            kind: row.kind,
            body: row.body,
            last_error: row.last_error,
            created_at: row.created_at,
            next_attempt_at: row.next_attempt_at,
            finished_at: row.finished_at,
        })
    }
}

fn rows(rows: Vec<DeliveryRow>) -> Result<Vec<Delivery>, StoreError> {
    rows.into_iter().map(Delivery::try_from).collect()
}

fn position(id: EventId) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::InvalidArgument(format!("event id {id} is out of range")))
}

fn delivery_id(id: DeliveryId) -> i64 {
    // An id above i64::MAX cannot exist: it matches nothing.
    i64::try_from(id).unwrap_or(-1)
}

pub(crate) async fn open(pool: &PgPool, start: EventId, now: DateTime<Utc>) -> Result<EventId, StoreError> {
    let (position,): (i64,) = sqlx::query_as(
        "WITH new AS (INSERT INTO webhook_cursor (position, alive_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING \
         RETURNING position) SELECT position FROM new UNION ALL SELECT position FROM webhook_cursor LIMIT 1",
    )
    .bind(position(start)?)
    .bind(now)
    .fetch_one(pool)
    .await
    .map_err(store_error)?;
    u64::try_from(position).map_err(|_| CorruptRow::error("", "webhook cursor is negative"))
}

pub(crate) async fn enqueue(
    pool: &PgPool,
    from: EventId,
    to: EventId,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if to < from {
        return Err(StoreError::InvalidArgument(format!("outbox cursor cannot move back from {from} to {to}")));
    }
    let mut tx = pool.begin().await.map_err(store_error)?;
    // The compare-and-set: a concurrent enqueue from the same `from` waits for this
    // row, then finds it moved and updates nothing.
    let moved = sqlx::query("UPDATE webhook_cursor SET position = $2, alive_at = $3 WHERE position = $1")
        .bind(position(from)?)
        .bind(position(to)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    if moved.rows_affected() == 0 {
        let open: Option<(i64,)> = sqlx::query_as("SELECT position FROM webhook_cursor")
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        return match open {
            Some(_) => Ok(false),
            None => Err(StoreError::InvalidArgument("the outbox is not open".into())),
        };
    }
    if !deliveries.is_empty() {
        let mut event_ids = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            event_ids.push(position(d.event_id)?);
        }
        let column = |f: fn(&NewDelivery) -> &str| deliveries.iter().map(|d| f(d).to_owned()).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO webhook_deliveries (message_id, event_id, call_id, endpoint, kind, body, created_at, \
             next_attempt_at) SELECT m, e, c, u, k, b, $7, $7 \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(m, e, c, u, k, b)",
        )
        .bind(column(|d| &d.message_id))
        .bind(event_ids)
        .bind(column(|d| d.call_id.as_str()))
        .bind(column(|d| &d.endpoint))
        .bind(column(|d| &d.kind))
        .bind(column(|d| &d.body))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(true)
}

pub(crate) async fn claim(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease: Duration,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    check_limit(limit)?;
    let lease = chrono::Duration::from_std(lease).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
    let claimed: Vec<DeliveryRow> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries AS d SET attempts = d.attempts + 1, next_attempt_at = $2 \
         FROM (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) AS due \
         WHERE d.id = due.id RETURNING {}",
        COLUMNS.split(", ").map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ")
    ))
    .bind(now)
    .bind(now + lease)
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    let mut claimed = rows(claimed)?;
    claimed.sort_by_key(|d| d.id);
    Ok(claimed)
}

pub(crate) async fn finish(
    pool: &PgPool,
    id: DeliveryId,
    attempt: u32,
    outcome: &DeliveryOutcome,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let (status, next, error, finished) = match outcome {
        DeliveryOutcome::Delivered => ("delivered", None, None, Some(now)),
        DeliveryOutcome::Retry { at, error } => ("pending", Some(*at), Some(error.as_str()), None),
        DeliveryOutcome::Dead { error } => ("dead", None, Some(error.as_str()), Some(now)),
    };
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = $3, next_attempt_at = $4, last_error = COALESCE($5, last_error), \
         finished_at = $6 WHERE id = $1 AND attempts = $2 AND status = 'pending'",
    )
    .bind(delivery_id(id))
    .bind(i32::try_from(attempt).unwrap_or(-1))
    .bind(status)
    .bind(next)
    .bind(error)
    .bind(finished)
    .execute(pool)
    .await
    .map_err(store_error)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn list(pool: &PgPool, limit: usize, before: Option<DeliveryId>) -> Result<Vec<Delivery>, StoreError> {
    check_limit(limit)?;
    let found: Vec<DeliveryRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id < $1 ORDER BY id DESC LIMIT $2"))
            .bind(before.map_or(i64::MAX, delivery_id))
            .bind(limit as i64)
            .fetch_all(pool)
            .await
            .map_err(store_error)?;
    rows(found)
}

pub(crate) async fn retry(pool: &PgPool, id: DeliveryId, now: DateTime<Utc>) -> Result<Redelivery, StoreError> {
    let retried: Option<DeliveryRow> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, finished_at = NULL \
         WHERE id = $1 AND status = 'dead' RETURNING {COLUMNS}"
    ))
    .bind(delivery_id(id))
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(store_error)?;
    if let Some(row) = retried {
        return Ok(Redelivery::Retried(row.try_into()?));
    }
    let found: Option<DeliveryRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1"))
        .bind(delivery_id(id))
        .fetch_optional(pool)
        .await
        .map_err(store_error)?;
    Ok(match found {
        Some(row) => Redelivery::NotDead(row.try_into()?),
        None => Redelivery::Unknown,
    })
}

pub(crate) async fn depth(pool: &PgPool) -> Result<u64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    Ok(n.max(0) as u64)
}
