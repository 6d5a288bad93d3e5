//! [`ApiKey`]: a provider credential that never prints.

use std::fmt;

/// A provider's API key.
///
/// `Debug` and `Display` print `***`, so a key inside a config struct, a log line or a
/// panic message does not leak. The only way to the key is [`ApiKey::expose`], which
/// the providers call when they build the `Authorization` header (marked sensitive, so
/// the HTTP stack does not print it either).
///
/// ```
/// use pbx_ai::ApiKey;
/// let key = ApiKey::new("sk-live-123");
/// assert_eq!(format!("{key:?} {key}"), "*** ***");
/// assert_eq!(key.expose(), "sk-live-123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key. Surrounding whitespace (a trailing newline from a file or an
    /// environment variable) is removed.
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.len() == key.len() { Self(key) } else { Self(trimmed.to_owned()) }
    }

    /// A key from an optional setting: `None` for an absent or blank value.
    pub fn from_setting(value: Option<&str>) -> Option<Self> {
        value.map(Self::new).filter(|k| !k.is_empty())
    }

    /// The key itself, for an `Authorization` header. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `true` for an empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the key replaced by `***`: for a provider's
    /// answer that quotes the request's key back.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 { text.to_owned() } else { text.replace(&self.0, "***") }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let key = ApiKey::new(" sk-secret-value\n");
        assert_eq!(key.expose(), "sk-secret-value");
        assert_eq!(format!("{key}"), "***");
        assert_eq!(format!("{key:?}"), "***");
        assert_eq!(format!("{:?}", Some(key.clone())), "Some(***)");
        assert_eq!(key.redact("bad key sk-secret-value given"), "bad key *** given");
        assert_eq!(ApiKey::from_setting(Some("  ")), None);
        assert_eq!(ApiKey::from_setting(None), None);
        assert!(ApiKey::from_setting(Some("k")).is_some());
    }
}
