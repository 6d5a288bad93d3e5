//! Reads: a call's snapshot, listings, a call's packets.

use chrono::{DateTime, Utc};
use pbx_core::id::CallId;
use pbx_core::packet::{Payload, StoredPacket};
use pbx_core::store::{CallPage, CallSnapshot, ListQuery, MAX_LIST_LIMIT, StoreError};
use sqlx::PgPool;

use crate::error::{CorruptRow, store_error};
use crate::rows::{self, CallRow, ChannelRow, SummaryRow, call_columns, lowest_gaps};

/// The call, its other channels' counters, and each channel's lowest missing ranges
/// computed in the database from the stored sequences (a window over the packets'
/// primary key), so a call with a million packets sends back a few ranges, not a
/// million sequences. A channel's gaps are only looked for when its counters say some
/// sequence is missing. One statement: one snapshot.
const GET: &str = concat!(
    "SELECT ",
    call_columns!(),
    r#", ch.ch_channels, ch.ch_received, ch.ch_highest, ch.ch_duplicates, ch.ch_out_of_order,
       g.gap_channels, g.gap_firsts, g.gap_lasts,
       notes.stream_notes::text AS stream_notes, notes.signal_notes::text AS signal_notes
FROM calls AS c
LEFT JOIN LATERAL (
    SELECT array_agg(x.channel ORDER BY x.channel) AS ch_channels,
           array_agg(x.received ORDER BY x.channel) AS ch_received,
           array_agg(x.highest_sequence ORDER BY x.channel) AS ch_highest,
           array_agg(x.duplicates ORDER BY x.channel) AS ch_duplicates,
           array_agg(x.out_of_order ORDER BY x.channel) AS ch_out_of_order
    FROM call_channels AS x
    WHERE x.call_id = c.call_id
) AS ch ON true
LEFT JOIN LATERAL (
    SELECT array_agg(r.channel ORDER BY r.channel, r.first) AS gap_channels,
           array_agg(r.first ORDER BY r.channel, r.first) AS gap_firsts,
           array_agg(r.last ORDER BY r.channel, r.first) AS gap_lasts
    FROM "#,
    lowest_gaps!("c", "$2"),
    r#"
) AS g ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(n.note ORDER BY n.id) FILTER (WHERE n.kind = 'stream') AS stream_notes,
           jsonb_agg(n.note ORDER BY n.id) FILTER (WHERE n.kind = 'signal') AS signal_notes
    FROM call_stream_notes AS n
    WHERE n.call_id = c.call_id
) AS notes ON true
WHERE c.call_id = $1"#
);

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    #[sqlx(flatten)]
    call: CallRow,
    ch_channels: Option<Vec<i16>>,
    ch_received: Option<Vec<i64>>,
    ch_highest: Option<Vec<i64>>,
    ch_duplicates: Option<Vec<i64>>,
    ch_out_of_order: Option<Vec<i64>>,
    gap_channels: Option<Vec<i16>>,
    gap_firsts: Option<Vec<i64>>,
    gap_lasts: Option<Vec<i64>>,
    stream_notes: Option<String>,
    signal_notes: Option<String>,
}

impl SnapshotRow {
    /// Every channel's counters and gaps: channel 0 from the call's row, the others
    /// from `call_channels`.
    fn channels(&mut self) -> Result<Vec<ChannelRow>, StoreError> {
        let c = &self.call;
        let mut channels = vec![ChannelRow {
            channel: 0,
            counters: [c.received, c.highest_sequence, c.duplicates, c.out_of_order],
            gaps: Vec::new(),
        }];
        let ids = self.ch_channels.take().unwrap_or_default();
        let columns = [&mut self.ch_received, &mut self.ch_highest, &mut self.ch_duplicates, &mut self.ch_out_of_order]
            .map(|column| column.take().unwrap_or_default());
        if columns.iter().any(|column| column.len() != ids.len()) {
            return Err(CorruptRow::error(&c.call_id, "channel counters of different lengths"));
        }
        for (i, channel) in ids.into_iter().enumerate() {
            let counters = [columns[0][i], columns[1][i], columns[2][i], columns[3][i]];
            channels.push(ChannelRow { channel, counters, gaps: Vec::new() });
        }
        let gap_channels = self.gap_channels.take().unwrap_or_default();
        let (firsts, lasts) = (self.gap_firsts.take().unwrap_or_default(), self.gap_lasts.take().unwrap_or_default());
        if firsts.len() != gap_channels.len() || lasts.len() != gap_channels.len() {
            return Err(CorruptRow::error(&c.call_id, "gap arrays of different lengths"));
        }
        for ((channel, first), last) in gap_channels.into_iter().zip(firsts).zip(lasts) {
            let row = channels
                .iter_mut()
                .find(|row| row.channel == channel)
                .ok_or_else(|| CorruptRow::error(&c.call_id, format!("gaps of channel {channel} without counters")))?;
            row.gaps.push((first, last));
        }
        Ok(channels)
    }
}

