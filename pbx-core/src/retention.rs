//! Retention: how long finished calls keep their packets, and how long they are kept
//! at all.
//!
//! Two rules, each off unless set ([`Retention`]):
//! - **packets**: an ARCHIVED call finished for longer loses its packets
//!   ([`CallStore::sweep_packets`](crate::store::CallStore::sweep_packets)). The call
//!   stays, with its state, ordering counters, the missing ranges it had (the lowest
//!   [`KEPT_MISSING_RANGES`] of each channel, kept when the packets go), its AI result
//!   and what the packets were ([`PacketsSwept`]: when they went, how many, how many
//!   payload bytes). Its recording and packets are gone: the gateway answers
//!   [`GatewayError::PacketsSwept`](crate::gateway::GatewayError::PacketsSwept), the
//!   server `410 Gone`. A FAILED call keeps its packets, since a re-drive needs them.
//! - **calls**: an ARCHIVED or FAILED call finished for longer is deleted with
//!   everything it holds ([`CallStore::sweep_calls`](crate::store::CallStore::sweep_calls)).
//!   Its id is free again: a packet sent with it afterwards starts a new call. Events
//!   about it stay in the event log until the log's own retention drops them.
//!
//! Both run in batches of at most [`MAX_SWEEP_BATCH`] calls, each batch one short
//! transaction that skips calls locked by anyone else, so a sweep never waits on
//! ingest and ingest never waits on a sweep for longer than one batch's row locks on
//! finished calls, which ingest does not touch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ordering::{OrderingReport, SeqRange};

/// The most calls one sweep batch handles.
pub const MAX_SWEEP_BATCH: usize = 1000;

/// The missing ranges of each channel a call keeps when its packets are swept: its
/// snapshot lists at most these afterwards (and says it is truncated when there were
/// more).
pub const KEPT_MISSING_RANGES: usize = 1000;

/// How long finished calls keep their packets and themselves; `None` keeps forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// How long an ARCHIVED call keeps its packets after it finished.
    pub packets: Option<Duration>,
    /// How long an ARCHIVED or FAILED call is kept after it finished.
    pub calls: Option<Duration>,
}

impl Retention {
    /// Checks the rules: each one, when set, at least a second, and calls not kept
    /// for less time than their packets (which would make the packets' rule a no-op
    /// and is almost surely a mistake).
    pub fn validate(&self) -> Result<(), InvalidRetention> {
        for (what, d) in [("packets", self.packets), ("calls", self.calls)] {
            if let Some(d) = d
                && d < Duration::from_secs(1)
            {
                return Err(InvalidRetention(format!("the retention of {what} is {d:?}; it must be at least 1s")));
            }
        }
        if let (Some(packets), Some(calls)) = (self.packets, self.calls)
            && calls < packets
        {
            return Err(InvalidRetention(format!(
                "calls are kept {calls:?}, less than their packets ({packets:?}): the packets would never be swept \
                 on their own; keep calls at least as long, or drop the packets' rule"
            )));
        }
        Ok(())
    }

    /// Whether any rule is set.
    pub fn is_set(&self) -> bool {
        self.packets.is_some() || self.calls.is_some()
    }
}

/// A [`Retention`] that [`Retention::validate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retention: {0}")]
pub struct InvalidRetention(pub String);

/// What a call's packets were, once swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketsSwept {
    /// When they were deleted.
    pub swept_at: DateTime<Utc>,
    /// How many there were (every channel).
    pub packets: u64,
    /// Their payloads' bytes.
    pub bytes: u64,
}

/// What one sweep batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swept {
    /// Calls swept: whose packets went ([`sweep_packets`](crate::store::CallStore::sweep_packets))
    /// or that went ([`sweep_calls`](crate::store::CallStore::sweep_calls)).
    pub calls: u64,
    /// Packets deleted.
    pub packets: u64,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.packets += other.packets;
    }
}

/// A swept channel's ordering report, from the ranges kept at the sweep (at most
/// [`KEPT_MISSING_RANGES`], `kept_truncated` when there were more) and the cap a
/// reader asks for.
pub fn kept_report(
    counters: crate::ordering::OrderingCounters,
    kept: &[SeqRange],
    kept_truncated: bool,
    max_missing_ranges: usize,
) -> OrderingReport {
    let n = kept.len().min(max_missing_ranges);
    OrderingReport {
        counters,
        missing_ranges: kept[..n].to_vec(),
        missing_ranges_truncated: kept_truncated || kept.len() > n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ordering::OrderingCounters;

    #[test]
    fn validates_rules() {
        let s = Duration::from_secs;
        assert!(Retention::default().validate().is_ok());
        assert!(!Retention::default().is_set());
        assert!(Retention { packets: Some(s(60)), calls: Some(s(60)) }.validate().is_ok());
        assert!(Retention { packets: Some(s(60)), calls: None }.validate().is_ok());
        let short = Retention { packets: Some(Duration::from_millis(10)), calls: None }.validate().unwrap_err();
        assert!(short.0.contains("packets"), "{short}");
        let inverted = Retention { packets: Some(s(60)), calls: Some(s(30)) }.validate().unwrap_err();
        assert!(inverted.0.contains("less than their packets"), "{inverted}");
    }

    #[test]
    fn kept_reports_cap_and_say_so() {
        let kept = [SeqRange { first: 2, last: 2 }, SeqRange { first: 4, last: 5 }];
        let c = OrderingCounters::default();
        let r = kept_report(c, &kept, false, 1);
        assert_eq!((r.missing_ranges.len(), r.missing_ranges_truncated), (1, true));
        let r = kept_report(c, &kept, false, 10);
        assert_eq!((r.missing_ranges.len(), r.missing_ranges_truncated), (2, false));
        let r = kept_report(c, &kept, true, 10);
        assert_eq!((r.missing_ranges.len(), r.missing_ranges_truncated), (2, true));
    }
}
