//! The webhook outbox for admins: `GET /v1/webhooks/deliveries` and
//! `POST /v1/webhooks/deliveries/{id}/retry` (see [`crate::webhooks`]).

use chrono::{DateTime, Utc};
use pbx_core::webhooks::{Delivery, Redelivery};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::constraints::{Constrained, PageLimitRule};
use super::{ApiTags, Ctx};
use crate::auth::{Auth, Role};
use crate::error::status::{AUTH, BAD_REQUEST, CONFLICT, NOT_FOUND, STORE};
use crate::error::{ApiError, ErrorBody, Errors};

/// The completion webhooks' deliveries (role `admin`).
#[derive(Debug, Clone)]
pub struct WebhooksApi {
    pub(crate) ctx: Ctx,
}

/// One webhook message to one URL.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct DeliveryView {
    /// Its id in the outbox (for re-driving).
    pub id: u64,
    /// The `webhook-id` header: the same on every attempt.
    pub message_id: String,
    /// The event it announces (the feed's cursor).
    pub event_id: u64,
    /// The call.
    pub call_id: String,
    /// The webhook's `type`: `call.archived`, `call.failed`, or `call.<event type>`.
    #[oai(rename = "type")]
    pub kind: String,
    /// The URL it goes to.
    pub url: String,
    /// `pending` (waiting or being sent), `delivered` (2xx) or `dead` (given up).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When a pending delivery is next tried.
    #[oai(nullable)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered or given up.
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            message_id: d.message_id,
            event_id: d.event_id,
            call_id: d.call_id.to_string(),
            kind: d.kind,
            url: d.endpoint,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            last_error: d.last_error,
            created_at: d.created_at,
            next_attempt_at: d.next_attempt_at,
            finished_at: d.finished_at,
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct DeliveryPageView {
    /// The deliveries.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next (older) page; `null` on the last.
    #[oai(nullable)]
    pub next_before: Option<u64>,
}

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Recent webhook deliveries, newest first (role `admin`).
    #[oai(path = "/v1/webhooks/deliveries", method = "get", operation_id = "list_webhook_deliveries")]
    async fn list(
        &self,
        auth: Auth,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<Constrained<u32, PageLimitRule>>>,
        /// Only deliveries with an id below this: the previous page's `next_before`.
        before: Query<Option<u64>>,
    ) -> Result<Json<DeliveryPageView>, Errors<{ BAD_REQUEST | AUTH | STORE }>> {
        self.ctx.keys.authorize(&auth, Role::Admin)?;
        let limit = limit.0.map_or(super::calls::DEFAULT_LIST_LIMIT, |l| l.0) as usize;
        let found = self.ctx.gateway.store().deliveries(limit, before.0).await?;
        let next_before = (found.len() == limit).then(|| found.last().map(|d| d.id)).flatten();
        Ok(Json(DeliveryPageView { deliveries: found.into_iter().map(Into::into).collect(), next_before }))
    }

    /// Re-drive a dead delivery (role `admin`): pending again, sent at once, with a
    /// fresh attempt budget and the same `webhook-id`.
    ///
    /// A delivery that is not dead is a 409.
    #[oai(path = "/v1/webhooks/deliveries/:id/retry", method = "post", operation_id = "retry_webhook_delivery")]
    async fn retry(
        &self,
        auth: Auth,
        /// The delivery's id.
        id: Path<u64>,
    ) -> Result<Json<DeliveryView>, Errors<{ BAD_REQUEST | AUTH | NOT_FOUND | CONFLICT | STORE }>> {
        self.ctx.keys.authorize(&auth, Role::Admin)?;
        match self.ctx.gateway.store().retry_delivery(id.0, Utc::now()).await? {
            Redelivery::Retried(d) => Ok(Json(d.into())),
            Redelivery::NotDead(d) => Err(ApiError::Conflict(ErrorBody::new(
                "not_dead",
                format!("delivery {} is {}; only a dead one can be re-driven", d.id, d.status.as_str()),
            ))
            .into()),
            Redelivery::Unknown => {
                Err(ApiError::NotFound(ErrorBody::new("not_found", format!("no webhook delivery {}", id.0))).into())
            }
        }
    }
}