/// A JSON array of notes, as `get` aggregates them; none when `NULL`.
fn notes<T: serde::de::DeserializeOwned>(
    call_id: &CallId,
    json: Option<String>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    match json {
        None => Ok(Vec::new()),
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| CorruptRow::error(call_id.as_str(), format!("{what}: {e}")))
        }
    }
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
    let mut row = row.ok_or_else(|| StoreError::NotFound { call_id: call_id.clone() })?;
    let channels = row.channels()?;
    let streams = notes(call_id, row.stream_notes.take(), "stream notes")?;
    let signals = notes(call_id, row.signal_notes.take(), "signal notes")?;
    let mut snapshot = row.call.into_snapshot(channels, max_missing_ranges)?;
    snapshot.streams = streams;
    snapshot.signals = signals;
    Ok(snapshot)
}

/// `''` sorts before every valid id, so it stands for "no cursor" and keeps the
/// statement a plain range scan of the primary key.
const LIST: &str = r#"
SELECT call_id, state, received, highest_sequence, duplicates, out_of_order, attempts, next_attempt_at,
       sentiment_label, sentiment_score, created_at, last_packet_at, completed_at, updated_at
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
SELECT channel, sequence, data, data_is_text, sender_timestamp, received_at
FROM packets
WHERE call_id = $1
ORDER BY channel, sequence
"#;

/// One channel's packets above a sequence, ascending, limited.
const PACKET_PAGE: &str = r#"
SELECT channel, sequence, data, data_is_text, sender_timestamp, received_at
FROM packets
WHERE call_id = $1 AND channel = $2 AND sequence > $3
ORDER BY sequence
LIMIT $4
"#;

const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = $1)";

type PacketRow = (i16, i64, Vec<u8>, bool, f64, DateTime<Utc>);

/// Rows of packets as [`StoredPacket`]s; an empty result is [`StoreError::NotFound`]
/// when the call does not exist.
async fn stored_packets(
    pool: &PgPool,
    call_id: &CallId,
    found: Vec<PacketRow>,
) -> Result<Vec<StoredPacket>, StoreError> {
    if found.is_empty() {
        let exists: bool =
            sqlx::query_scalar(EXISTS).bind(call_id.as_str()).fetch_one(pool).await.map_err(store_error)?;
        if !exists {
            return Err(StoreError::NotFound { call_id: call_id.clone() });
        }
    }
    let id = call_id.as_str();
    found
        .into_iter()
        .map(|(channel, sequence, data, is_text, timestamp, received_at)| {
            Ok(StoredPacket {
                channel: u8::try_from(channel)
                    .map_err(|_| CorruptRow::error(id, format!("channel {channel} out of range")))?,
                sequence: rows::unsigned(id, "sequence", sequence)?,
                data: Payload::from_parts(data.into(), is_text),
                timestamp,
                received_at,
            })
        })
        .collect()
}

/// A call's packets, ascending by channel, then sequence.
pub(crate) async fn packets(pool: &PgPool, call_id: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
    let found: Vec<PacketRow> =
        sqlx::query_as(PACKETS).bind(call_id.as_str()).fetch_all(pool).await.map_err(store_error)?;
    stored_packets(pool, call_id, found).await
}

/// One page of a channel's packets.
pub(crate) async fn packet_page(
    pool: &PgPool,
    call_id: &CallId,
    channel: u8,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredPacket>, StoreError> {
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(StoreError::InvalidArgument(format!("limit must be 1..={MAX_LIST_LIMIT}, got {limit}")));
    }
    // No sequence exceeds i64::MAX, so a larger cursor reads as i64::MAX: an empty page.
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let found: Vec<PacketRow> = sqlx::query_as(PACKET_PAGE)
        .bind(call_id.as_str())
        .bind(i16::from(channel))
        .bind(after)
        .bind(limit as i64)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    stored_packets(pool, call_id, found).await
}
