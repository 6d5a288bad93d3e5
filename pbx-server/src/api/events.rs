//! The live feed for supervisors: `GET /v1/events` (Server-Sent Events), the tickets
//! browsers use to open it and `GET /v1/events/ws` (see [`super::ws`]), both over the
//! gateway's resumable [`Feed`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use pbx_core::events::{EventFilter, EventId};
use pbx_core::gateway::{Feed, FeedItem, GatewayError};
use poem::web::sse::Event as SseEvent;
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{Object, OpenApi};

use super::feed::{FeedMessage, Rendered, parse_filter};
use super::{ApiTags, Ctx};
use crate::auth::{Auth, Role};
use crate::error::status::{AUTH, BAD_REQUEST, STORE};
use crate::error::{ApiError, Errors};

/// How often an idle feed sends a keep-alive (an SSE comment, a WebSocket ping).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Live events (role `supervisor`).
#[derive(Debug, Clone)]
pub struct EventsApi {
    pub(crate) ctx: Ctx,
}

/// A ticket for opening a feed without an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct TicketView {
    /// Pass as `?ticket=` to `GET /v1/events/ws` or `GET /v1/events`; valid once.
    pub ticket: String,
    /// When it stops being accepted (a minute after issue).
    pub expires_at: DateTime<Utc>,
    /// The role of the key that asked for it (`admin` when the API is open): what the
    /// holder may do, so a board can hide what it may not.
    pub role: String,
}

impl Ctx {
    /// Authorizes a feed: a supervisor key in `Authorization`, or a ticket issued for
    /// one (browsers cannot send headers on WebSockets and EventSources).
    pub(crate) fn authorize_feed(&self, auth: &Auth, ticket: Option<&str>) -> Result<(), ApiError> {
        if self.keys.is_open() {
            return Ok(());
        }
        let Some(ticket) = ticket else { return self.keys.authorize(auth, Role::Supervisor) };
        let role = self.tickets.redeem(ticket, Utc::now()).map_err(|e| ApiError::unauthorized(e.to_string()))?;
        if role.allows(Role::Supervisor) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("the event feed needs the supervisor role; the ticket has {role}")))
        }
    }

    /// Opens the gateway's feed after `since` (live from now without it).
    pub(crate) async fn open_feed(&self, since: Option<EventId>) -> Result<Feed, ApiError> {
        self.gateway.feed(since).await.map_err(ApiError::from)
    }
}

#[OpenApi(tag = "ApiTags::Events")]
impl EventsApi {
    /// Follow calls live as Server-Sent Events.
    ///
    /// Each event's `data:` is one JSON message (the `FeedMessage` union: `call_created`,
    /// `state_changed`, `ordering_anomaly`, `attempt_started`, `attempt_failed`,
    /// `attempt_succeeded`, `transcript_ready`, `redriven`, `stream_started`,
    /// `stream_ended`, and the feed's own `resync` and `lagged`), its `event:` the
    /// message's type and its `id:` the log's cursor. Reconnecting with `Last-Event-ID`
    /// (browsers do it on their own) or `?since=` replays every event after that id,
    /// then goes live, with no gap and no duplicate. The same feed as a WebSocket is
    /// `GET /v1/events/ws`, with the same parameters.
    #[oai(path = "/v1/events", method = "get", operation_id = "events")]
    #[allow(clippy::too_many_arguments)] // each is one documented query parameter
    async fn events(
        &self,
        auth: Auth,
        /// Replay every event after this cursor, then go live (default: live from now).
        since: Query<Option<u64>>,
        /// The cursor a reconnecting EventSource sends; `since` wins when both are set.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<u64>>,
        /// Only events of this call.
        call_id: Query<Option<super::constraints::CallIdParam>>,
        /// Only events of these types (repeatable).
        #[oai(name = "type")]
        types: Query<Vec<super::feed::EventTypeParam>>,
        /// Only events that put a call in this state (`call_created` for IN_PROGRESS,
        /// `state_changed` by its `to`).
        state: Query<Option<super::types::StateView>>,
        /// A ticket from `POST /v1/events/ticket`, for clients that cannot send a key.
        ticket: Query<Option<String>>,
    ) -> Result<EventStream<BoxStream<'static, FeedMessage>>, Errors<{ BAD_REQUEST | AUTH | STORE }>> {
        self.ctx.authorize_feed(&auth, ticket.0.as_deref())?;
        let state = state.0.map(|s| pbx_core::CallState::from(s).as_str().to_owned());
        let types: Vec<String> = types.0.iter().map(|t| t.name()).collect();
        let filter = parse_filter(call_id.0.as_ref().map(|c| c.0.as_str()), &types, state.as_deref())?;
        let feed = self.ctx.open_feed(since.0.or(last_event_id.0)).await?;
        let stream = messages(feed, filter, self.ctx.closing.clone());
        Ok(EventStream::new(stream).keep_alive(KEEP_ALIVE).to_event(|message| {
            let data = poem_openapi::types::ToJSON::to_json_string(&message);
            SseEvent::message(data).event_type(message.type_name()).id(message.id().to_string())
        }))
    }

    /// A one-minute ticket for opening a feed from a browser.
    ///
    /// Browsers cannot send `Authorization` on a WebSocket or an EventSource: a page
    /// holding a key asks for a ticket and opens `GET /v1/events/ws?ticket=...`. A
    /// ticket is valid once, for a minute, on any instance configured with the same
    /// keys, and carries the key's role (answered here as `role`).
    #[oai(path = "/v1/events/ticket", method = "post", operation_id = "events_ticket")]
    async fn ticket(&self, auth: Auth) -> Result<Json<TicketView>, Errors<{ AUTH }>> {
        let role = self.ctx.keys.role(&auth)?;
        let (ticket, expires_at) = self.ctx.tickets.issue(role, Utc::now());
        Ok(Json(TicketView { ticket, expires_at, role: role.as_str().to_owned() }))
    }
}

/// The feed's messages that pass `filter`, until the gateway stops, the store fails
/// (the client reconnects with its last id) or the server shuts down.
pub(crate) fn messages(feed: Feed, filter: EventFilter, closing: super::Closing) -> BoxStream<'static, FeedMessage> {
    render(feed, filter, closing, FeedMessage::from_item)
}

/// [`messages`] as their JSON text, through the shared [`Rendered`] cache.
pub(crate) fn texts(
    feed: Feed,
    filter: EventFilter,
    closing: super::Closing,
    rendered: Arc<Rendered>,
) -> BoxStream<'static, Arc<str>> {
    render(feed, filter, closing, move |item, filter| rendered.text(item, filter))
}

/// The feed's items that `render` makes something of.
fn render<T: Send + 'static>(
    feed: Feed,
    filter: EventFilter,
    closing: super::Closing,
    render: impl Fn(&FeedItem, &EventFilter) -> Option<T> + Send + Sync + 'static,
) -> BoxStream<'static, T> {
    let render = Arc::new(render);
    Box::pin(futures::stream::unfold((feed, filter, closing), move |(mut feed, filter, mut closing)| {
        let render = render.clone();
        async move {
            loop {
                let item = tokio::select! {
                    item = feed.next() => item,
                    () = closing.wait() => return None,
                };
                match item {
                    Ok(item) => {
                        if let Some(message) = render(&item, &filter) {
                            return Some((message, (feed, filter, closing)));
                        }
                    }
                    Err(GatewayError::ShuttingDown) => return None,
                    Err(error) => {
                        tracing::warn!(%error, cursor = feed.cursor(), "event feed: store failed; closing the stream");
                        return None;
                    }
                }
            }
        }
    }))
}
