//! The one place where failures become HTTP statuses and JSON error bodies.
//!
//! Every error answer is `{"error": code, "message": text}`. Errors of pbx-core map
//! through [`ApiError::from`]; errors poem and poem-openapi raise before a handler runs
//! (invalid JSON, a missing field, a bad query parameter, an unknown route, a body over
//! the limit) are rewritten by [`json_error_response`].
//!
//! Each operation declares in its signature which of these it can answer, with
//! [`Errors`]: `Result<Json<CallView>, Errors<{ READ_CALL }>>` documents exactly those
//! statuses in the OpenAPI document, and an answer outside them is a bug the debug
//! build (the tests, schemathesis) stops at.

use pbx_core::gateway::GatewayError;
use pbx_core::store::{PacketRejection, StoreError};
use pbx_core::{InvalidCallId, PacketError};
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object};

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `invalid_packet` or `call_closed`.
    pub error: String,
    /// What went wrong, for humans.
    pub message: String,
}

impl ErrorBody {
    pub(crate) fn new(error: &str, message: impl Into<String>) -> Json<Self> {
        Json(Self { error: error.to_owned(), message: message.into() })
    }
}

/// Every error an operation can answer.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Malformed input: bad call id, bad packet, missing or mistyped fields, invalid JSON.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No API key, or an unknown one.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The API key's role does not allow this operation.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No call has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The call does not take this operation in its state (closed to packets, not
    /// FAILED for a re-drive, no audio for a recording, or more audio than a WAV file
    /// holds), the sequence was stored before with different data, or the call was
    /// declared with another media format.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The call's packets were deleted by retention (`--retain-packets`): the call,
    /// its counters and its result remain, its audio does not.
    #[oai(status = 410)]
    Gone(Json<ErrorBody>),
    /// The body or the batch is larger than allowed.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not JSON (`Content-Type` other than `application/json`; none, or
    /// a form's, is read as JSON).
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A failure on the server's side.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The store is unavailable or the server is shutting down; retry after the given
    /// number of seconds.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest(ErrorBody::new(code, message))
    }

    /// A 401: no key, or an unknown key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::Unauthorized(ErrorBody::new("unauthorized", message))
    }

    /// A 403: the key's role is not enough.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(ErrorBody::new("forbidden", message))
    }

    fn unavailable(code: &str, message: impl Into<String>) -> Self {
        ApiError::Unavailable(ErrorBody::new(code, message), RETRY_AFTER_SECS)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error body.
    pub fn body(&self) -> &ErrorBody {
        match self {
            ApiError::BadRequest(b)
            | ApiError::Unauthorized(b)
            | ApiError::Forbidden(b)
            | ApiError::NotFound(b)
            | ApiError::Conflict(b)
            | ApiError::Gone(b)
            | ApiError::PayloadTooLarge(b)
            | ApiError::UnsupportedMediaType(b)
            | ApiError::Internal(b)
            | ApiError::Unavailable(b, _) => b,
        }
    }
}

/// The error statuses an operation can answer, one bit each, for [`Errors`].
pub mod status {
    /// 400: malformed input.
    pub const BAD_REQUEST: u16 = 1 << 0;
    /// 401 and 403: the API key (operations that need a role).
    pub const AUTH: u16 = 1 << 1;
    /// 404: no such call.
    pub const NOT_FOUND: u16 = 1 << 2;
    /// 409: the call's state or earlier packets refuse it.
    pub const CONFLICT: u16 = 1 << 3;
    /// 413 and 415: a JSON request body, over the limit or not JSON.
    pub const BODY: u16 = 1 << 4;
    /// 500 and 503: the store failed or is unavailable, or the server is stopping.
    pub const STORE: u16 = 1 << 5;
    /// 410: the call's packets were deleted by retention.
    pub const GONE: u16 = 1 << 6;

    /// The bit of `status`, 0 for a status no [`super::ApiError`] has.
    pub const fn bit(status: u16) -> u16 {
        match status {
            400 => BAD_REQUEST,
            401 | 403 => AUTH,
            404 => NOT_FOUND,
            409 => CONFLICT,
            410 => GONE,
            413 | 415 => BODY,
            500 | 503 => STORE,
            _ => 0,
        }
    }
}

/// An [`ApiError`] of an operation that answers only the statuses in `S` (bits of
/// [`status`]): its OpenAPI responses are those, with their schemas.
#[derive(Debug)]
pub struct Errors<const S: u16>(pub ApiError);

impl<const S: u16> Errors<S> {
    fn into_error(self) -> poem::Error {
        let status = self.0.status().as_u16();
        if S & status::bit(status) == 0 {
            tracing::error!(status, error = %self.0.body().error, "an operation answered a status it does not declare");
            debug_assert!(false, "undeclared status {status}: {:?}", self.0);
        }
        self.0.into()
    }
}

impl<const S: u16> ApiResponse for Errors<S> {
    fn meta() -> MetaResponses {
        let mut meta = ApiError::meta();
        meta.responses.retain(|r| r.status.is_some_and(|s| S & status::bit(s) != 0));
        meta
    }

    fn register(registry: &mut Registry) {
        ApiError::register(registry);
    }
}

impl<const S: u16> IntoResponse for Errors<S> {
    fn into_response(self) -> Response {
        self.into_error().into_response()
    }
}

impl<const S: u16> From<Errors<S>> for poem::Error {
    fn from(e: Errors<S>) -> Self {
        e.into_error()
    }
}

macro_rules! errors_from {
    ($($source:ty),*) => {$(
        impl<const S: u16> From<$source> for Errors<S> {
            fn from(e: $source) -> Self {
                Errors(e.into())
            }
        }
    )*};
}

