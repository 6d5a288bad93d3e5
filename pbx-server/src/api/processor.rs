//! The AI processor's live status for supervisors: `GET /v1/processor`.

use poem_openapi::OpenApi;
use poem_openapi::payload::Json;

use super::types::ProcessorView;
use super::{ApiTags, Ctx};
use crate::auth::{Auth, Role};
use crate::error::status::{AUTH, NOT_FOUND};
use crate::error::{ApiError, ErrorBody, Errors};

/// The AI processor of this server (role `supervisor`).
#[derive(Debug, Clone)]
pub struct ProcessorApi {
    pub(crate) ctx: Ctx,
}

#[OpenApi(tag = "ApiTags::Processor")]
impl ProcessorApi {
    /// What this server's AI processor is doing: attempts and AI requests in flight, and
    /// the most AI requests it ever had in flight at once (never more than its
    /// concurrency). 404 when the server runs without a processor.
    #[oai(path = "/v1/processor", method = "get", operation_id = "processor_status")]
    async fn status(&self, auth: Auth) -> Result<Json<ProcessorView>, Errors<{ AUTH | NOT_FOUND }>> {
        self.ctx.keys.authorize(&auth, Role::Supervisor)?;
        let processor = self.ctx.processor.as_ref().ok_or_else(|| {
            ApiError::NotFound(ErrorBody::new("no_processor", "this server runs no AI processor (--no-processor)"))
        })?;
        Ok(Json(ProcessorView::from(processor.status())))
    }
}
