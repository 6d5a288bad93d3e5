//! `GET /twilio` and `GET /telnyx`: Twilio and Telnyx Media Streams over WebSocket.
//!
//! TwiML that points Twilio here (the URL may not carry a query string; parameters
//! arrive in `start.customParameters`):
//!
//! ```xml
//! <Response>
//!   <Start><Stream url="wss://pbx.example.com/v1/media/twilio" track="both_tracks"/></Start>
//!   <Dial>+15551234567</Dial>
//! </Response>
//! ```
//!
//! or, to hold the call on the stream until pbx closes it (pbx sends no audio back):
//! `<Connect><Stream url="wss://pbx.example.com/v1/media/twilio"><Parameter name="k"
//! value="v"/></Stream></Connect>`.
//!
//! With [`StreamConfig::twilio_auth_token`](super::StreamConfig) set, the upgrade must
//! carry a valid `X-Twilio-Signature` (see [`expected_url`](super::expected_url) for
//! how the signed URL is rebuilt), else it is answered 403 before any frame is read.
//! Telnyx streams (`stream_url=wss://pbx.example.com/v1/media/telnyx`) are not signed.

use futures::{SinkExt, StreamExt};
use pbx_core::media::session::{ProtocolError, ProtocolErrorKind};
use pbx_core::media::twilio::{Flavor, TwilioSession, WsFrame};
use poem::http::StatusCode;
use poem::http::uri::Scheme;
use poem::web::Data;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{EndpointExt, IntoResponse, Request, Response, Route, get, handler};

use super::Streams;
use super::driver::{Flow, StreamDriver};
use super::signature;

/// `GET /twilio` and `GET /telnyx` over `streams`; nest under `/v1/media`.
pub fn routes(streams: Streams) -> Route {
    Route::new().at("/twilio", get(twilio).data(streams.clone())).at("/telnyx", get(telnyx).data(streams))
}

#[handler]
async fn twilio(req: &Request, ws: WebSocket, Data(streams): Data<&Streams>) -> Response {
    if let Some(token) = &streams.config().twilio_auth_token {
        let url = super::expected_url(
            req.headers(),
            req.original_uri(),
            *req.scheme() == Scheme::HTTPS,
            streams.config().public_url.as_deref(),
        );
        let given = req.headers().get("x-twilio-signature").and_then(|v| v.to_str().ok());
        if !signature::verify(token.expose(), given, &url) {
            tracing::warn!(
                url,
                remote = %req.remote_addr(),
                signed = given.is_some(),
                "Twilio media stream refused: X-Twilio-Signature missing or wrong"
            );
            return (StatusCode::FORBIDDEN, "X-Twilio-Signature is missing or does not match this URL").into_response();
        }
    }
    upgrade(req, ws, streams.clone(), Flavor::Twilio)
}

#[handler]
async fn telnyx(req: &Request, ws: WebSocket, Data(streams): Data<&Streams>) -> Response {
    upgrade(req, ws, streams.clone(), Flavor::Telnyx)
}

fn upgrade(req: &Request, ws: WebSocket, streams: Streams, flavor: Flavor) -> Response {
    let session = TwilioSession::new(flavor).with_max_payload_bytes(streams.gateway().config().limits.max_data_bytes);
    // The session refuses frames over its limit with a reason; the socket's own limit
    // (4x) only bounds memory.
    let limit = session.max_frame_bytes().saturating_mul(4);
    let config = WebSocketConfig::default()
        .read_buffer_size(super::READ_BUFFER_BYTES)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let peer = req.remote_addr().to_string();
    ws.config(config).on_upgrade(move |socket| run(socket, session, streams, peer)).into_response()
}

async fn run(mut socket: WebSocketStream, mut session: TwilioSession, streams: Streams, peer: String) {
    let protocol = match session.flavor() {
        Flavor::Twilio => "twilio",
        Flavor::Telnyx => "telnyx",
    };
    let mut driver = StreamDriver::new(streams, protocol, peer);
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::warn!(call_id = ?driver.call_id(), error = %e, "media stream read failed");
                break;
            }
            None => break,
        };
        let result = match &message {
            Message::Text(text) => session.receive(WsFrame::Text(text)),
            Message::Binary(bytes) => session.receive(WsFrame::Binary(bytes)),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        match result {
            Ok(actions) => match driver.apply(actions).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => {
                    close(&mut socket, CloseCode::Normal, "end of stream").await;
                    break;
                }
                Err(refused) => {
                    close(&mut socket, CloseCode::Error, &refused.0).await;
                    break;
                }
            },
            Err(error) => {
                driver.protocol_error(&error);
                close(&mut socket, close_code(&error), &error.to_string()).await;
                break;
            }
        }
    }
    driver.finish().await;
}

fn close_code(error: &ProtocolError) -> CloseCode {
    match error.kind() {
        ProtocolErrorKind::UnsupportedData | ProtocolErrorKind::Unsupported => CloseCode::Unsupported,
        ProtocolErrorKind::TooLarge => CloseCode::Size,
        _ => CloseCode::Policy,
    }
}

/// Sends a close frame (its reason cut to the 123 bytes a close frame holds) and waits
/// briefly for the peer's answer.
async fn close(socket: &mut WebSocketStream, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    if socket.send(Message::Close(Some((code, reason[..end].to_owned())))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}
