//! Every malformed input gets its status and a JSON error body, never a 500.

use pbx_core::gateway::GatewayConfig;
use pbx_server::AppOptions;
use poem::http::{Method, StatusCode};

use crate::helpers::{TestApp, packet};

/// Sends `body` to `path` and checks the status and the error code.
async fn check(app: &TestApp, method: Method, path: &str, body: Option<&str>, status: StatusCode, code: &str) {
    let reply = app.request(method.clone(), path, body, None).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (status, code),
        "{method} {path} {body:?} answered {}",
        reply.text
    );
}

#[tokio::test]
async fn bad_packets_are_400() {
    let app = TestApp::new();
    let bad = StatusCode::BAD_REQUEST;
    let cases: &[(&str, &str)] = &[
        (r#"{"sequence":0,"data":"x","timestamp":1.0}"#, "invalid_packet"),
        (r#"{"sequence":-1,"data":"x","timestamp":1.0}"#, "invalid_packet"),
        (r#"{"sequence":9223372036854775808,"data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":18446744073709551616,"data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":1.5,"data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":"x","data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":null,"data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":1,"data":"x","timestamp":"soon"}"#, "invalid_request"),
        (r#"{"sequence":1,"data":"x","timestamp":-1.0}"#, "invalid_packet"),
        (r#"{"sequence":1,"data":"x","timestamp":1e400}"#, "invalid_request"),
        (r#"{"sequence":1,"data":"x"}"#, "invalid_request"),
        (r#"{"sequence":1,"timestamp":1.0}"#, "invalid_request"),
        (r#"{"data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":1,"data":7,"timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":1,"data":true,"timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":1,"data":null,"timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":true,"data":"x","timestamp":1.0}"#, "invalid_request"),
        (r#"{"sequence":1,"data":"x","timestamp":true}"#, "invalid_request"),
        (r#"{"sequence":1,"data":"x","timestamp":1.0"#, "invalid_request"),
        (r#"not json"#, "invalid_request"),
        (r#""#, "invalid_request"),
        (r#"[]"#, "invalid_request"),
        (r#"null"#, "invalid_request"),
    ];
    for path in ["/ingest/c1", "/v1/calls/c1/packets"] {
        for (body, code) in cases {
            check(&app, Method::POST, path, Some(body), bad, code).await;
        }
    }
    // Nothing was stored by any of them.
    check(&app, Method::GET, "/v1/calls/c1", None, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn bad_call_ids_are_400() {
    let app = TestApp::new();
    let long = "a".repeat(129);
    for id in ["bad%20id", "caf%C3%A9", long.as_str(), "semi%3Bcolon"] {
        for (method, path) in [
            (Method::POST, format!("/ingest/{id}")),
            (Method::POST, format!("/v1/calls/{id}/packets")),
            (Method::POST, format!("/v1/calls/{id}/packets/batch")),
            (Method::POST, format!("/v1/calls/{id}/complete")),
            (Method::POST, format!("/v1/calls/{id}/retry")),
            (Method::GET, format!("/v1/calls/{id}")),
        ] {
            let body = if path.ends_with("batch") { format!("[{}]", packet(1, "x")) } else { packet(1, "x") };
            check(&app, method, &path, Some(&body), StatusCode::BAD_REQUEST, "invalid_call_id").await;
        }
    }
}

#[tokio::test]
async fn bad_listing_parameters_are_400() {
    let app = TestApp::new();
    for (query, code) in [
        ("state=BOGUS", "invalid_state"),
        ("limit=0", "invalid_argument"),
        ("limit=1001", "invalid_argument"),
        ("limit=abc", "invalid_request"),
        ("limit=-1", "invalid_request"),
        ("cursor=bad%20id", "invalid_cursor"),
    ] {
        check(&app, Method::GET, &format!("/v1/calls?{query}"), None, StatusCode::BAD_REQUEST, code).await;
    }
}

#[tokio::test]
async fn oversized_input_is_413_or_400() {
    let config = GatewayConfig { max_request_batch: 3, ..GatewayConfig::default() };
    let app = TestApp::with_options(AppOptions { body_limit: 1024, ..AppOptions::default() }, config);
    let huge = packet(1, &"x".repeat(2000));
    check(&app, Method::POST, "/ingest/c1", Some(&huge), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let batch = format!("[{}]", (1..=4).map(|s| packet(s, "x")).collect::<Vec<_>>().join(","));
    check(
        &app,
        Method::POST,
        "/v1/calls/c1/packets/batch",
        Some(&batch),
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
    )
    .await;
    // A batch with one bad packet stores nothing.
    let mixed = format!("[{},{}]", packet(1, "x"), r#"{"sequence":0,"data":"x","timestamp":1.0}"#);
    check(&app, Method::POST, "/v1/calls/c1/packets/batch", Some(&mixed), StatusCode::BAD_REQUEST, "invalid_packet")
        .await;
    check(&app, Method::GET, "/v1/calls/c1", None, StatusCode::NOT_FOUND, "not_found").await;

    // Data over the packet limit (below the body limit) is a 400.
    let small = GatewayConfig { limits: pbx_core::PacketLimits { max_data_bytes: 8 }, ..GatewayConfig::default() };
    let app = TestApp::with_options(AppOptions::default(), small);
    check(&app, Method::POST, "/ingest/c1", Some(&packet(1, "123456789")), StatusCode::BAD_REQUEST, "invalid_packet")
        .await;
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_413() {
    let app = TestApp::with_options(AppOptions { body_limit: 64, ..AppOptions::default() }, GatewayConfig::default());
    let chunks =
        futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(bytes_of(&"x".repeat(20)))).collect::<Vec<_>>());
    let resp = app
        .client
        .post("/ingest/c1")
        .content_type("application/json")
        .body(poem::Body::from_bytes_stream(chunks))
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[tokio::test]
async fn wrong_method_and_media_type_get_json_errors() {
    let app = TestApp::new();
    let reply = app.request(Method::DELETE, "/ingest/c1", None, None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    // No content type, or curl's default form type, is read as JSON.
    for content_type in [None, Some("application/x-www-form-urlencoded")] {
        let mut req = app.client.post("/ingest/c1").body(packet(1, "x"));
        if let Some(t) = content_type {
            req = req.content_type(t);
        }
        assert_eq!(req.send().await.0.status(), StatusCode::OK);
    }
    let resp = app.client.post("/ingest/c1").content_type("text/plain").body(packet(1, "x")).send().await;
    assert_eq!(resp.0.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let text = resp.0.into_body().into_string().await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"], "unsupported_media_type");
}
