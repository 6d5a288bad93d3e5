//! Every error class, for every HTTP provider: the cases are functions over a
//! [`Suite`]; [`error_classes!`] makes one test per case per provider.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use pbx_ai::{API_KEY_SETTING, ApiKey};
use pbx_core::ai::{AiError, AiErrorKind};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Calls the provider once: `(base_url, api_key, timeout)`.
pub(crate) type Call =
    Arc<dyn Fn(String, Option<ApiKey>, Duration) -> BoxFuture<'static, Result<(), AiError>> + Send + Sync>;

/// One provider under test.
pub(crate) struct Suite {
    pub(crate) provider: &'static str,
    pub(crate) path: &'static str,
    pub(crate) call: Call,
    /// The provider's documented error body.
    pub(crate) error_body: fn(message: &str, code: &str) -> Value,
    /// Whether it works without a key (OpenAI-compatible servers do).
    pub(crate) key_optional: bool,
    /// Whether it is OpenAI (whose 429 can mean "quota used up").
    pub(crate) openai: bool,
}

pub(crate) fn openai_error(message: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
}

pub(crate) fn deepgram_error(message: &str, code: &str) -> Value {
    json!({"err_code": code, "err_msg": message, "request_id": "0b2f1c8e-req"})
}

const KEY: &str = "sk-test-SECRET-0123456789";

impl Suite {
    async fn answer(&self, response: ResponseTemplate) -> (MockServer, Result<(), AiError>) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path(self.path)).respond_with(response).mount(&server).await;
        let result = (self.call)(server.uri(), Some(ApiKey::new(KEY)), Duration::from_secs(10)).await;
        (server, result)
    }

    async fn error(&self, response: ResponseTemplate) -> AiError {
        let (server, result) = self.answer(response).await;
        let error = result.expect_err("the provider's answer is an error");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "one request per call");
        self.assert_clean(&error);
        error
    }

    /// Names the provider, never holds the key.
    fn assert_clean(&self, error: &AiError) {
        let text = error.to_string();
        assert!(text.contains(&format!("{}:", self.provider)), "names the provider: {text}");
        assert!(!text.contains(KEY) && !format!("{error:?}").contains(KEY), "leaks the key: {text}");
    }

    fn status(&self, status: u16, message: &str, code: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json((self.error_body)(message, code))
    }
}

fn check(error: &AiError, kind: AiErrorKind, retry_after: Option<Duration>, contains: &[&str]) {
    println!("{error}");
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.is_retryable(), kind != AiErrorKind::Permanent);
    assert_eq!(error.retry_after(), retry_after, "{error}");
    for needle in contains {
        assert!(error.message().contains(needle), "{error} should contain {needle:?}");
    }
}

pub(crate) async fn http_500_is_unavailable(s: &Suite) {
    let e = s.error(s.status(500, "The server had an error while processing your request.", "server_error")).await;
    check(&e, AiErrorKind::Unavailable, None, &["HTTP 500 Internal Server Error", "server had an error"]);
}

pub(crate) async fn http_503_is_unavailable_with_retry_after(s: &Suite) {
    let e = s.error(s.status(503, "Service overloaded", "overloaded").insert_header("Retry-After", "7")).await;
    check(&e, AiErrorKind::Unavailable, Some(Duration::from_secs(7)), &["HTTP 503", "Service overloaded"]);
}

pub(crate) async fn connection_refused_is_unavailable(s: &Suite) {
    let result = (s.call)(crate::refused_base_url(), Some(ApiKey::new(KEY)), Duration::from_secs(10)).await;
    let e = result.expect_err("nothing listens");
    s.assert_clean(&e);
    check(&e, AiErrorKind::Unavailable, None, &["cannot connect"]);
}

pub(crate) async fn slow_answer_is_a_timeout(s: &Suite) {
    let server = MockServer::start().await;
    let slow = ResponseTemplate::new(200).set_body_json(json!({})).set_delay(Duration::from_secs(30));
    Mock::given(method("POST")).and(path(s.path)).respond_with(slow).mount(&server).await;
    let e = (s.call)(server.uri(), Some(ApiKey::new(KEY)), Duration::from_millis(300)).await.expect_err("times out");
    s.assert_clean(&e);
    check(&e, AiErrorKind::Timeout, None, &["timed out"]);
}

pub(crate) async fn http_429_honours_retry_after_seconds(s: &Suite) {
    let e =
        s.error(s.status(429, "Rate limit reached", "rate_limit_exceeded").insert_header("Retry-After", "12")).await;
    check(&e, AiErrorKind::RateLimited, Some(Duration::from_secs(12)), &["HTTP 429 Too Many Requests", "Rate limit"]);
}

pub(crate) async fn http_429_honours_retry_after_date(s: &Suite) {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let e = s.error(s.status(429, "Slow down", "rate_limit_exceeded").insert_header("Retry-After", at.as_str())).await;
    assert_eq!(e.kind(), AiErrorKind::RateLimited, "{e}");
    let after = e.retry_after().expect("retry_after from the date");
    // The date has whole seconds and the test takes a moment: within a few seconds.
    assert!(after <= Duration::from_secs(120) && after >= Duration::from_secs(110), "{after:?}");
    // A date in the past means "now".
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
    let e =
        s.error(s.status(429, "Slow down", "rate_limit_exceeded").insert_header("Retry-After", past.as_str())).await;
    check(&e, AiErrorKind::RateLimited, Some(Duration::ZERO), &[]);
}

