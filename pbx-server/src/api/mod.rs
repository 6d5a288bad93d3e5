//! The HTTP API: one module per group of operations, shapes in [`types`], the app in
//! [`build_app`].

use std::sync::Arc;

use pbx_core::gateway::{Gateway, Processor};
use poem::http::Method;
use poem::{Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::auth::ApiKeys;
use crate::error::{ApiError, json_error_response};
use crate::ticket::Tickets;

mod allow;
pub mod body;
pub mod calls;
pub mod constraints;
pub mod events;
pub mod feed;
pub mod health;
pub mod packets;
pub mod processor;
mod spec;
pub mod types;
pub mod webhooks;
pub mod ws;

/// The default limit on a request body, in bytes (2 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) gateway: Gateway,
    pub(crate) keys: Arc<ApiKeys>,
    /// The AI processor running in this process, if any.
    pub(crate) processor: Option<Processor>,
    /// Tickets for the event feeds.
    pub(crate) tickets: Arc<Tickets>,
    /// Fires when the server starts shutting down (long-lived feeds close).
    pub(crate) closing: Closing,
    /// The feed's messages as WebSocket text, shared by every subscriber.
    pub(crate) rendered: Arc<feed::Rendered>,
}

/// A signal that the server is shutting down, for what stays open (event feeds).
#[derive(Debug, Clone)]
pub struct Closing {
    rx: tokio::sync::watch::Receiver<bool>,
    /// Keeps a never-firing signal's sender alive.
    _never: Option<Arc<tokio::sync::watch::Sender<bool>>>,
}

impl Closing {
    /// A signal that fires when `rx` turns `true`.
    pub fn new(rx: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { rx, _never: None }
    }

    /// A signal that never fires.
    pub fn never() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Self { rx, _never: Some(Arc::new(tx)) }
    }

    /// Resolves once shutting down (never when the sender is gone without firing).
    pub async fn wait(&mut self) {
        if self.rx.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// `true` once shutting down.
    pub fn is_closing(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Groups of operations in the docs.
#[derive(Debug, Tags)]
pub(crate) enum ApiTags {
    /// Streaming audio packets (role `ingest`).
    Packets,
    /// Call lifecycle and reads.
    Calls,
    /// The live event feed (role `supervisor`).
    Events,
    /// The AI processor of this server (role `supervisor`).
    Processor,
    /// Liveness and readiness probes.
    Health,
    /// Completion webhooks' deliveries (role `admin`).
    Webhooks,
}

/// Options of the HTTP app.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// API keys; empty means open.
    pub keys: ApiKeys,
    /// The largest request body accepted, in bytes; larger ones get a 413.
    pub body_limit: usize,
    /// The base URL shown in the docs (`None`: relative).
    pub public_url: Option<String>,
    /// The AI processor whose status `GET /v1/processor` shows (`None`: none runs here).
    pub processor: Option<Processor>,
    /// Fires on shutdown: the event feeds close with a reason (default: never).
    pub closing: Closing,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            keys: ApiKeys::open(),
            body_limit: DEFAULT_BODY_LIMIT,
            public_url: None,
            processor: None,
            closing: Closing::never(),
        }
    }
}

/// The OpenAPI service with every operation.
fn service(ctx: &Ctx, public_url: Option<&str>) -> OpenApiService<impl poem_openapi::OpenApi + use<>, ()> {
    let apis = (
        packets::PacketsApi { ctx: ctx.clone() },
        calls::CallsApi { ctx: ctx.clone() },
        events::EventsApi { ctx: ctx.clone() },
        processor::ProcessorApi { ctx: ctx.clone() },
        health::HealthApi { ctx: ctx.clone() },
        webhooks::WebhooksApi { ctx: ctx.clone() },
    );
    let service = OpenApiService::new(apis, "pbx", env!("CARGO_PKG_VERSION")).description(
        "Call-centre backend: ingest PBX audio packets, track each call's state and packet order, \
         and run AI transcription and sentiment in the background with retries.\n\n\
         Errors are JSON `{\"error\": code, \"message\": text}`. When API keys are configured, send \
         `Authorization: Bearer <key>`; roles: `ingest` (packets, hang-up), `supervisor` (reads, \
         events), `admin` (everything, re-drive).",
    );
    match public_url {
        Some(url) => service.server(url),
        None => service,
    }
}

/// The HTTP app, boxed so that it can be named.
pub type App = poem::endpoint::BoxEndpoint<'static, Response>;

/// The whole HTTP app over `gateway`: the API, Swagger UI at `/docs`, the spec at
/// `/openapi.json`, JSON errors for everything, `Allow` on every 405, and the body
/// limit.
pub fn build_app(gateway: Gateway, options: AppOptions) -> App {
    let tickets = Arc::new(Tickets::new(options.keys.secrets()));
    let ctx = Ctx {
        gateway,
        keys: Arc::new(options.keys),
        processor: options.processor,
        tickets,
        closing: options.closing,
        rendered: Arc::default(),
    };
    let api = service(&ctx, options.public_url.as_deref());
    let document = spec::served_document(&api.spec());
    let allow = allow::AllowTable::from_spec(&document).with("/v1/events/ws", "GET, HEAD").with("/", "GET, HEAD");
    let docs = api.swagger_ui();
    let spec =
        poem::endpoint::make_sync(move |_| Response::builder().content_type("application/json").body(document.clone()));
    let routes = Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/v1/events/ws", poem::get(ws::events_ws).data(ctx.clone()))
        .nest("/dashboard", crate::dashboard::assets(!ctx.keys.is_open()))
        .nest("/", api);
    crate::dashboard::WithIndex::new(routes)
        .with(BodyLimit { limit: options.body_limit })
        .catch_all_error(json_error_response)
        .with(allow::AllowOn405(Arc::new(allow)))
        .boxed()
}

/// Refuses request bodies over `limit` bytes with a 413, whether or not they announce
/// their length, and reads POST bodies without a JSON content type as JSON.
#[derive(Debug, Clone, Copy)]
struct BodyLimit {
    limit: usize,
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint { inner, limit: self.limit }
    }
}

/// [`BodyLimit`] around an endpoint.
struct BodyLimitEndpoint<E> {
    inner: E,
    limit: usize,
}

fn too_large(limit: usize) -> poem::Error {
    ApiError::PayloadTooLarge(poem_openapi::payload::Json(crate::error::ErrorBody {
        error: "payload_too_large".into(),
        message: format!("the request body is larger than the limit of {limit} bytes"),
    }))
    .into()
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        let announced = req
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Bodies are JSON whatever the client says: `curl -d` without a content type
        // sends `application/x-www-form-urlencoded`.
        let content_type = req.headers().get(poem::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if req.method() == Method::POST
            && content_type.is_none_or(|t| t.starts_with("application/x-www-form-urlencoded"))
        {
            req.headers_mut()
                .insert(poem::http::header::CONTENT_TYPE, poem::http::HeaderValue::from_static("application/json"));
        }
        match announced {
            Some(len) if len > self.limit as u64 => return Err(too_large(self.limit)),
            Some(_) => {}
            // No length announced (chunked): read at most the limit.
            None if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) => {
                let body = req.take_body().into_bytes_limit(self.limit).await.map_err(|e| match e {
                    poem::error::ReadBodyError::PayloadTooLarge => too_large(self.limit),
                    other => other.into(),
                })?;
                req.set_body(body);
            }
            None => {}
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}
