//! The live feed for supervisors: `GET /v1/events` as Server-Sent Events.

use std::time::Duration;

use futures::Stream;
use futures::stream::BoxStream;
use pbx_core::CallId;
use pbx_core::events::Event;
use poem_openapi::OpenApi;
use poem_openapi::param::Query;
use poem_openapi::payload::EventStream;
use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::constraints::CallIdParam;
use super::types::EventView;
use super::{ApiTags, Ctx};
use crate::auth::{Auth, Role};
use crate::error::Errors;
use crate::error::status::{AUTH, BAD_REQUEST};

/// How often an idle feed sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Live events (role `supervisor`).
#[derive(Debug, Clone)]
pub struct EventsApi {
    pub(crate) ctx: Ctx,
}

#[OpenApi(tag = "ApiTags::Events")]
impl EventsApi {
    /// Watch calls live: state changes, ordering anomalies, failed AI attempts.
    ///
    /// Server-Sent Events; each `data:` line is one JSON event. A subscriber that falls
    /// behind receives a `lagged` event saying how many it missed.
    #[oai(path = "/v1/events", method = "get", operation_id = "events")]
    async fn events(
        &self,
        auth: Auth,
        /// Only events of this call.
        call_id: Query<Option<CallIdParam>>,
    ) -> Result<EventStream<BoxStream<'static, EventView>>, Errors<{ BAD_REQUEST | AUTH }>> {
        self.ctx.keys.authorize(&auth, Role::Supervisor)?;
        let only = call_id.0.map(|id| CallId::new(id.0)).transpose()?;
        let stream = feed(self.ctx.gateway.subscribe(), only);
        Ok(EventStream::new(Box::pin(stream) as BoxStream<'static, EventView>).keep_alive(KEEP_ALIVE))
    }
}

/// The events of `rx` (of one call when `only` is set) as views, until the channel closes.
fn feed(rx: Receiver<Event>, only: Option<CallId>) -> impl Stream<Item = EventView> + Send + 'static {
    futures::stream::unfold((rx, only), |(mut rx, only)| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if only.as_ref().is_some_and(|id| id != event.call_id()) {
                        continue;
                    }
                    if let Some(view) = EventView::from_event(&event) {
                        return Some((view, (rx, only)));
                    }
                }
                Err(RecvError::Lagged(missed)) => return Some((EventView::lagged(missed), (rx, only))),
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
