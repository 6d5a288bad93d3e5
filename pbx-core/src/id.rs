//! Validated identifiers: [`CallId`] and [`WorkerId`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest call id accepted, in bytes (every accepted character is one byte).
pub const MAX_CALL_ID_LEN: usize = 128;

/// Why a string is not a valid [`CallId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCallId {
    /// The id is the empty string.
    #[error("call id is empty")]
    Empty,
    /// The id is longer than [`MAX_CALL_ID_LEN`].
    #[error("call id is {len} characters long; at most {MAX_CALL_ID_LEN} are allowed")]
    TooLong {
        /// Length of the refused id, in bytes.
        len: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9._:-]`.
    #[error("call id contains {found:?} at byte {position}; only A-Z, a-z, 0-9, '.', '_', ':' and '-' are allowed")]
    InvalidCharacter {
        /// The first offending character.
        found: char,
        /// Its byte offset in the id.
        position: usize,
    },
}

/// The id of a call: 1 to 128 characters of `[A-Za-z0-9._:-]`.
///
/// UUIDs and telephony SIDs (`CA` followed by 32 hex digits) are valid call ids.
/// A `CallId` can only be built through validation, so every holder may trust it.
///
/// ```
/// use pbx_core::CallId;
/// let id: CallId = "CA0123456789abcdef0123456789abcdef".parse().unwrap();
/// assert_eq!(id.as_str(), "CA0123456789abcdef0123456789abcdef");
/// assert!("bad id".parse::<CallId>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidCallId> {
        let id = id.into();
        Self::validate(&id)?;
        Ok(Self(id))
    }

    fn validate(id: &str) -> Result<(), InvalidCallId> {
        if id.is_empty() {
            return Err(InvalidCallId::Empty);
        }
        if let Some((position, found)) =
            id.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(InvalidCallId::InvalidCharacter { found, position });
        }
        if id.len() > MAX_CALL_ID_LEN {
            return Err(InvalidCallId::TooLong { len: id.len() });
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the id into its string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for CallId {
    type Err = InvalidCallId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for CallId {
    type Error = InvalidCallId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for CallId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CallId::new(s).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for CallId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0)
    }
}

/// The name of an AI worker (a processor instance) holding leases.
///
/// Any non-empty string of at most 128 bytes; used only to label lease owners.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    /// Wraps `id`; an empty id becomes `"worker"`, a longer one is cut at 128 bytes
    /// (on a character boundary), so any input yields a usable label.
    pub fn new(id: impl Into<String>) -> Self {
        let mut id: String = id.into();
        if id.is_empty() {
            id.push_str("worker");
        }
        if id.len() > 128 {
            let mut cut = 128;
            while !id.is_char_boundary(cut) {
                cut -= 1;
            }
            id.truncate(cut);
        }
        Self(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_sids() {
        for ok in [
            "1",
            "6f1c2a4e-2b8d-4c55-9c1e-0a9b8c7d6e5f",
            "CA0123456789abcdef0123456789abcdef",
            "pbx-1:leg.2_b",
            &"a".repeat(128),
        ] {
            assert_eq!(CallId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_ids_with_a_reason() {
        assert_eq!(CallId::new(""), Err(InvalidCallId::Empty));
        assert_eq!(CallId::new("a".repeat(129)), Err(InvalidCallId::TooLong { len: 129 }));
        assert_eq!(CallId::new("ab/c"), Err(InvalidCallId::InvalidCharacter { found: '/', position: 2 }));
        assert!(matches!(CallId::new("é"), Err(InvalidCallId::InvalidCharacter { found: 'é', .. })));
        assert!(matches!(CallId::new("a b"), Err(InvalidCallId::InvalidCharacter { found: ' ', .. })));
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<CallId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<CallId>("\"not ok\"").is_err());
    }

    #[test]
    fn worker_ids_are_always_usable() {
        assert_eq!(WorkerId::new("").as_str(), "worker");
        assert_eq!(WorkerId::new("é".repeat(100)).as_str().len(), 128);
    }
}
