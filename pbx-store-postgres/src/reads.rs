//! Reads: a call's snapshot, listings, a call's packets.

use chrono::{DateTime, Utc};
use pbx_core::id::CallId;
use pbx_core::packet::StoredPacket;
use pbx_core::store::{CallPage, CallSnapshot, ListQuery, MAX_LIST_LIMIT, StoreError};
use sqlx::PgPool;

use crate::error::store_error;
use crate::rows::{self, CallRow, SummaryRow, call_columns};

/// The call, and its lowest missing ranges computed in the database from the stored
/// sequences (a window over the packets' primary key), so a call with a million
/// packets sends back a few ranges, not a million sequences. The gaps are only looked
/// for when the counters say some sequence is missing. One statement: one snapshot.
const GET: &str = concat!(
    "SELECT ",
    call_columns!(),
    r#", g.gap_firsts, g.gap_lasts
FROM calls AS c
LEFT JOIN LATERAL (
    SELECT array_agg(r.first ORDER BY r.first) AS gap_firsts, array_agg(r.last ORDER BY r.first) AS gap_lasts
    FROM (
        SELECT s.prev + 1 AS first, s.sequence - 1 AS last
        FROM (
            SELECT p.sequence, lag(p.sequence, 1, 0::bigint) OVER (ORDER BY p.sequence) AS prev
            FROM packets AS p
            WHERE p.call_id = c.call_id AND c.highest_sequence > c.received
        ) AS s
        WHERE s.sequence > s.prev + 1
        ORDER BY s.sequence
        LIMIT $2
    ) AS r
) AS g ON true
WHERE c.call_id = $1"#
);

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    #[sqlx(flatten)]
    call: CallRow,
    gap_firsts: Option<Vec<i64>>,
    gap_lasts: Option<Vec<i64>>,
}

/// A call's snapshot.
pub(crate) async fn get(
    pool: &PgPool,
    call_id: &CallId,
    max_missing_ranges: usize,
) -> Result<CallSnapshot, StoreError> {
    // One range more than asked for tells whether the list was truncated.
    let limit = i64::try_from(max_missing_ranges).unwrap_or(i64::MAX).saturating_add(1);
    let row: Option<SnapshotRow> =
        sqlx::query_as(GET).bind(call_id.as_str()).bind(limit).fetch_optional(pool).await.map_err(store_error)?;
    let row = row.ok_or_else(|| StoreError::NotFound { call_id: call_id.clone() })?;
    let gaps = row.gap_firsts.zip(row.gap_lasts);
    row.call.into_snapshot(gaps, max_missing_ranges)
}

/// `''` sorts before every valid id, so it stands for "no cursor" and keeps the
/// statement a plain range scan of the primary key.
const LIST: &str = r#"
SELECT call_id, state, received, highest_sequence, duplicates, out_of_order, attempts, updated_at
FROM calls
WHERE call_id > $1 AND ($2::text IS NULL OR state = $2)
ORDER BY call_id
LIMIT $3
"#;

/// One page of calls in byte order of their ids.
pub(crate) async fn list(pool: &PgPool, query: &ListQuery) -> Result<CallPage, StoreError> {
    if query.limit == 0 || query.limit > MAX_LIST_LIMIT {
        return Err(StoreError::InvalidArgument(format!("limit must be 1..={MAX_LIST_LIMIT}, got {}", query.limit)));
    }
    let rows: Vec<SummaryRow> = sqlx::query_as(LIST)
        .bind(query.after.as_ref().map_or("", CallId::as_str))
        .bind(query.state.map(|s| s.as_str()))
        .bind(query.limit as i64)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    let calls = rows.into_iter().map(SummaryRow::into_summary).collect::<Result<Vec<_>, _>>()?;
    let next = if calls.len() == query.limit { calls.last().map(|c| c.call_id.clone()) } else { None };
    Ok(CallPage { calls, next })
}

const PACKETS: &str = r#"
SELECT sequence, data, sender_timestamp, received_at
FROM packets
WHERE call_id = $1
ORDER BY sequence
"#;

const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = $1)";

/// A call's packets, ascending by sequence.
pub(crate) async fn packets(pool: &PgPool, call_id: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
    let found: Vec<(i64, String, f64, DateTime<Utc>)> =
        sqlx::query_as(PACKETS).bind(call_id.as_str()).fetch_all(pool).await.map_err(store_error)?;
    if found.is_empty() {
        let exists: bool =
            sqlx::query_scalar(EXISTS).bind(call_id.as_str()).fetch_one(pool).await.map_err(store_error)?;
        if !exists {
            return Err(StoreError::NotFound { call_id: call_id.clone() });
        }
    }
    found
        .into_iter()
        .map(|(sequence, data, timestamp, received_at)| {
            Ok(StoredPacket {
                sequence: rows::unsigned(call_id.as_str(), "sequence", sequence)?,
                data,
                timestamp,
                received_at,
            })
        })
        .collect()
}
