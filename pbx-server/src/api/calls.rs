//! Calls: hang-up, reads, listing, re-drive.

use pbx_core::store::ListQuery;
use pbx_core::{CallId, CallState};
use poem_openapi::ApiResponse;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};

use super::constraints::{CallIdParam, Constrained, CursorRule, PageLimitRule, StateFilterRule};
use super::types::{CallPageView, CallView, TransitionView};
use super::{ApiTags, Ctx};
use crate::auth::{Auth, Role};
use crate::error::status::{AUTH, BAD_REQUEST, CONFLICT, GONE, NOT_FOUND, STORE};
use crate::error::{ApiError, Errors};

/// A hang-up: a bad id, the key, an unknown call, the store.
const COMPLETE: u16 = BAD_REQUEST | AUTH | NOT_FOUND | STORE;
/// A read of one call: the same.
const READ: u16 = BAD_REQUEST | AUTH | NOT_FOUND | STORE;
/// A recording: also 409 (no audio, or too much for a WAV) and 410 (packets deleted
/// by retention).
const RECORDING: u16 = READ | CONFLICT | GONE;
/// A listing: bad parameters, the key, the store.
const LIST: u16 = BAD_REQUEST | AUTH | STORE;
/// A re-drive: also 409 (the call is not FAILED).
const RETRY: u16 = READ | CONFLICT;

/// The default page size of `GET /v1/calls`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// Call lifecycle and reads.
#[derive(Debug, Clone)]
pub struct CallsApi {
    pub(crate) ctx: Ctx,
}

#[OpenApi(tag = "ApiTags::Calls")]
impl CallsApi {
    /// Hang up a call (role `ingest`); its AI work starts at once.
    ///
    /// Idempotent: hanging up a call already past IN_PROGRESS changes nothing and
    /// answers `applied: false` with its current state.
    #[oai(path = "/v1/calls/:call_id/complete", method = "post", operation_id = "complete_call")]
    async fn complete(
        &self,
        auth: Auth,
        /// The call.
        call_id: Path<CallIdParam>,
    ) -> Result<Json<TransitionView>, Errors<COMPLETE>> {
        self.ctx.keys.authorize(&auth, Role::Ingest)?;
        let call_id = CallId::new(call_id.0.0)?;
        let t = self.ctx.gateway.complete(&call_id).await?;
        Ok(Json(TransitionView::new(&call_id, t)))
    }

    /// A call's state, ordering report, AI attempts and result (role `supervisor`).
    #[oai(path = "/v1/calls/:call_id", method = "get", operation_id = "get_call")]
    async fn get(
        &self,
        auth: Auth,
        /// The call.
        call_id: Path<CallIdParam>,
    ) -> Result<Json<CallView>, Errors<READ>> {
        self.ctx.keys.authorize(&auth, Role::Supervisor)?;
        let call_id = CallId::new(call_id.0.0)?;
        let snapshot = self.ctx.gateway.call(&call_id).await?;
        Ok(Json(CallView::new(snapshot, self.ctx.gateway.config().default_media_format)))
    }

