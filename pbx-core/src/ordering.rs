//! Packet ordering: classify each packet against a call's counters, never refusing it.
//!
//! The validator keeps O(1) state per call ([`OrderingCounters`]); classifying a packet
//! costs the same whether it continues the stream or jumps from 5 to 2^62. The ranges
//! of missing sequences are derived on demand from the set of received sequences
//! ([`missing_ranges`]), which every store already keeps.

use serde::{Deserialize, Serialize};

/// The default cap on the number of missing ranges a snapshot lists.
pub const DEFAULT_MAX_MISSING_RANGES: usize = 100;

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeqRange {
    /// First sequence of the range.
    pub first: u64,
    /// Last sequence of the range (inclusive).
    pub last: u64,
}

impl SeqRange {
    /// How many sequences the range holds.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never true: a range holds at least one sequence.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Where a packet stands relative to what the call received before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PacketOrder {
    /// The next sequence after the highest received (or 1 for a call's first packet).
    InOrder,
    /// Beyond the next expected sequence: `missing` were skipped.
    Gap {
        /// The sequences skipped by this packet.
        missing: SeqRange,
    },
    /// Below the highest received, and not received before: it fills part of a gap.
    OutOfOrder,
    /// Received before with the same data; not stored again.
    Duplicate,
}

impl PacketOrder {
    /// `true` for everything but [`PacketOrder::InOrder`].
    pub fn is_anomaly(&self) -> bool {
        !matches!(self, PacketOrder::InOrder)
    }

    /// The verdict's short name: `in_order`, `gap`, `out_of_order` or `duplicate`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PacketOrder::InOrder => "in_order",
            PacketOrder::Gap { .. } => "gap",
            PacketOrder::OutOfOrder => "out_of_order",
            PacketOrder::Duplicate => "duplicate",
        }
    }
}

/// Per-call ordering counters. `missing()` is derived: `highest - received`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderingCounters {
    /// Distinct sequences stored.
    pub received: u64,
    /// Highest sequence stored (0 before the first packet).
    pub highest: u64,
    /// Packets that repeated a stored sequence with the same data.
    pub duplicates: u64,
    /// Packets that arrived below the highest sequence and filled a gap.
    pub out_of_order: u64,
}

impl OrderingCounters {
    /// Sequences between 1 and `highest` not received yet.
    pub fn missing(&self) -> u64 {
        self.highest - self.received
    }

    /// Classifies a packet with sequence `sequence` (>= 1). `already_stored` says whether
    /// the store holds that sequence for this call already: only the store can know it.
    pub fn classify(&self, sequence: u64, already_stored: bool) -> PacketOrder {
        if already_stored {
            PacketOrder::Duplicate
        } else if sequence == self.highest + 1 {
            PacketOrder::InOrder
        } else if sequence > self.highest {
            PacketOrder::Gap { missing: SeqRange { first: self.highest + 1, last: sequence - 1 } }
        } else {
            PacketOrder::OutOfOrder
        }
    }

    /// Updates the counters for a packet classified as `order`.
    pub fn record(&mut self, sequence: u64, order: PacketOrder) {
        match order {
            PacketOrder::Duplicate => self.duplicates += 1,
            PacketOrder::OutOfOrder => {
                self.received += 1;
                self.out_of_order += 1;
            }
            PacketOrder::InOrder | PacketOrder::Gap { .. } => {
                self.received += 1;
                self.highest = self.highest.max(sequence);
            }
        }
    }

    /// Classifies and records in one step, returning the verdict.
    pub fn observe(&mut self, sequence: u64, already_stored: bool) -> PacketOrder {
        let order = self.classify(sequence, already_stored);
        self.record(sequence, order);
        order
    }
}

/// The ranges missing below the highest received sequence, given the received
/// sequences in ascending order (duplicates allowed). Returns at most `max_ranges`
/// ranges (the lowest ones) and whether more exist.
///
/// ```
/// use pbx_core::ordering::{missing_ranges, SeqRange};
/// let (ranges, truncated) = missing_ranges([2, 3, 7], 10);
/// assert_eq!(ranges, vec![SeqRange { first: 1, last: 1 }, SeqRange { first: 4, last: 6 }]);
/// assert!(!truncated);
/// ```
pub fn missing_ranges(received_ascending: impl IntoIterator<Item = u64>, max_ranges: usize) -> (Vec<SeqRange>, bool) {
    let mut ranges = Vec::new();
    let mut next_expected = 1u64;
    for seq in received_ascending {
        if seq > next_expected {
            if ranges.len() == max_ranges {
                return (ranges, true);
            }
            ranges.push(SeqRange { first: next_expected, last: seq - 1 });
        }
        next_expected = next_expected.max(seq + 1);
    }
    (ranges, false)
}

