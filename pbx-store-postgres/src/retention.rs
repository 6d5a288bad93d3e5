//! Retention's sweeps ([`pbx_core::retention`]): each batch is one statement, so one
//! short transaction, that locks the calls it takes with `SKIP LOCKED` (a call someone
//! else holds waits for the next sweep; the sweep never waits).

use chrono::{DateTime, Utc};
use pbx_core::retention::{KEPT_MISSING_RANGES, MAX_SWEEP_BATCH, Swept};
use pbx_core::store::StoreError;
use pbx_core::webhooks::MAX_DELIVERY_PAGE;
use sqlx::PgPool;

use crate::error::store_error;
use crate::rows::lowest_gaps;

/// Up to `$2` ARCHIVED calls finished before `$1` that still hold packets: their
/// lowest missing ranges per channel (at most `$3`, computed as the snapshot query
/// does, from the packets still there: data-modifying CTEs all see the statement's
/// snapshot), then the packets deleted, then the call rows updated.
const SWEEP_PACKETS: &str = concat!(
    r#"
WITH victims AS (
    SELECT call_id, highest_sequence, received
    FROM calls
    WHERE state = 'ARCHIVED' AND packets_swept_at IS NULL AND finished_at < $1
    ORDER BY finished_at, call_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
gaps AS (
    SELECT v.call_id, jsonb_agg(jsonb_build_array(r.channel, r.first, r.last) ORDER BY r.channel, r.first) AS gaps
    FROM victims AS v
    CROSS JOIN LATERAL "#,
    lowest_gaps!("v", "$3"),
    r#"
    GROUP BY v.call_id
),
deleted AS (
    DELETE FROM packets AS p USING victims AS v
    WHERE p.call_id = v.call_id
    RETURNING p.call_id, octet_length(p.data) AS bytes
),
totals AS (
    SELECT call_id, count(*) AS packets, sum(bytes)::bigint AS bytes FROM deleted GROUP BY call_id
)
UPDATE calls AS c
SET packets_swept_at = $4,
    swept_packets = COALESCE(t.packets, 0),
    swept_bytes = COALESCE(t.bytes, 0),
    swept_gaps = COALESCE(g.gaps, '[]'::jsonb),
    updated_at = $4
FROM victims AS v
LEFT JOIN totals AS t ON t.call_id = v.call_id
LEFT JOIN gaps AS g ON g.call_id = v.call_id
WHERE c.call_id = v.call_id
RETURNING c.swept_packets
"#
);

/// Up to `$2` ARCHIVED or FAILED calls finished before `$1`, deleted; their packets
/// and channels go with them (`ON DELETE CASCADE`), counted first.
const SWEEP_CALLS: &str = r#"
WITH victims AS (
    SELECT call_id
    FROM calls
    WHERE finished_at IS NOT NULL AND finished_at < $1
    ORDER BY finished_at, call_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM calls AS c USING victims AS v WHERE c.call_id = v.call_id RETURNING c.call_id
)
SELECT count(*) AS calls,
       COALESCE(sum((SELECT count(*) FROM packets AS p WHERE p.call_id = gone.call_id)), 0)::bigint AS packets
FROM gone
"#;

/// Up to `$2` delivered or dead deliveries finished before `$1`, oldest first.
const PRUNE_DELIVERIES: &str = r#"
DELETE FROM webhook_deliveries
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE status <> 'pending' AND finished_at < $1
    ORDER BY finished_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"#;

fn batch(limit: usize, max: usize) -> Result<i64, StoreError> {
    if limit > max {
        return Err(StoreError::InvalidArgument(format!("limit must be 0..={max}, got {limit}")));
    }
    Ok(limit as i64)
}

pub(crate) async fn sweep_packets(
    pool: &PgPool,
    finished_before: DateTime<Utc>,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<Swept, StoreError> {
    let limit = batch(limit, MAX_SWEEP_BATCH)?;
    if limit == 0 {
        return Ok(Swept::default());
    }
    let rows: Vec<(i64,)> = sqlx::query_as(SWEEP_PACKETS)
        .bind(finished_before)
        .bind(limit)
        .bind(KEPT_MISSING_RANGES as i64 + 1)
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    Ok(Swept { calls: rows.len() as u64, packets: rows.iter().map(|(n,)| n.unsigned_abs()).sum() })
}

pub(crate) async fn sweep_calls(
    pool: &PgPool,
    finished_before: DateTime<Utc>,
    limit: usize,
) -> Result<Swept, StoreError> {
    let limit = batch(limit, MAX_SWEEP_BATCH)?;
    if limit == 0 {
        return Ok(Swept::default());
    }
    let (calls, packets): (i64, i64) =
        sqlx::query_as(SWEEP_CALLS).bind(finished_before).bind(limit).fetch_one(pool).await.map_err(store_error)?;
    Ok(Swept { calls: calls.unsigned_abs(), packets: packets.unsigned_abs() })
}

pub(crate) async fn prune_deliveries(pool: &PgPool, before: DateTime<Utc>, limit: usize) -> Result<u64, StoreError> {
    let limit = batch(limit, MAX_DELIVERY_PAGE)?;
    if limit == 0 {
        return Ok(0);
    }
    let done = sqlx::query(PRUNE_DELIVERIES).bind(before).bind(limit).execute(pool).await.map_err(store_error)?;
    Ok(done.rows_affected())
}
