//! API keys and roles.

use poem::http::{Method, StatusCode};

use crate::helpers::{TestApp, packet};

#[tokio::test]
async fn roles_guard_each_operation() {
    let app = TestApp::with_keys(&["ingest:ik", "supervisor:sk", "admin:ak"]);
    let body = packet(1, "x");
    // (method, path, body, key, expected status)
    type Case<'a> = (Method, &'a str, Option<&'a str>, Option<&'a str>, StatusCode);
    let cases: &[Case<'_>] = &[
        (Method::POST, "/ingest/c1", Some(&body), None, StatusCode::UNAUTHORIZED),
        (Method::POST, "/ingest/c1", Some(&body), Some("wrong"), StatusCode::UNAUTHORIZED),
        (Method::POST, "/ingest/c1", Some(&body), Some("sk"), StatusCode::FORBIDDEN),
        (Method::POST, "/ingest/c1", Some(&body), Some("ik"), StatusCode::OK),
        (Method::POST, "/ingest/c1", Some(&body), Some("ak"), StatusCode::OK),
        (Method::GET, "/v1/calls/c1", None, None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/v1/calls/c1", None, Some("ik"), StatusCode::FORBIDDEN),
        (Method::GET, "/v1/calls/c1", None, Some("sk"), StatusCode::OK),
        (Method::GET, "/v1/calls", None, Some("ak"), StatusCode::OK),
        (Method::GET, "/v1/events", None, Some("ik"), StatusCode::FORBIDDEN),
        (Method::POST, "/v1/calls/c1/complete", None, Some("sk"), StatusCode::FORBIDDEN),
        (Method::POST, "/v1/calls/c1/complete", None, Some("ik"), StatusCode::OK),
        (Method::POST, "/v1/calls/c1/retry", None, Some("ik"), StatusCode::FORBIDDEN),
        (Method::POST, "/v1/calls/c1/retry", None, Some("sk"), StatusCode::FORBIDDEN),
        (Method::POST, "/v1/calls/c1/retry", None, Some("ak"), StatusCode::CONFLICT),
        (Method::GET, "/healthz", None, None, StatusCode::OK),
        (Method::GET, "/readyz", None, None, StatusCode::OK),
        (Method::GET, "/openapi.json", None, None, StatusCode::OK),
    ];
    for (method, path, body, key, status) in cases {
        let reply = app.request(method.clone(), path, *body, *key).await;
        assert_eq!(reply.status, *status, "{method} {path} with {key:?}: {}", reply.text);
        match *status {
            StatusCode::UNAUTHORIZED => assert_eq!(reply.error_code(), "unauthorized"),
            StatusCode::FORBIDDEN => assert_eq!(reply.error_code(), "forbidden"),
            _ => {}
        }
    }
    // A refused request stores nothing: only the two accepted ingests count.
    let call = app.request(Method::GET, "/v1/calls/c1", None, Some("sk")).await.json();
    assert_eq!(call["ordering"]["received"], 1);
    assert_eq!(call["ordering"]["duplicates"], 1);
}
