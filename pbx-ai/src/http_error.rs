//! The one place where a provider's HTTP answer becomes an [`AiError`].
//!
//! Every provider sends through `send` and reports a body it cannot read with
//! `unparsable`; nothing above this module sees a status code or a `reqwest` error.
//!
//! | answer | [`AiErrorKind`] | retry |
//! | --- | --- | --- |
//! | connection refused, DNS, TLS, reset, broken body | `Unavailable` | yes |
//! | client time-out (connect or whole request), 408 | `Timeout` | yes |
//! | 429 | `RateLimited`, `retry_after` from `retry-after-ms`, else `Retry-After` (seconds or HTTP-date, relative to now, at least 0) | yes |
//! | 429 whose OpenAI error code/type is `insufficient_quota` | `Permanent` | no |
//! | 409 (the same idempotency key still in flight) | `Unavailable` | yes |
//! | 5xx | `Unavailable` (with `Retry-After` if sent) | yes |
//! | 401, 403 | `Permanent`, naming `--ai-api-key / PBX_AI_API_KEY` | no |
//! | 400, 402, 404, 413, 415, 422 and every other 4xx | `Permanent` | no |
//! | 1xx, 3xx (a redirect not followed) | `Permanent` | no |
//! | 2xx whose body does not parse or validate | `Unavailable` | yes, see below |
//!
//! **An unparsable 2xx is retryable.** A garbled or truncated answer is usually a
//! proxy or a provider hiccup, and retrying is the only way past it; the processor's
//! retry limit bounds the cost when it is not. Tracking "retry once per idempotency
//! key" would be dead code here: the processor gives every attempt a new key
//! (`<call>:<attempt>`), so each key is only ever seen once.
//!
//! Every message is `<provider>: HTTP <status>: <the provider's message>`, where the
//! provider's message is read from its documented error shape (OpenAI's
//! `{"error":{"message","type","code"}}`, Deepgram's `{"err_code","err_msg",
//! "request_id"}`) or is the raw body, truncated to [`MAX_DETAIL_CHARS`] characters.
//! The API key is never part of it: requests carry it only in a sensitive header, and
//! any echo of it in an answer is replaced by `***`.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pbx_core::ai::{AiError, AiErrorKind};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::secret::ApiKey;

/// The most characters of a provider's answer an error message quotes.
pub const MAX_DETAIL_CHARS: usize = 300;

/// The setting an operator changes when a key is refused.
pub const API_KEY_SETTING: &str = "--ai-api-key / PBX_AI_API_KEY";

/// Which documented error body a provider sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    /// `{"error":{"message","type","code"}}`.
    OpenAi,
    /// `{"err_code","err_msg","request_id"}`.
    Deepgram,
}

/// Who is being called: names the provider in messages and redacts its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provider<'a> {
    pub(crate) name: &'a str,
    pub(crate) shape: ErrorShape,
    pub(crate) key: Option<&'a ApiKey>,
}

impl Provider<'_> {
    fn redact(&self, text: &str) -> String {
        match self.key {
            Some(key) => key.redact(text),
            None => text.to_owned(),
        }
    }
}