errors_from!(ApiError, InvalidCallId, PacketError, PacketRejection, StoreError, GatewayError);

impl From<InvalidCallId> for ApiError {
    fn from(e: InvalidCallId) -> Self {
        ApiError::bad_request("invalid_call_id", e.to_string())
    }
}

impl From<PacketError> for ApiError {
    fn from(e: PacketError) -> Self {
        ApiError::bad_request("invalid_packet", e.to_string())
    }
}

impl From<PacketRejection> for ApiError {
    fn from(e: PacketRejection) -> Self {
        let (code, message) = rejection(&e);
        ApiError::Conflict(ErrorBody::new(code, message))
    }
}

/// The error code and message of a refused packet.
pub(crate) fn rejection(e: &PacketRejection) -> (&'static str, String) {
    let code = match e {
        PacketRejection::Conflict { .. } => "conflict",
        PacketRejection::CallClosed { .. } => "call_closed",
        _ => "rejected",
    };
    (code, e.to_string())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { .. } => ApiError::NotFound(ErrorBody::new("not_found", e.to_string())),
            StoreError::InvalidTransition { .. } => {
                ApiError::Conflict(ErrorBody::new("invalid_transition", e.to_string()))
            }
            StoreError::Fenced { .. } => ApiError::Conflict(ErrorBody::new("fenced", e.to_string())),
            StoreError::FormatConflict { .. } => ApiError::Conflict(ErrorBody::new("format_conflict", e.to_string())),
            StoreError::InvalidArgument(_) => ApiError::bad_request("invalid_argument", e.to_string()),
            _ if e.is_retryable() => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::unavailable("unavailable", e.to_string())
            }
            _ => {
                tracing::error!(error = &e as &dyn std::error::Error, "store failure");
                ApiError::Internal(ErrorBody::new("internal", "internal store error; see the server log"))
            }
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::InvalidPacket(e) => e.into(),
            GatewayError::Rejected(e) => e.into(),
            GatewayError::BatchTooLarge { .. } => {
                ApiError::PayloadTooLarge(ErrorBody::new("batch_too_large", e.to_string()))
            }
            GatewayError::Store(e) => e.into(),
            GatewayError::NoAudio { .. } => ApiError::Conflict(ErrorBody::new("no_audio", e.to_string())),
            // The request is fine; the call's audio is what a WAV cannot hold.
            GatewayError::Audio(_) => ApiError::Conflict(ErrorBody::new("audio_too_long", e.to_string())),
            GatewayError::ShuttingDown => ApiError::unavailable("shutting_down", e.to_string()),
            GatewayError::PacketsSwept { .. } => ApiError::Gone(ErrorBody::new("packets_deleted", e.to_string())),
            _ if e.is_retryable() => ApiError::unavailable("unavailable", e.to_string()),
            _ => {
                tracing::error!(error = &e as &dyn std::error::Error, "gateway failure");
                ApiError::Internal(ErrorBody::new("internal", "internal error; see the server log"))
            }
        }
    }
}

/// Rewrites an error raised outside a handler (or a handler's own [`ApiError`]) as a
/// JSON error answer with the same status.
pub async fn json_error_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        // An ApiError a handler returned: already a JSON answer.
        return err.into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = if status == StatusCode::UNAUTHORIZED {
        "a valid API key is required: Authorization: Bearer <key>".to_owned()
    } else {
        err.to_string()
    };
    if status.is_server_error() {
        tracing::error!(%status, error = %err, "request failed");
    }
    let body = ErrorBody::new(code, message);
    let mut response = body.into_response();
    response.set_status(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert("retry-after", RETRY_AFTER_SECS.into());
    }
    response
}

#[cfg(test)]
mod tests {
    use pbx_core::CallId;
    use pbx_core::state::CallState;

    use super::*;

    fn call() -> CallId {
        CallId::new("c1").unwrap()
    }

    #[test]
    fn maps_each_gateway_error_to_its_status() {
        let cases: Vec<(GatewayError, StatusCode, &str)> = vec![
            (PacketError::SequenceOutOfRange(0).into(), StatusCode::BAD_REQUEST, "invalid_packet"),
            (PacketRejection::Conflict { call_id: call(), sequence: 1 }.into(), StatusCode::CONFLICT, "conflict"),
            (
                PacketRejection::CallClosed { call_id: call(), state: CallState::Completed }.into(),
                StatusCode::CONFLICT,
                "call_closed",
            ),
            (GatewayError::BatchTooLarge { len: 2, limit: 1 }, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            (StoreError::NotFound { call_id: call() }.into(), StatusCode::NOT_FOUND, "not_found"),
            (StoreError::InvalidArgument("limit".into()).into(), StatusCode::BAD_REQUEST, "invalid_argument"),
            (StoreError::unavailable("down").into(), StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            (GatewayError::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            (GatewayError::NoAudio { call_id: call() }, StatusCode::CONFLICT, "no_audio"),
            (
                GatewayError::PacketsSwept { call_id: call(), swept_at: chrono::DateTime::UNIX_EPOCH },
                StatusCode::GONE,
                "packets_deleted",
            ),
            (
                StoreError::FormatConflict {
                    call_id: call(),
                    declared: pbx_core::MediaFormat::TELEPHONY,
                    requested: "l16/16000/1".parse().unwrap(),
                }
                .into(),
                StatusCode::CONFLICT,
                "format_conflict",
            ),
            (StoreError::backend("boom").into(), StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status(), api.body().error.as_str()), (status, code));
        }
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let response = ApiError::from(GatewayError::ShuttingDown).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    }
}