pub(crate) async fn http_429_prefers_retry_after_ms(s: &Suite) {
    let response = s
        .status(429, "Slow down", "rate_limit_exceeded")
        .insert_header("retry-after-ms", "250")
        .insert_header("Retry-After", "9");
    let e = s.error(response).await;
    check(&e, AiErrorKind::RateLimited, Some(Duration::from_millis(250)), &[]);
    let e = s.error(s.status(429, "Slow down", "rate_limit_exceeded")).await;
    check(&e, AiErrorKind::RateLimited, None, &[]);
}

pub(crate) async fn used_up_quota_is_permanent(s: &Suite) {
    if s.openai {
        let body = json!({"error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
        let e = s.error(ResponseTemplate::new(429).set_body_json(body).insert_header("Retry-After", "1")).await;
        check(&e, AiErrorKind::Permanent, None, &["insufficient_quota", "exceeded your current quota"]);
    } else {
        let e = s.error(s.status(402, "Project does not have enough credits", "ASR_PAYMENT_REQUIRED")).await;
        check(&e, AiErrorKind::Permanent, None, &["HTTP 402", "enough credits", "ASR_PAYMENT_REQUIRED"]);
    }
}

pub(crate) async fn client_errors_are_permanent(s: &Suite) {
    for status in [400, 404, 413, 415, 422] {
        let message = format!("refused with {status}");
        let e = s.error(s.status(status, &message, "invalid_request")).await;
        check(&e, AiErrorKind::Permanent, None, &[&format!("HTTP {status}"), &message, "invalid_request"]);
    }
}

pub(crate) async fn refused_keys_name_the_setting(s: &Suite) {
    for status in [401, 403] {
        // OpenAI quotes (part of) the key back: it must not reach the message.
        let message = format!("Incorrect API key provided: {KEY}. You can find your API key at ...");
        let e = s.error(s.status(status, &message, "invalid_api_key")).await;
        check(&e, AiErrorKind::Permanent, None, &[&format!("HTTP {status}"), API_KEY_SETTING, "key was refused"]);
        assert!(e.message().contains("***"), "{e}");
    }
    if s.key_optional {
        let server = MockServer::start().await;
        let response = s.status(401, "You didn't provide an API key.", "missing_api_key");
        Mock::given(method("POST")).and(path(s.path)).respond_with(response).mount(&server).await;
        let e = (s.call)(server.uri(), None, Duration::from_secs(10)).await.expect_err("401");
        check(&e, AiErrorKind::Permanent, None, &["no API key is set", API_KEY_SETTING]);
        let request = &server.received_requests().await.unwrap()[0];
        assert!(request.headers.get("authorization").is_none(), "no key, no Authorization header");
    }
}

pub(crate) async fn garbage_200_is_retryable(s: &Suite) {
    for body in ["<html>proxy says hi</html>", r#"{"unexpected": true}"#, ""] {
        let e = s.error(ResponseTemplate::new(200).set_body_string(body)).await;
        check(&e, AiErrorKind::Unavailable, None, &["HTTP 200 OK but not a valid"]);
        assert!(e.message().contains(body), "quotes the answer: {e}");
    }
}

pub(crate) async fn long_answers_are_truncated(s: &Suite) {
    let long = "x".repeat(5000);
    let e = s.error(s.status(500, &long, "server_error")).await;
    assert!(e.message().chars().count() < 500, "{} chars", e.message().chars().count());
    assert!(e.message().contains('…'));
}

/// One test per error class for the provider that `$suite` builds.
#[macro_export]
macro_rules! error_classes {
    ($suite:expr) => {
        mod error_classes {
            use super::*;

            #[tokio::test]
            async fn http_500_is_unavailable() {
                $crate::errors::http_500_is_unavailable(&$suite).await
            }
            #[tokio::test]
            async fn http_503_is_unavailable_with_retry_after() {
                $crate::errors::http_503_is_unavailable_with_retry_after(&$suite).await
            }
            #[tokio::test]
            async fn connection_refused_is_unavailable() {
                $crate::errors::connection_refused_is_unavailable(&$suite).await
            }
            #[tokio::test]
            async fn slow_answer_is_a_timeout() {
                $crate::errors::slow_answer_is_a_timeout(&$suite).await
            }
            #[tokio::test]
            async fn http_429_honours_retry_after_seconds() {
                $crate::errors::http_429_honours_retry_after_seconds(&$suite).await
            }
            #[tokio::test]
            async fn http_429_honours_retry_after_date() {
                $crate::errors::http_429_honours_retry_after_date(&$suite).await
            }
            #[tokio::test]
            async fn http_429_prefers_retry_after_ms() {
                $crate::errors::http_429_prefers_retry_after_ms(&$suite).await
            }
            #[tokio::test]
            async fn used_up_quota_is_permanent() {
                $crate::errors::used_up_quota_is_permanent(&$suite).await
            }
            #[tokio::test]
            async fn client_errors_are_permanent() {
                $crate::errors::client_errors_are_permanent(&$suite).await
            }
            #[tokio::test]
            async fn refused_keys_name_the_setting() {
                $crate::errors::refused_keys_name_the_setting(&$suite).await
            }
            #[tokio::test]
            async fn garbage_200_is_retryable() {
                $crate::errors::garbage_200_is_retryable(&$suite).await
            }
            #[tokio::test]
            async fn long_answers_are_truncated() {
                $crate::errors::long_answers_are_truncated(&$suite).await
            }
        }
    };
}
