//! Rows as PostgreSQL returns them, and their conversion into pbx-core's records.
//! Every conversion is checked: a value the domain cannot hold is a
//! [`CorruptRow`] error, never a panic.

use chrono::{DateTime, Utc};
use pbx_core::ai::{AiResult, ChannelSentiment, Segment, Sentiment, SentimentLabel};
use pbx_core::id::{CallId, WorkerId};
use pbx_core::media::{AudioStats, MediaFormat};
use pbx_core::ordering::{OrderingCounters, OrderingReport, SeqRange};
use pbx_core::retention::{KEPT_MISSING_RANGES, PacketsSwept};
use pbx_core::state::CallState;
use pbx_core::store::{CallSnapshot, CallSummary, Lease, StoreError};

use crate::error::CorruptRow;

/// The columns of `calls` that [`CallRow`] reads, for `SELECT` lists.
macro_rules! call_columns {
    () => {
        "call_id, state, received, highest_sequence, duplicates, out_of_order, attempts, failures, \
         lease_owner, lease_expires_at, next_attempt_at, last_error, transcript, sentiment_label, \
         sentiment_score, ai_details::text AS ai_details, media_format, created_at, updated_at, \
         last_packet_at, completed_at, finished_at, packets_swept_at, swept_packets, swept_bytes, \
         swept_gaps::text AS swept_gaps"
    };
}
pub(crate) use call_columns;

/// `FROM` items listing the lowest missing ranges (`r.channel`, `r.first`, `r.last`)
/// of every channel of the call whose `calls` row (or a row with its `call_id`,
/// `highest_sequence` and `received`) is `$call`, at most `$limit` per channel, from
/// its stored sequences with a window over the packets' primary key. A channel's gaps
/// are only looked for when its counters say some sequence is missing.
macro_rules! lowest_gaps {
    ($call:literal, $limit:literal) => {
        concat!(
            "(SELECT 0::smallint AS channel, ",
            $call,
            ".highest_sequence AS highest, ",
            $call,
            ".received AS received
      UNION ALL
      SELECT x.channel, x.highest_sequence, x.received FROM call_channels AS x WHERE x.call_id = ",
            $call,
            ".call_id
    ) AS k
    CROSS JOIN LATERAL (
        SELECT k.channel, s.prev + 1 AS first, s.sequence - 1 AS last
        FROM (
            SELECT p.sequence, lag(p.sequence, 1, 0::bigint) OVER (ORDER BY p.sequence) AS prev
            FROM packets AS p
            WHERE p.call_id = ",
            $call,
            ".call_id AND p.channel = k.channel AND k.highest > k.received
        ) AS s
        WHERE s.sequence > s.prev + 1
        ORDER BY s.sequence
        LIMIT ",
            $limit,
            "
    ) AS r"
        )
    };
}
pub(crate) use lowest_gaps;

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
    pub(crate) ai_details: Option<String>,
    pub(crate) media_format: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) last_packet_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) packets_swept_at: Option<DateTime<Utc>>,
    pub(crate) swept_packets: Option<i64>,
    pub(crate) swept_bytes: Option<i64>,
    pub(crate) swept_gaps: Option<String>,
}

/// A missing range kept when a call's packets were swept: channel, first, last.
type SweptGap = (i16, i64, i64);

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
                let details = match &self.ai_details {
                    Some(json) => serde_json::from_str(json)
                        .map_err(|e| CorruptRow::error(&self.call_id, format!("ai_details: {e}")))?,
                    None => AiDetails::default(),
                };
                Ok(Some(AiResult {
                    transcript: transcript.clone(),
                    sentiment: Sentiment { label, score },
                    segments: details.segments,
                    channel_sentiment: details.channel_sentiment,
                    audio: details.audio,
                }))
            }
            (None, None, None) => Ok(None),
            _ => Err(CorruptRow::error(&self.call_id, "partial AI result")),
        }
    }

    /// What its packets were, once swept, and the gaps kept then
    /// (`[channel, first, last]` triples; at most `KEPT_MISSING_RANGES + 1` per channel).
    fn swept(&self) -> Result<Option<(PacketsSwept, Vec<SweptGap>)>, StoreError> {
        let id = self.call_id.as_str();
        match (self.packets_swept_at, self.swept_packets, self.swept_bytes, &self.swept_gaps) {
            (None, None, None, None) => Ok(None),
            (Some(swept_at), Some(packets), Some(bytes), Some(gaps)) => {
                let gaps: Vec<(i16, i64, i64)> =
                    serde_json::from_str(gaps).map_err(|e| CorruptRow::error(id, format!("swept_gaps: {e}")))?;
                let info = PacketsSwept {
                    swept_at,
                    packets: unsigned(id, "swept_packets", packets)?,
                    bytes: unsigned(id, "swept_bytes", bytes)?,
                };
                Ok(Some((info, gaps)))
            }
            _ => Err(CorruptRow::error(id, "half a sweep record")),
        }
    }

    /// The snapshot, with each channel's counters and missing ranges ([`ChannelRow`]s,
    /// in any order; channel 0's counters in them must be the row's own). A call whose
    /// packets were swept has its missing ranges from the sweep instead.
    pub(crate) fn into_snapshot(
        self,
        mut channels: Vec<ChannelRow>,
        max_missing_ranges: usize,
    ) -> Result<CallSnapshot, StoreError> {
        let id = self.call_id.as_str();
        let swept = self.swept()?;
        let mut max_missing_ranges = max_missing_ranges;
        if let Some((_, gaps)) = &swept {
            max_missing_ranges = max_missing_ranges.min(KEPT_MISSING_RANGES);
            for ch in &mut channels {
                ch.gaps =
                    gaps.iter().filter(|(c, _, _)| *c == ch.channel).map(|&(_, first, last)| (first, last)).collect();
            }
        }
        let mut channel_ordering = vec![OrderingReport { counters: self.counters()?, ..OrderingReport::default() }];
        for ch in channels {
            let channel = usize::try_from(ch.channel)
                .ok()
                .filter(|c| *c < usize::from(pbx_core::packet::MAX_CHANNELS))
                .ok_or_else(|| CorruptRow::error(id, format!("channel {} out of range", ch.channel)))?;
            if channel_ordering.len() <= channel {
                channel_ordering.resize(channel + 1, OrderingReport::default());
            }
            let [received, highest, duplicates, out_of_order] = ch.counters;
            let counters = counters(id, received, highest, duplicates, out_of_order)?;
            channel_ordering[channel] = report(id, counters, ch.gaps, max_missing_ranges)?;
        }
        let lease = match (&self.lease_owner, self.lease_expires_at) {
            (Some(owner), Some(expires_at)) => Some(Lease { owner: WorkerId::new(owner.clone()), expires_at }),
            (None, None) => None,
            _ => return Err(CorruptRow::error(id, "half a lease")),
        };
        let media_format = self
            .media_format
            .as_deref()
            .map(|f| f.parse::<MediaFormat>().map_err(|e| CorruptRow::error(id, format!("media_format: {e}"))))
            .transpose()?;
        Ok(CallSnapshot {
            call_id: call_id(id)?,
            state: state(id, &self.state)?,
            media_format,
            ordering: channel_ordering[0].clone(),
            channel_ordering,
            attempts: count(id, "attempts", self.attempts)?,
            failures: count(id, "failures", self.failures)?,
            next_attempt_at: self.next_attempt_at,
            lease,
            last_error: self.last_error.clone(),
            result: self.result()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_packet_at: self.last_packet_at,
            completed_at: self.completed_at,
            finished_at: self.finished_at,
            packets_swept: swept.map(|(info, _)| info),
            // Read by the caller, from their own table.
            streams: Vec::new(),
            signals: Vec::new(),
        })
    }
}

