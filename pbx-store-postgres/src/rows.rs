//! Rows as PostgreSQL returns them, and their conversion into pbx-core's records.
//! Every conversion is checked: a value the domain cannot hold is a
//! [`CorruptRow`] error, never a panic.

use chrono::{DateTime, Utc};
use pbx_core::ai::{AiResult, Sentiment, SentimentLabel};
use pbx_core::id::{CallId, WorkerId};
use pbx_core::ordering::{OrderingCounters, OrderingReport, SeqRange};
use pbx_core::state::CallState;
use pbx_core::store::{CallSnapshot, CallSummary, Lease, StoreError};

use crate::error::CorruptRow;

/// The columns of `calls` that [`CallRow`] reads, for `SELECT` lists.
macro_rules! call_columns {
    () => {
        "call_id, state, received, highest_sequence, duplicates, out_of_order, attempts, failures, \
         lease_owner, lease_expires_at, next_attempt_at, last_error, transcript, sentiment_label, \
         sentiment_score, created_at, updated_at, last_packet_at, completed_at, finished_at"
    };
}
pub(crate) use call_columns;

/// One row of `calls`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CallRow {
    pub(crate) call_id: String,
    pub(crate) state: String,
    pub(crate) received: i64,
    pub(crate) highest_sequence: i64,
    pub(crate) duplicates: i64,
    pub(crate) out_of_order: i64,
    pub(crate) attempts: i32,
    pub(crate) failures: i32,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) transcript: Option<String>,
    pub(crate) sentiment_label: Option<String>,
    pub(crate) sentiment_score: Option<f64>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) last_packet_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

/// A call id read back from the database.
pub(crate) fn call_id(raw: &str) -> Result<CallId, StoreError> {
    CallId::new(raw).map_err(|e| CorruptRow::error(raw, e.to_string()))
}

/// A state read back from the database.
pub(crate) fn state(call_id: &str, raw: &str) -> Result<CallState, StoreError> {
    raw.parse().map_err(|e: pbx_core::state::UnknownState| CorruptRow::error(call_id, e.to_string()))
}

/// A non-negative database integer as `u64`.
pub(crate) fn unsigned(call_id: &str, what: &str, raw: i64) -> Result<u64, StoreError> {
    u64::try_from(raw).map_err(|_| CorruptRow::error(call_id, format!("{what} is negative ({raw})")))
}

/// A non-negative database `integer` as `u32`.
pub(crate) fn count(call_id: &str, what: &str, raw: i32) -> Result<u32, StoreError> {
    u32::try_from(raw).map_err(|_| CorruptRow::error(call_id, format!("{what} is negative ({raw})")))
}

/// The ordering counters of a row.
pub(crate) fn counters(
    call_id: &str,
    received: i64,
    highest: i64,
    duplicates: i64,
    out_of_order: i64,
) -> Result<OrderingCounters, StoreError> {
    let counters = OrderingCounters {
        received: unsigned(call_id, "received", received)?,
        highest: unsigned(call_id, "highest_sequence", highest)?,
        duplicates: unsigned(call_id, "duplicates", duplicates)?,
        out_of_order: unsigned(call_id, "out_of_order", out_of_order)?,
    };
    if counters.received > counters.highest {
        return Err(CorruptRow::error(call_id, "more sequences received than the highest sequence"));
    }
    Ok(counters)
}

/// Counters as the database stores them; `u64` values above `i64::MAX` cannot occur
/// (sequences are at most `i64::MAX`), but are refused rather than wrapped.
pub(crate) fn db_counter(call_id: &str, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| CorruptRow::error(call_id, format!("{what} {value} exceeds i64")))
}

impl CallRow {
    fn counters(&self) -> Result<OrderingCounters, StoreError> {
        counters(&self.call_id, self.received, self.highest_sequence, self.duplicates, self.out_of_order)
    }

    fn result(&self) -> Result<Option<AiResult>, StoreError> {
        match (&self.transcript, &self.sentiment_label, self.sentiment_score) {
            (Some(transcript), Some(label), Some(score)) => {
                let label: SentimentLabel = label.parse().map_err(|e: String| CorruptRow::error(&self.call_id, e))?;
                Ok(Some(AiResult { transcript: transcript.clone(), sentiment: Sentiment { label, score } }))
            }
            (None, None, None) => Ok(None),
            _ => Err(CorruptRow::error(&self.call_id, "partial AI result")),
        }
    }

    /// The snapshot, with the missing ranges the query computed (`gaps`: first and last
    /// of each range, at most `max + 1` of them, lowest first).
    pub(crate) fn into_snapshot(
        self,
        gaps: Option<(Vec<i64>, Vec<i64>)>,
        max_missing_ranges: usize,
    ) -> Result<CallSnapshot, StoreError> {
        let counters = self.counters()?;
        let mut missing_ranges = Vec::new();
        let mut truncated = false;
        if let Some((firsts, lasts)) = gaps {
            for (first, last) in firsts.into_iter().zip(lasts) {
                if missing_ranges.len() == max_missing_ranges {
                    truncated = true;
                    break;
                }
                missing_ranges.push(SeqRange {
                    first: unsigned(&self.call_id, "gap start", first)?,
                    last: unsigned(&self.call_id, "gap end", last)?,
                });
            }
        }
        let lease = match (&self.lease_owner, self.lease_expires_at) {
            (Some(owner), Some(expires_at)) => Some(Lease { owner: WorkerId::new(owner.clone()), expires_at }),
            (None, None) => None,
            _ => return Err(CorruptRow::error(&self.call_id, "half a lease")),
        };
        Ok(CallSnapshot {
            call_id: call_id(&self.call_id)?,
            state: state(&self.call_id, &self.state)?,
            ordering: OrderingReport { counters, missing_ranges, missing_ranges_truncated: truncated },
            attempts: count(&self.call_id, "attempts", self.attempts)?,
            failures: count(&self.call_id, "failures", self.failures)?,
            next_attempt_at: self.next_attempt_at,
            lease,
            last_error: self.last_error.clone(),
            result: self.result()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_packet_at: self.last_packet_at,
            completed_at: self.completed_at,
            finished_at: self.finished_at,
        })
    }
}

/// One row of a listing.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SummaryRow {
    pub(crate) call_id: String,
    pub(crate) state: String,
    pub(crate) received: i64,
    pub(crate) highest_sequence: i64,
    pub(crate) duplicates: i64,
    pub(crate) out_of_order: i64,
    pub(crate) attempts: i32,
    pub(crate) updated_at: DateTime<Utc>,
}

impl SummaryRow {
    pub(crate) fn into_summary(self) -> Result<CallSummary, StoreError> {
        Ok(CallSummary {
            call_id: call_id(&self.call_id)?,
            state: state(&self.call_id, &self.state)?,
            counters: counters(
                &self.call_id,
                self.received,
                self.highest_sequence,
                self.duplicates,
                self.out_of_order,
            )?,
            attempts: count(&self.call_id, "attempts", self.attempts)?,
            updated_at: self.updated_at,
        })
    }
}
