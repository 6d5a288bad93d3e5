//! Liveness and readiness.

use poem_openapi::OpenApi;
use poem_openapi::payload::Json;

use super::types::HealthView;
use super::{ApiTags, Ctx};
use crate::error::Errors;
use crate::error::status::STORE;

/// Health probes (no key needed).
#[derive(Debug, Clone)]
pub struct HealthApi {
    pub(crate) ctx: Ctx,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// The process is alive.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<HealthView> {
        Json(HealthView { status: "ok".into() })
    }

    /// The store is reachable (503 with `Retry-After` when it is not).
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Result<Json<HealthView>, Errors<STORE>> {
        self.ctx.gateway.ready().await?;
        Ok(Json(HealthView { status: "ready".into() }))
    }
}