/// Sends `request` and returns the body of a 2xx answer, or the error the answer means.
pub(crate) async fn send(provider: Provider<'_>, request: reqwest::RequestBuilder) -> Result<Bytes, AiError> {
    let response = request.send().await.map_err(|e| transport_error(provider, &e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| transport_error(provider, &e))?;
    tracing::debug!(provider = provider.name, status = status.as_u16(), bytes = body.len(), "provider answered");
    if status.is_success() {
        Ok(body)
    } else {
        let error = status_error(provider, status, &headers, &body, SystemTime::now());
        tracing::debug!(provider = provider.name, %error, "provider refused the request");
        Err(error)
    }
}

/// A request that got no (complete) answer: refused, timed out, reset, unreadable.
pub(crate) fn transport_error(provider: Provider<'_>, error: &reqwest::Error) -> AiError {
    // The causes say what happened ("tcp connect error: Connection refused"); the
    // top-level text only repeats the URL, query and all, so it is used when there is
    // no cause.
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let what = if causes.is_empty() { error.to_string() } else { causes.join(": ") };
    let detail = match error.url() {
        Some(url) => {
            let mut url = url.clone();
            url.set_query(None);
            format!("{url}: {what}")
        }
        None => what,
    };
    let chain = truncate(&provider.redact(&detail));
    let name = provider.name;
    if error.is_timeout() {
        AiError::timeout(format!("{name}: request timed out: {chain}"))
    } else if error.is_connect() {
        AiError::unavailable(format!("{name}: cannot connect: {chain}"))
    } else if error.is_builder() {
        AiError::permanent(format!("{name}: the request cannot be built: {chain}"))
    } else {
        AiError::unavailable(format!("{name}: request failed: {chain}"))
    }
}

/// The error a non-2xx answer means. `now` anchors an HTTP-date `Retry-After`.
pub(crate) fn status_error(
    provider: Provider<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> AiError {
    let detail = ProviderMessage::parse(provider.shape, body);
    let text = truncate(&provider.redact(&detail.text));
    let head = format!("{}: HTTP {}", provider.name, status_line(status));
    let retry_after = retry_after(headers, now);
    match status.as_u16() {
        401 | 403 => {
            let hint = if provider.key.is_some() {
                format!("the API key was refused; check {API_KEY_SETTING}")
            } else {
                format!("no API key is set; set {API_KEY_SETTING}")
            };
            AiError::permanent(format!("{head}: {hint}: {text}"))
        }
        408 => AiError::timeout(format!("{head}: {text}")),
        409 => AiError::new(AiErrorKind::Unavailable, format!("{head}: {text}"), retry_after),
        429 if detail.is_insufficient_quota() => {
            AiError::permanent(format!("{head}: the account's quota is used up (insufficient_quota): {text}"))
        }
        429 => AiError::rate_limited(format!("{head}: {text}"), retry_after),
        500..=599 => AiError::new(AiErrorKind::Unavailable, format!("{head}: {text}"), retry_after),
        _ => AiError::permanent(format!("{head}: {text}")),
    }
}

/// A 2xx whose body is not what the provider documents: retryable (see the module
/// docs). `what` names the expected answer, `why` the parse error.
pub(crate) fn unparsable(provider: Provider<'_>, body: &[u8], what: &str, why: &str) -> AiError {
    let body = truncate(&provider.redact(&String::from_utf8_lossy(body)));
    let why = truncate(&provider.redact(why));
    AiError::unavailable(format!("{}: HTTP 200 OK but not a valid {what} ({why}): {body}", provider.name))
}

/// `429 Too Many Requests`, or the bare code for a status with no reason phrase.
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The provider's message from its documented error shape, or the raw body.
#[derive(Debug, Default)]
struct ProviderMessage {
    text: String,
    code: Option<String>,
    kind: Option<String>,
}

impl ProviderMessage {
    fn parse(shape: ErrorShape, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Value>(body).ok().and_then(|v| match shape {
            ErrorShape::OpenAi => Self::openai(&v),
            ErrorShape::Deepgram => Self::deepgram(&v),
        });
        parsed.unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(body);
            let raw = raw.trim();
            Self { text: if raw.is_empty() { "(empty body)".to_owned() } else { raw.to_owned() }, ..Self::default() }
        })
    }

    fn openai(v: &Value) -> Option<Self> {
        let error = v.get("error")?;
        // Some OpenAI-compatible servers send `{"error": "text"}`.
        if let Some(text) = error.as_str() {
            return Some(Self { text: text.to_owned(), ..Self::default() });
        }
        let message = error.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
        let kind = scalar(error.get("type"));
        let code = scalar(error.get("code"));
        let mut text = if message.is_empty() { "(no message)".to_owned() } else { message };
        let tags: Vec<String> = [("type", &kind), ("code", &code)]
            .into_iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}: {v}")))
            .collect();
        if !tags.is_empty() {
            text = format!("{text} ({})", tags.join(", "));
        }
        Some(Self { text, code, kind })
    }

    fn deepgram(v: &Value) -> Option<Self> {
        let message = v.get("err_msg").and_then(Value::as_str);
        let code = scalar(v.get("err_code"));
        if message.is_none() && code.is_none() {
            return None;
        }
        let mut text = message.unwrap_or("(no message)").to_owned();
        let tags: Vec<String> = [("err_code", code.clone()), ("request_id", scalar(v.get("request_id")))]
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}: {v}")))
            .collect();
        if !tags.is_empty() {
            text = format!("{text} ({})", tags.join(", "));
        }
        Some(Self { text, code, kind: None })
    }

    fn is_insufficient_quota(&self) -> bool {
        [&self.code, &self.kind].into_iter().flatten().any(|v| v == "insufficient_quota")
    }
}

