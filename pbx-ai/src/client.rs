//! What every HTTP provider shares: building the client, endpoints, auth headers,
//! and [`ConfigError`].

use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::http_error::API_KEY_SETTING;
use crate::secret::ApiKey;

/// The longest a provider may take to accept a connection, whatever the request
/// time-out (a shorter request time-out wins).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a provider cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The base URL does not parse, or is not `http`/`https`.
    #[error("invalid {provider} base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The provider.
        provider: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The provider needs an API key and none is set.
    #[error("{provider} needs an API key: set {API_KEY_SETTING}")]
    MissingApiKey {
        /// The provider.
        provider: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid {provider} setting {setting}: {reason}")]
    Invalid {
        /// The provider.
        provider: &'static str,
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client cannot be built (TLS set-up).
    #[error("cannot build the {provider} HTTP client")]
    Client {
        /// The provider.
        provider: &'static str,
        /// The HTTP library's error.
        #[source]
        source: reqwest::Error,
    },
}

/// An HTTP client with the provider's time-out; rustls, no system OpenSSL.
pub(crate) fn http_client(provider: &'static str, timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::Invalid { provider, setting: "timeout", reason: "must be more than zero".into() });
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .user_agent(concat!("pbx-ai/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| ConfigError::Client { provider, source })
}

/// `base` (scheme, host, optional path prefix, no `/v1`) joined with `path`
/// (`/v1/...`).
pub(crate) fn endpoint(provider: &'static str, base: &str, path: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::InvalidBaseUrl { provider, url: base.to_owned(), reason: reason.to_owned() };
    let mut url = Url::parse(base.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a base URL has no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("put credentials in the API key setting, not in the URL"));
    }
    let joined = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    Ok(url)
}

/// `<scheme> <key>` as a header value marked sensitive (never printed by the HTTP
/// stack).
pub(crate) fn auth_header(provider: &'static str, scheme: &str, key: &ApiKey) -> Result<HeaderValue, ConfigError> {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", key.expose())).map_err(|_| ConfigError::Invalid {
        provider,
        setting: "api_key",
        reason: "contains characters an HTTP header cannot carry".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_endpoints() {
        let e = |base| endpoint("openai", base, "/v1/audio/transcriptions").map(|u| u.to_string());
        assert_eq!(e("https://api.openai.com").unwrap(), "https://api.openai.com/v1/audio/transcriptions");
        assert_eq!(e("http://127.0.0.1:9000/").unwrap(), "http://127.0.0.1:9000/v1/audio/transcriptions");
        assert_eq!(e("http://proxy/openai/").unwrap(), "http://proxy/openai/v1/audio/transcriptions");
        assert!(e("ftp://x").is_err());
        assert!(e("not a url").is_err());
        assert!(e("http://u:p@host").is_err());
    }

    #[test]
    fn auth_header_is_sensitive_and_errors_do_not_leak() {
        let h = auth_header("openai", "Bearer", &ApiKey::new("sk-1")).unwrap();
        assert!(h.is_sensitive());
        assert_eq!(format!("{h:?}"), "Sensitive");
        let err = auth_header("openai", "Bearer", &ApiKey::new("sk-\u{1}bad")).unwrap_err();
        assert!(!err.to_string().contains("bad"), "{err}");
    }
}
