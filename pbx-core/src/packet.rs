//! Audio packets: validation on the way in, and what a store hands back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::CallId;

/// The default limit on a packet's `data`, in bytes (64 KiB).
pub const DEFAULT_MAX_DATA_BYTES: usize = 64 * 1024;

/// Why a packet was refused before it reached any store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Sequences start at 1 and must fit in an `i64`.
    #[error("sequence {0} is out of range: sequences start at 1 and are at most 9223372036854775807")]
    SequenceOutOfRange(i128),
    /// The timestamp is NaN, infinite or negative.
    #[error("timestamp {0} is not a finite, non-negative number of seconds")]
    InvalidTimestamp(f64),
    /// `data` is larger than the configured limit.
    #[error("packet data is {len} bytes; the limit is {limit} bytes")]
    DataTooLarge {
        /// Size of the refused data, in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// One validated audio packet of a call.
///
/// `sequence` is at least 1 and at most `i64::MAX`; `timestamp` is a finite,
/// non-negative number of seconds. `data` is opaque (usually base64 audio).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packet {
    sequence: u64,
    data: String,
    timestamp: f64,
}

impl Packet {
    /// Validates and builds a packet. The size of `data` is checked separately,
    /// against the limit in force, by [`PacketLimits::check`].
    pub fn new(sequence: i64, data: impl Into<String>, timestamp: f64) -> Result<Self, PacketError> {
        let sequence = Self::checked_sequence(i128::from(sequence))?;
        if !timestamp.is_finite() || timestamp < 0.0 {
            return Err(PacketError::InvalidTimestamp(timestamp));
        }
        Ok(Self { sequence, data: data.into(), timestamp })
    }

    /// Checks a sequence number given in any integer width (a JSON number, say).
    pub fn checked_sequence(sequence: i128) -> Result<u64, PacketError> {
        if (1..=i128::from(i64::MAX)).contains(&sequence) {
            Ok(sequence as u64)
        } else {
            Err(PacketError::SequenceOutOfRange(sequence))
        }
    }

    /// The packet's sequence number (1 ..= `i64::MAX`).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The opaque payload.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The sender's timestamp, in seconds.
    pub fn timestamp(&self) -> f64 {
        self.timestamp
    }

    /// Unwraps the packet's payload.
    pub fn into_data(self) -> String {
        self.data
    }
}

/// Limits applied to packets at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketLimits {
    /// The largest `data` accepted, in bytes. Default [`DEFAULT_MAX_DATA_BYTES`].
    pub max_data_bytes: usize,
}

impl Default for PacketLimits {
    fn default() -> Self {
        Self { max_data_bytes: DEFAULT_MAX_DATA_BYTES }
    }
}

impl PacketLimits {
    /// Refuses a packet whose data exceeds the limit.
    pub fn check(&self, packet: &Packet) -> Result<(), PacketError> {
        let len = packet.data.len();
        if len > self.max_data_bytes {
            return Err(PacketError::DataTooLarge { len, limit: self.max_data_bytes });
        }
        Ok(())
    }
}

/// A packet addressed to a call: one element of a batch append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPacket {
    /// The call the packet belongs to.
    pub call_id: CallId,
    /// The packet itself.
    pub packet: Packet,
}

impl NewPacket {
    /// Pairs a call id with a packet.
    pub fn new(call_id: CallId, packet: Packet) -> Self {
        Self { call_id, packet }
    }
}

/// A packet as a store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPacket {
    /// The packet's sequence number.
    pub sequence: u64,
    /// The payload, exactly as first stored.
    pub data: String,
    /// The sender's timestamp, in seconds.
    pub timestamp: f64,
    /// When the store accepted the packet.
    pub received_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_sequence_and_timestamp() {
        assert!(Packet::new(1, "a", 0.0).is_ok());
        assert!(Packet::new(i64::MAX, "a", 123.45).is_ok());
        assert_eq!(Packet::new(0, "a", 1.0), Err(PacketError::SequenceOutOfRange(0)));
        assert_eq!(Packet::new(-3, "a", 1.0), Err(PacketError::SequenceOutOfRange(-3)));
        assert!(matches!(Packet::new(1, "a", f64::NAN), Err(PacketError::InvalidTimestamp(_))));
        assert!(matches!(Packet::new(1, "a", f64::INFINITY), Err(PacketError::InvalidTimestamp(_))));
        assert!(matches!(Packet::new(1, "a", -0.5), Err(PacketError::InvalidTimestamp(_))));
        assert_eq!(
            Packet::checked_sequence(i128::from(i64::MAX) + 1),
            Err(PacketError::SequenceOutOfRange(i128::from(i64::MAX) + 1))
        );
    }

    #[test]
    fn limits_data_size() {
        let limits = PacketLimits { max_data_bytes: 4 };
        assert!(limits.check(&Packet::new(1, "abcd", 1.0).unwrap()).is_ok());
        assert_eq!(
            limits.check(&Packet::new(1, "abcde", 1.0).unwrap()),
            Err(PacketError::DataTooLarge { len: 5, limit: 4 })
        );
    }
}
