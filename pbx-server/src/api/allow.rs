//! `Allow` on every 405 (RFC 9110 §15.5.6): the methods the OpenAPI document lists for
//! the path asked for, read from the document itself so that the two cannot disagree.

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// The operations' paths and the methods each takes, from the OpenAPI document.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowTable {
    /// Per path template: its segments (`None` for a `{parameter}`) and `Allow`.
    routes: Vec<(Vec<Option<String>>, HeaderValue)>,
}

impl AllowTable {
    /// The table of `spec`, an OpenAPI document as JSON. poem answers `HEAD` wherever
    /// it answers `GET`, so `HEAD` is listed with it.
    pub(crate) fn from_spec(spec: &str) -> Self {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(spec) else { return Self::default() };
        let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) else { return Self::default() };
        let routes = paths
            .iter()
            .filter_map(|(template, operations)| {
                let mut methods: Vec<String> = operations
                    .as_object()?
                    .keys()
                    .filter(|m| {
                        matches!(m.as_str(), "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace")
                    })
                    .map(|m| m.to_ascii_uppercase())
                    .collect();
                if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                    methods.push("HEAD".into());
                }
                let allow = HeaderValue::from_str(&methods.join(", ")).ok()?;
                Some((segments(template), allow))
            })
            .collect();
        Self { routes }
    }

    /// Adds a route the document does not describe (a WebSocket), with its `Allow`.
    pub(crate) fn with(mut self, template: &str, allow: &'static str) -> Self {
        self.routes.push((segments(template), HeaderValue::from_static(allow)));
        self
    }

    /// The `Allow` of the operation path `path` matches, as the router would pick it:
    /// a literal segment wins over a parameter.
    pub(crate) fn allow(&self, path: &str) -> Option<&HeaderValue> {
        let asked: Vec<&str> = path.split('/').collect();
        self.routes
            .iter()
            .filter(|(template, _)| {
                template.len() == asked.len()
                    && template.iter().zip(&asked).all(|(t, a)| match t {
                        Some(literal) => literal == a,
                        None => !a.is_empty(),
                    })
            })
            // Literal segments first, from the left: `[true, false] > [false, true]`.
            .max_by_key(|(template, _)| template.iter().map(Option::is_some).collect::<Vec<_>>())
            .map(|(_, allow)| allow)
    }
}

fn segments(template: &str) -> Vec<Option<String>> {
    template
        .split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { None } else { Some(s.to_owned()) })
        .collect()
}

/// Adds `Allow` from an [`AllowTable`] to the 405 answers of the endpoint it wraps.
#[derive(Debug, Clone)]
pub(crate) struct AllowOn405(pub(crate) Arc<AllowTable>);

impl<E: Endpoint> Middleware<E> for AllowOn405 {
    type Output = AllowOn405Endpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowOn405Endpoint { inner, table: self.0.clone() }
    }
}

/// [`AllowOn405`] around an endpoint.
pub(crate) struct AllowOn405Endpoint<E> {
    inner: E,
    table: Arc<AllowTable>,
}

impl<E: Endpoint> Endpoint for AllowOn405Endpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let allow = self.table.allow(req.uri().path()).cloned();
        let response = match self.inner.call(req).await {
            Ok(response) => response.into_response(),
            Err(error) if error.status() == StatusCode::METHOD_NOT_ALLOWED => error.into_response(),
            Err(error) => return Err(error),
        };
        Ok(with_allow(response, allow))
    }
}

fn with_allow(mut response: Response, allow: Option<HeaderValue>) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allow
    {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"paths": {
        "/v1/calls": {"get": {}},
        "/v1/calls/{call_id}": {"get": {}, "parameters": []},
        "/v1/calls/{call_id}/complete": {"post": {}},
        "/v1/calls/{call_id}/recording.wav": {"get": {}},
        "/v1/calls/{call_id}/packets": {"post": {}},
        "/v1/calls/{call_id}/packets/batch": {"post": {}},
        "/v1/things/{id}": {"delete": {}},
        "/v1/things/special": {"put": {}}
    }}"#;

    fn allow(path: &str) -> Option<&'static str> {
        let table = Box::leak(Box::new(AllowTable::from_spec(SPEC)));
        table.allow(path).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn lists_the_methods_of_the_matching_path() {
        assert_eq!(allow("/v1/calls"), Some("GET, HEAD"));
        assert_eq!(allow("/v1/calls/c1"), Some("GET, HEAD"));
        assert_eq!(allow("/v1/calls/c1/complete"), Some("POST"));
        assert_eq!(allow("/v1/calls/c1/recording.wav"), Some("GET, HEAD"));
        assert_eq!(allow("/v1/calls/c1/packets/batch"), Some("POST"));
        assert_eq!(allow("/v1/things/special"), Some("PUT"));
        assert_eq!(allow("/v1/things/other"), Some("DELETE"));
        assert_eq!(allow("/v1/calls/c1/nothing"), None);
        assert_eq!(allow("/v1/calls/"), None);
        assert_eq!(allow("/elsewhere"), None);
    }

    #[test]
    fn a_broken_document_lists_nothing() {
        assert_eq!(AllowTable::from_spec("not json").allow("/v1/calls"), None);
    }
}
