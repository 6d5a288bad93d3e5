//! `GET /`: the supervisors' live board, embedded in the binary.
//!
//! Three files compiled in with `include_str!` (nothing fetched at run time, no CDN)
//! and `GET /dashboard/config.json`, which tells the page whether it must ask for a
//! key before its first API call. The page is a client of the public API only
//! (`GET /v1/calls`, `GET /v1/events/ws` with a ticket, `GET /v1/calls/{id}`,
//! its recording, the re-drive); none of this is in the OpenAPI document. The key a
//! supervisor types stays in the tab (`sessionStorage`), is sent as `Authorization`
//! on fetches and never in a URL: the socket gets a one-minute ticket instead.
//!
//! Every answer carries a Content-Security-Policy that allows this server only
//! (scripts, styles, the socket, `blob:` audio), so a transcript that contains markup
//! can never run as script.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");

/// The policy every dashboard answer carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| {
        Response::builder()
            .status(StatusCode::OK)
            .content_type(content_type)
            .header(header::CACHE_CONTROL, "no-cache")
            .body(body)
    })
}

fn secured<E: Endpoint>(ep: E) -> impl Endpoint<Output = Response> {
    ep.with(
        poem::middleware::SetHeader::new()
            .overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP))
            .overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
            .overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"))
            .overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    )
    .map_to_response()
}

/// Serves the page at `/` and hands every other path to `inner` (a poem-openapi
/// service nested at `/` answers `/` itself, so the page cannot be a sibling route).
pub struct WithIndex<E> {
    inner: E,
    index: poem::endpoint::BoxEndpoint<'static, Response>,
}

impl<E: Endpoint> WithIndex<E> {
    /// `inner` with the page in front of it.
    pub fn new(inner: E) -> Self {
        Self { inner, index: secured(poem::get(asset("text/html; charset=utf-8", INDEX))).boxed() }
    }
}

impl<E: Endpoint> Endpoint for WithIndex<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if req.uri().path() == "/" {
            return self.index.call(req).await;
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// `/dashboard/*`: its script, style and configuration. `auth_required`: API keys
/// are on, so the page asks for one before its first call.
pub fn assets(auth_required: bool) -> impl Endpoint<Output = Response> {
    let config = format!("{{\"auth_required\":{auth_required}}}");
    secured(
        Route::new()
            .at("/app.js", poem::get(asset("text/javascript; charset=utf-8", APP_JS)))
            .at("/app.css", poem::get(asset("text/css; charset=utf-8", APP_CSS)))
            .at(
                "/config.json",
                poem::get(poem::endpoint::make_sync(move |_| {
                    Response::builder()
                        .content_type("application/json")
                        .header(header::CACHE_CONTROL, "no-store")
                        .body(config.clone())
                })),
            ),
    )
}
