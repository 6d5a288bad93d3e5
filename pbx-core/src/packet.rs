//! Audio packets: validation on the way in, and what a store hands back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::CallId;

/// Channels (tracks) a call may have: 0 and 1.
pub const MAX_CHANNELS: u8 = 2;

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
    /// The channel index is not 0 or 1.
    #[error("channel {0} is out of range: a call has channels 0 and 1")]
    ChannelOutOfRange(i128),
    /// `data` is larger than the configured limit.
    #[error("packet data is {len} bytes; the limit is {limit} bytes")]
    DataTooLarge {
        /// Size of the refused data, in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// A packet's payload: audio bytes, or text that was not audio.
///
/// The JSON APIs carry `data` as a string: standard base64 of the audio bytes. A string
/// that is not canonical base64 (the seed's `"audio_chunk_1"`) is still accepted and
/// kept as [`Payload::Text`], its UTF-8 bytes, so that it reads back exactly as sent;
/// audio assembly plays silence for it and counts it as undecodable. Binary stream
/// frames arrive as [`Payload::Audio`] and never pay base64.
///
/// [`Bytes`] rather than `Vec<u8>`: a payload is handed from the socket to the group
/// commit queue to the store (and to events) without copying, and a clone is O(1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Encoded audio in the call's [media format](crate::media::MediaFormat).
    Audio(Bytes),
    /// A `data` string that was not base64, kept as its UTF-8 bytes.
    Text(Bytes),
}

impl Payload {
    /// The JSON rule: canonical standard base64 is audio, anything else text.
    pub fn from_base64_or_text(data: &str) -> Self {
        match BASE64.decode(data) {
            // Canonical only (padding, no stray bits: the engine refuses both), so
            // that encoding it again gives back exactly `data`.
            Ok(bytes) => Payload::Audio(bytes.into()),
            Err(_) => Payload::Text(Bytes::copy_from_slice(data.as_bytes())),
        }
    }

    /// The payload as the JSON APIs show it: base64 for audio, the text for text.
    pub fn to_base64_or_text(&self) -> String {
        match self {
            Payload::Audio(bytes) => BASE64.encode(bytes),
            // Text payloads are built from `&str` only, so this never replaces anything.
            Payload::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    /// The stored bytes (audio, or the text's UTF-8).
    pub fn bytes(&self) -> &Bytes {
        match self {
            Payload::Audio(b) | Payload::Text(b) => b,
        }
    }

    /// `true` for [`Payload::Text`].
    pub fn is_text(&self) -> bool {
        matches!(self, Payload::Text(_))
    }

    /// Rebuilds a payload from its stored parts.
    pub fn from_parts(bytes: Bytes, is_text: bool) -> Self {
        if is_text { Payload::Text(bytes) } else { Payload::Audio(bytes) }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// `true` when it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }
}

impl From<&str> for Payload {
    fn from(data: &str) -> Self {
        Payload::from_base64_or_text(data)
    }
}

impl From<String> for Payload {
    fn from(data: String) -> Self {
        Payload::from_base64_or_text(&data)
    }
}

impl From<&String> for Payload {
    fn from(data: &String) -> Self {
        Payload::from_base64_or_text(data)
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Audio(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Audio(bytes.into())
    }
}

impl PartialEq<&str> for Payload {
    fn eq(&self, other: &&str) -> bool {
        *self == Payload::from_base64_or_text(other)
    }
}

impl PartialEq<String> for Payload {
    fn eq(&self, other: &String) -> bool {
        *self == Payload::from_base64_or_text(other)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64_or_text())
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Payload::from_base64_or_text(&s))
    }
}

/// One validated audio packet of a call.
///
/// `sequence` is at least 1 and at most `i64::MAX`; `timestamp` is a finite,
/// non-negative number of seconds; `channel` is 0 or 1 (a call's track: each channel
/// has its own sequence space and ordering counters). `data` is a [`Payload`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packet {
    channel: u8,
    sequence: u64,
    data: Payload,
    timestamp: f64,
}

impl Packet {
    /// Validates and builds a packet on channel 0. The size of `data` is checked
    /// separately, against the limit in force, by [`PacketLimits::check`].
    pub fn new(sequence: i64, data: impl Into<Payload>, timestamp: f64) -> Result<Self, PacketError> {
        let sequence = Self::checked_sequence(i128::from(sequence))?;
        if !timestamp.is_finite() || timestamp < 0.0 {
            return Err(PacketError::InvalidTimestamp(timestamp));
        }
        Ok(Self { channel: 0, sequence, data: data.into(), timestamp })
    }

    /// The same packet on another channel (0 or 1).
    pub fn on_channel(mut self, channel: i64) -> Result<Self, PacketError> {
        self.channel = Self::checked_channel(i128::from(channel))?;
        Ok(self)
    }

    /// Checks a channel index given in any integer width.
    pub fn checked_channel(channel: i128) -> Result<u8, PacketError> {
        if (0..i128::from(MAX_CHANNELS)).contains(&channel) {
            Ok(channel as u8)
        } else {
            Err(PacketError::ChannelOutOfRange(channel))
        }
    }

    /// The packet's channel (0 or 1).
    pub fn channel(&self) -> u8 {
        self.channel
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

    /// The payload.
    pub fn data(&self) -> &Payload {
        &self.data
    }

    /// The sender's timestamp, in seconds.
    pub fn timestamp(&self) -> f64 {
        self.timestamp
    }

    /// Unwraps the packet's payload.
    pub fn into_data(self) -> Payload {
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
    /// The packet's channel (0 or 1).
    #[serde(default)]
    pub channel: u8,
    /// The packet's sequence number within its channel.
    pub sequence: u64,
    /// The payload, exactly as first stored.
    pub data: Payload,
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
    fn channels_are_0_or_1() {
        let p = Packet::new(1, "a", 0.0).unwrap();
        assert_eq!(p.channel(), 0);
        assert_eq!(p.clone().on_channel(1).unwrap().channel(), 1);
        assert_eq!(p.clone().on_channel(2), Err(PacketError::ChannelOutOfRange(2)));
        assert_eq!(p.on_channel(-1), Err(PacketError::ChannelOutOfRange(-1)));
    }

    #[test]
    fn payloads_round_trip_exactly() {
        for data in ["audio_chunk_1", "AAEC", "abcd", "", "ab==", "aGk=", "aGk", " aGk=", "a b", "ü"] {
            let payload = Payload::from_base64_or_text(data);
            assert_eq!(payload.to_base64_or_text(), data, "{data:?} reads back as sent");
        }
        assert!(Payload::from("audio_chunk_1").is_text());
        assert_eq!(Payload::from("AAEC"), Payload::Audio(Bytes::from_static(&[0, 1, 2])));
        // Non-canonical base64 (stray bits, missing padding) is text, so it round-trips.
        assert!(Payload::from("ab==").is_text());
        assert!(Payload::from("aGk").is_text());
    }

    proptest::proptest! {
        #[test]
        fn any_string_round_trips(data in ".*") {
            proptest::prop_assert_eq!(Payload::from_base64_or_text(&data).to_base64_or_text(), data);
        }

        #[test]
        fn any_bytes_round_trip(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let audio = Payload::Audio(bytes.into());
            proptest::prop_assert_eq!(Payload::from_base64_or_text(&audio.to_base64_or_text()), audio);
        }
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