    /// A call's recording as a WAV file (role `supervisor`).
    ///
    /// PCM 16-bit at the call's sample rate: one channel for a mono call, two for a
    /// stereo format or a call with a second track (channel 0 left, channel 1 right).
    /// Frames play in sequence order; a missing frame, a text payload and an
    /// undecodable frame each play as one frame of silence, so the file lasts exactly
    /// as long as the call's highest sequence says. Streamed from the store a page at a
    /// time, with its `Content-Length` known up front. A call with no packet has no
    /// audio: 409 `no_audio` (not an empty WAV, so that a player never shows a 0 s
    /// recording as if it were one); nor does a call whose highest sequence makes a
    /// file longer than 12 hours or than a WAV can hold: 409 `audio_too_long`. Works
    /// in any state, also while the call streams. Once retention (`--retain-packets`)
    /// deleted the call's packets: 410 `packets_deleted`, saying when (the call itself,
    /// its counters and result remain, and `packets_swept` in its view says what the
    /// packets were).
    #[oai(path = "/v1/calls/:call_id/recording.wav", method = "get", operation_id = "get_recording")]
    async fn recording(
        &self,
        auth: Auth,
        /// The call.
        call_id: Path<CallIdParam>,
    ) -> Result<RecordingResponse, Errors<RECORDING>> {
        self.ctx.keys.authorize(&auth, Role::Supervisor)?;
        let call_id = CallId::new(call_id.0.0)?;
        let recording = self.ctx.gateway.recording(&call_id).await?;
        let length = recording.content_length();
        let disposition = format!("attachment; filename=\"{call_id}.wav\"");
        let chunks = futures::stream::try_unfold(recording, |mut recording| async move {
            match recording.next_chunk().await {
                Ok(Some(chunk)) => Ok(Some((bytes::Bytes::from(chunk), recording))),
                Ok(None) => Ok(None),
                Err(error) => {
                    // The status is sent already; cutting the body short is what tells
                    // the client (its Content-Length is not reached).
                    tracing::warn!(call_id = %recording.call_id(), %error, "recording stream failed");
                    Err(std::io::Error::other(error.to_string()))
                }
            }
        });
        Ok(RecordingResponse::Wav(Binary(poem::Body::from_bytes_stream(chunks)), disposition, length))
    }

    /// List calls ascending by id, optionally in one state (role `supervisor`).
    #[oai(path = "/v1/calls", method = "get", operation_id = "list_calls")]
    async fn list(
        &self,
        auth: Auth,
        /// Only calls in this state: IN_PROGRESS, COMPLETED, PROCESSING_AI, ARCHIVED or
        /// FAILED; empty for every state.
        state: Query<Option<Constrained<String, StateFilterRule>>>,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<Constrained<u32, PageLimitRule>>>,
        /// Only calls after this id: the previous page's `next_cursor`; empty for the
        /// first page.
        cursor: Query<Option<Constrained<String, CursorRule>>>,
    ) -> Result<Json<CallPageView>, Errors<LIST>> {
        self.ctx.keys.authorize(&auth, Role::Supervisor)?;
        let state = match state.0.map(|s| s.0).filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse::<CallState>().map_err(|e| ApiError::bad_request("invalid_state", e.to_string()))?),
            None => None,
        };
        let after = match cursor.0.map(|c| c.0).filter(|c| !c.is_empty()) {
            Some(c) => Some(CallId::new(c).map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?),
            None => None,
        };
        let limit = limit.0.map_or(DEFAULT_LIST_LIMIT, |l| l.0) as usize;
        let page = self.ctx.gateway.list(&ListQuery { state, limit, after }).await?;
        Ok(Json(page.into()))
    }

    /// Re-drive a FAILED call (role `admin`): back to COMPLETED, its AI work runs again.
    ///
    /// A call in any other state is a 409.
    #[oai(path = "/v1/calls/:call_id/retry", method = "post", operation_id = "retry_call")]
    async fn retry(
        &self,
        auth: Auth,
        /// The call.
        call_id: Path<CallIdParam>,
    ) -> Result<Json<TransitionView>, Errors<RETRY>> {
        self.ctx.keys.authorize(&auth, Role::Admin)?;
        let call_id = CallId::new(call_id.0.0)?;
        let t = self.ctx.gateway.redrive(&call_id).await?;
        Ok(Json(TransitionView::new(&call_id, t)))
    }
}

/// The answer of `GET /v1/calls/{call_id}/recording.wav`.
#[derive(ApiResponse)]
pub enum RecordingResponse {
    /// The recording.
    #[oai(status = 200, content_type = "audio/wav")]
    Wav(
        Binary<poem::Body>,
        /// `attachment; filename="<call_id>.wav"`.
        #[oai(header = "Content-Disposition")]
        String,
        /// Bytes of the whole file.
        #[oai(header = "Content-Length")]
        u64,
    ),
}

impl std::fmt::Debug for RecordingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordingResponse::Wav(_, disposition, length) => {
                f.debug_tuple("Wav").field(disposition).field(length).finish_non_exhaustive()
            }
        }
    }
}