/// A JSON string or number as text; `None` for null, absent or anything else.
fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// At most [`MAX_DETAIL_CHARS`] characters of `text` on one line, `…` marking a cut.
pub(crate) fn truncate(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL_CHARS * 4));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_DETAIL_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// When the provider asks us to come back: `retry-after-ms` (OpenAI's, milliseconds),
/// else `Retry-After` as seconds or an HTTP-date (relative to `now`, never negative).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Some(d) = non_negative_secs(ms / 1000.0)
    {
        return Some(d);
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return non_negative_secs(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn non_negative_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        return None;
    }
    Duration::try_from_secs_f64(secs.max(0.0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let check = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(check(&[("retry-after-ms", "1500")]), Some(Duration::from_millis(1500)));
        assert_eq!(check(&[("retry-after-ms", "20.5"), ("retry-after", "9")]), Some(Duration::from_micros(20_500)));
        assert_eq!(check(&[("retry-after-ms", "junk"), ("retry-after", "9")]), Some(Duration::from_secs(9)));
        assert_eq!(check(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(check(&[("retry-after", "-3")]), Some(Duration::ZERO));
        assert_eq!(check(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]), Some(Duration::from_secs(30)));
        assert_eq!(check(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]), Some(Duration::ZERO));
        assert_eq!(check(&[("retry-after", "soon")]), None);
        assert_eq!(check(&[("retry-after", "NaN")]), None);
        assert_eq!(check(&[("retry-after", "1e300")]), None);
        assert_eq!(check(&[]), None);
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let long = "é".repeat(MAX_DETAIL_CHARS + 10);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("a\nb"), "a b");
    }

    #[test]
    fn reads_documented_error_shapes() {
        let openai = br#"{"error":{"message":"Bad file","type":"invalid_request_error","param":null,"code":"invalid_file_format"}}"#;
        let m = ProviderMessage::parse(ErrorShape::OpenAi, openai);
        assert_eq!(m.text, "Bad file (type: invalid_request_error, code: invalid_file_format)");
        let deepgram =
            br#"{"err_code":"Bad Request","err_msg":"Bad Request: failed to process audio","request_id":"r-1"}"#;
        let m = ProviderMessage::parse(ErrorShape::Deepgram, deepgram);
        assert_eq!(m.text, "Bad Request: failed to process audio (err_code: Bad Request, request_id: r-1)");
        assert_eq!(ProviderMessage::parse(ErrorShape::OpenAi, b"<html>oops</html>").text, "<html>oops</html>");
        assert_eq!(ProviderMessage::parse(ErrorShape::Deepgram, b"").text, "(empty body)");
        assert_eq!(ProviderMessage::parse(ErrorShape::OpenAi, br#"{"error":"nope"}"#).text, "nope");
    }

    #[test]
    fn redacts_echoed_keys() {
        let key = ApiKey::new("sk-very-secret");
        let p = Provider { name: "openai", shape: ErrorShape::OpenAi, key: Some(&key) };
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-very-secret","code":"invalid_api_key"}}"#;
        let e = status_error(p, StatusCode::UNAUTHORIZED, &HeaderMap::new(), body, SystemTime::now());
        assert!(!e.is_retryable());
        assert!(e.message().contains(API_KEY_SETTING), "{e}");
        assert!(!e.to_string().contains("sk-very-secret"), "{e}");
    }
}
