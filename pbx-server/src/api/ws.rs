//! `GET /v1/events/ws`: the event feed as a WebSocket of JSON text messages.
//!
//! Query parameters as `GET /v1/events`: `since`, `call_id`, `type` (repeatable),
//! `state`, `ticket`. Authorization is checked before the upgrade (401/403 as JSON,
//! like every route). Then every message is one [`FeedMessage`](super::feed::FeedMessage); the server pings every
//! [`KEEP_ALIVE`], closes with 1001 (going away) on shutdown and with 1011 when the
//! store fails (reconnect with `since` = the last id you saw), and drops a client
//! that does not take a message for [`SEND_TIMEOUT`]. Text the client sends is ignored.
//! Messages that are ready together go out in one write, and a socket rests
//! [`COALESCE`] after each write, so a burst of events costs each subscriber a few
//! writes and wake-ups rather than one per event.
//! A client that reads slowly never slows ingest: it falls behind the shared ring,
//! gets `lagged`, and is served from the log.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use poem::web::Data;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{IntoResponse, Request, Response, handler};

use super::Ctx;
use super::events::{KEEP_ALIVE, texts};
use super::feed::parse_filter;
use crate::auth::ApiKeys;
use crate::error::ApiError;

/// How long a message may wait for a client to take it before the client is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The parsed query of the WebSocket route.
#[derive(Debug, Default)]
struct Params {
    since: Option<u64>,
    call_id: Option<String>,
    types: Vec<String>,
    state: Option<String>,
    ticket: Option<String>,
}

fn parse_params(query: &str) -> Result<Params, ApiError> {
    let mut params = Params::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match &*name {
            "since" => {
                let since = value.parse().map_err(|_| {
                    ApiError::bad_request("invalid_request", format!("since: {value:?} is not an event id"))
                })?;
                params.since = Some(since);
            }
            "call_id" => params.call_id = Some(value),
            "type" => params.types.push(value),
            "state" => params.state = Some(value),
            "ticket" => params.ticket = Some(value),
            other => {
                return Err(ApiError::bad_request("invalid_request", format!("unknown query parameter {other:?}")));
            }
        }
    }
    Ok(params)
}

#[handler]
pub(crate) async fn events_ws(req: &Request, ws: WebSocket, Data(ctx): Data<&Ctx>) -> Response {
    match open(req, ctx).await {
        Ok((feed, filter)) => {
            let closing = ctx.closing.clone();
            let rendered = ctx.rendered.clone();
            ws.config(socket_config())
                .on_upgrade(move |socket| serve(socket, texts(feed, filter, closing.clone(), rendered), closing))
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}

async fn open(req: &Request, ctx: &Ctx) -> Result<(pbx_core::gateway::Feed, pbx_core::events::EventFilter), ApiError> {
    let params = parse_params(req.uri().query().unwrap_or_default())?;
    let header = req.headers().get(poem::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    ctx.authorize_feed(&ApiKeys::from_header(header), params.ticket.as_deref())?;
    let filter = parse_filter(params.call_id.as_deref(), &params.types, params.state.as_deref())?;
    let feed = ctx.open_feed(params.since).await?;
    Ok((feed, filter))
}

/// The feed's sockets read only pings, pongs and a close: a small read buffer (the
/// library's default is 128 KiB per socket, allocated up front and zeroed on reads)
/// and a small limit on what a client may send.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).max_message_size(Some(64 * 1024)).max_frame_size(Some(64 * 1024))
}

/// Messages that are ready together go out in one write, at most this many.
const MAX_BATCH: usize = 1024;

/// After a write, a subscriber waits this long before the next one, so that a burst
/// of events goes out in a few writes instead of waking every subscriber for every
/// event. An event that arrives while a subscriber is idle goes out at once.
pub const COALESCE: Duration = Duration::from_millis(10);

async fn serve(socket: WebSocketStream, texts: BoxStream<'static, Arc<str>>, mut closing: super::Closing) {
    let (mut sink, mut incoming) = socket.split();
    // Every message that is ready when the socket is written goes in the same write
    // (one syscall and one wake-up for a burst instead of one per message; see
    // COALESCE).
    let mut texts = texts.ready_chunks(MAX_BATCH);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let close = loop {
        let out: Vec<Message> = tokio::select! {
            batch = texts.next() => match batch {
                Some(batch) => batch.iter().map(|text| Message::Text(text.to_string())).collect(),
                None if closing.is_closing() => break Some((CloseCode::Away, "server shutting down")),
                None => break Some((CloseCode::Error, "event log unavailable; reconnect with since=<last id>")),
            },
            _ = ping.tick() => vec![Message::Ping(Vec::new())],
            () = closing.wait() => break Some((CloseCode::Away, "server shutting down")),
            received = incoming.next() => match received {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                // Pongs, pings (answered by the library) and anything else: ignored.
                Some(Ok(_)) => continue,
            },
        };
        let send = async {
            for message in out {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(())) => tokio::time::sleep(COALESCE).await,
            Ok(Err(_)) => break None,
            Err(_) => {
                tracing::info!("event feed: a client took nothing for {SEND_TIMEOUT:?}; dropping it");
                break None;
            }
        }
    };
    if let Some((code, reason)) = close {
        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some((code, reason.to_owned()))))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_parse_and_repeat() {
        let p = parse_params("since=42&type=call_created&type=state_changed&call_id=a%20b&ticket=t").unwrap();
        assert_eq!(p.since, Some(42));
        assert_eq!(p.types, vec!["call_created", "state_changed"]);
        assert_eq!(p.call_id.as_deref(), Some("a b"));
        assert!(parse_params("since=x").is_err());
        assert!(parse_params("sinse=1").is_err());
        assert!(parse_params("").unwrap().since.is_none());
    }
}