/// One channel's counters (`received`, `highest_sequence`, `duplicates`,
/// `out_of_order`) and lowest missing ranges (first and last of each, at most `max + 1`
/// of them, lowest first), as the snapshot query computes them.
#[derive(Debug, Default)]
pub(crate) struct ChannelRow {
    pub(crate) channel: i16,
    pub(crate) counters: [i64; 4],
    pub(crate) gaps: Vec<(i64, i64)>,
}

/// An ordering report from counters and the lowest gaps; more than `max` gaps means
/// the list is truncated.
fn report(
    call_id: &str,
    counters: OrderingCounters,
    gaps: impl IntoIterator<Item = (i64, i64)>,
    max: usize,
) -> Result<OrderingReport, StoreError> {
    let mut missing_ranges = Vec::new();
    let mut truncated = false;
    for (first, last) in gaps {
        if missing_ranges.len() == max {
            truncated = true;
            break;
        }
        missing_ranges.push(SeqRange {
            first: unsigned(call_id, "gap start", first)?,
            last: unsigned(call_id, "gap end", last)?,
        });
    }
    Ok(OrderingReport { counters, missing_ranges, missing_ranges_truncated: truncated })
}

/// What `calls.ai_details` holds: the parts of an [`AiResult`] beyond its transcript
/// and sentiment.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AiDetails {
    #[serde(default)]
    pub(crate) segments: Vec<Segment>,
    #[serde(default)]
    pub(crate) channel_sentiment: Vec<ChannelSentiment>,
    #[serde(default)]
    pub(crate) audio: Option<AudioStats>,
}

impl AiDetails {
    /// The details of a result as JSON. JSON has no NaN or infinity, so a segment time
    /// that is not finite is refused rather than stored as something else.
    pub(crate) fn json(result: &AiResult) -> Result<String, StoreError> {
        if let Some(s) = result.segments.iter().find(|s| !s.start.is_finite() || !s.end.is_finite()) {
            return Err(StoreError::InvalidArgument(format!(
                "segment times must be finite, got {}..{}",
                s.start, s.end
            )));
        }
        #[derive(serde::Serialize)]
        struct Borrowed<'a> {
            segments: &'a [Segment],
            channel_sentiment: &'a [ChannelSentiment],
            audio: Option<AudioStats>,
        }
        let details =
            Borrowed { segments: &result.segments, channel_sentiment: &result.channel_sentiment, audio: result.audio };
        serde_json::to_string(&details).map_err(StoreError::backend)
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
    pub(crate) next_attempt_at: Option<DateTime<Utc>>,
    pub(crate) sentiment_label: Option<String>,
    pub(crate) sentiment_score: Option<f64>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_packet_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
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
            next_attempt_at: self.next_attempt_at,
            sentiment: match (&self.sentiment_label, self.sentiment_score) {
                (Some(label), Some(score)) => Some(Sentiment {
                    label: label.parse().map_err(|e: String| CorruptRow::error(&self.call_id, e))?,
                    score,
                }),
                _ => None,
            },
            created_at: self.created_at,
            last_packet_at: self.last_packet_at,
            completed_at: self.completed_at,
            updated_at: self.updated_at,
        })
    }
}