/// A call's ordering report: counters plus the (capped) list of missing ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderingReport {
    /// The call's counters.
    pub counters: OrderingCounters,
    /// The lowest missing ranges, at most the cap the store was asked for.
    pub missing_ranges: Vec<SeqRange>,
    /// `true` when more missing ranges exist than are listed.
    pub missing_ranges_truncated: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn classifies_each_kind() {
        let mut c = OrderingCounters::default();
        assert_eq!(c.observe(1, false), PacketOrder::InOrder);
        assert_eq!(c.observe(2, false), PacketOrder::InOrder);
        assert_eq!(c.observe(5, false), PacketOrder::Gap { missing: SeqRange { first: 3, last: 4 } });
        assert_eq!(c.observe(3, false), PacketOrder::OutOfOrder);
        assert_eq!(c.observe(3, true), PacketOrder::Duplicate);
        assert_eq!(c, OrderingCounters { received: 4, highest: 5, duplicates: 1, out_of_order: 1 });
        assert_eq!(c.missing(), 1);
    }

    #[test]
    fn a_huge_jump_is_constant_work() {
        let mut c = OrderingCounters::default();
        c.observe(5, false);
        let order = c.observe(1 << 62, false);
        assert_eq!(order, PacketOrder::Gap { missing: SeqRange { first: 6, last: (1 << 62) - 1 } });
        assert_eq!(c.missing(), (1 << 62) - 2);
        let (ranges, _) = missing_ranges([5, 1 << 62], 10);
        assert_eq!(ranges, vec![SeqRange { first: 1, last: 4 }, SeqRange { first: 6, last: (1 << 62) - 1 }]);
    }

    #[test]
    fn missing_ranges_are_capped() {
        let (ranges, truncated) = missing_ranges([2, 4, 6, 8], 2);
        assert_eq!(ranges.len(), 2);
        assert!(truncated);
        let (ranges, truncated) = missing_ranges([2, 4], 2);
        assert_eq!(ranges.len(), 2);
        assert!(!truncated);
        assert_eq!(missing_ranges(std::iter::empty(), 0), (vec![], false));
    }

    /// Brute force: counters and missing ranges recomputed from scratch.
    fn oracle(packets: &[u64]) -> (OrderingCounters, Vec<SeqRange>) {
        let mut seen = BTreeSet::new();
        let mut c = OrderingCounters::default();
        for &p in packets {
            if !seen.insert(p) {
                c.duplicates += 1;
            } else if p < c.highest {
                c.out_of_order += 1;
            }
            c.highest = c.highest.max(p);
        }
        c.received = seen.len() as u64;
        let mut ranges = Vec::new();
        let mut start = None;
        for s in 1..=c.highest {
            match (seen.contains(&s), start) {
                (false, None) => start = Some(s),
                (true, Some(f)) => {
                    ranges.push(SeqRange { first: f, last: s - 1 });
                    start = None;
                }
                _ => {}
            }
        }
        (c, ranges)
    }

    proptest! {
        /// Random permutations of sequences with duplicates, against the brute-force oracle.
        #[test]
        fn validator_matches_oracle(
            (packets, max) in (1u64..200).prop_flat_map(|n| {
                let seqs = proptest::collection::vec(1..=n, 0..300);
                (seqs.prop_shuffle(), 0usize..50)
            })
        ) {
            let mut stored = BTreeSet::new();
            let mut c = OrderingCounters::default();
            for &p in &packets {
                let order = c.observe(p, stored.contains(&p));
                if order == PacketOrder::InOrder { prop_assert_eq!(p, c.highest); }
                stored.insert(p);
            }
            let (expected, expected_ranges) = oracle(&packets);
            prop_assert_eq!(c, expected);
            prop_assert_eq!(c.missing(), expected_ranges.iter().map(SeqRange::len).sum::<u64>());
            let (ranges, truncated) = missing_ranges(stored.iter().copied(), max);
            prop_assert_eq!(truncated, expected_ranges.len() > max);
            prop_assert_eq!(&ranges[..], &expected_ranges[..expected_ranges.len().min(max)]);
        }
    }
}
