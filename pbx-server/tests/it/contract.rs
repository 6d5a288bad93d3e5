//! The seed's contract, byte for byte, and the honest statuses of the API.

use poem::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{SEED_PACKET, TestApp, packet};

#[tokio::test]
async fn seed_contract_byte_for_byte() {
    let app = TestApp::new();
    let first = app.post("/ingest/call-1", SEED_PACKET).await;
    assert_eq!(first.status, StatusCode::OK);
    // poem-openapi writes object keys in alphabetical order.
    assert_eq!(first.text, r#"{"created_call":true,"order":"in_order","status":"accepted"}"#);

    let again = app.post("/ingest/call-1", SEED_PACKET).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.text, r#"{"created_call":false,"order":"duplicate","status":"duplicate"}"#);

    let call = app.call("call-1").await;
    assert_eq!(call["state"], "IN_PROGRESS");
    assert_eq!(call["ordering"]["received"], 1);
    assert_eq!(call["ordering"]["duplicates"], 1);
}

#[tokio::test]
async fn v1_packets_endpoint_has_the_same_contract_and_reports_order() {
    let app = TestApp::new();
    let app = &app;
    let post = |seq: u64| async move { app.post("/v1/calls/c-2/packets", &packet(seq, &format!("d{seq}"))).await };
    assert_eq!(post(1).await.json(), json!({"status": "accepted", "order": "in_order", "created_call": true}));
    assert_eq!(
        post(4).await.json(),
        json!({"status": "accepted", "order": "gap", "missing": {"first": 2, "last": 3}, "created_call": false})
    );
    assert_eq!(post(2).await.json(), json!({"status": "accepted", "order": "out_of_order", "created_call": false}));
    let call = app.call("c-2").await;
    assert_eq!(call["ordering"]["received"], 3);
    assert_eq!(call["ordering"]["highest"], 4);
    assert_eq!(call["ordering"]["missing"], 1);
    assert_eq!(call["ordering"]["out_of_order"], 1);
    assert_eq!(call["ordering"]["missing_ranges"], json!([{"first": 3, "last": 3}]));
}

#[tokio::test]
async fn batch_is_answered_per_packet_in_order() {
    let app = TestApp::new();
    app.ingest("b-1", 2).await;
    let body = json!([
        {"sequence": 1, "data": "d1", "timestamp": 0.0},
        {"sequence": 2, "data": "d2", "timestamp": 0.1},
        {"sequence": 2, "data": "other", "timestamp": 0.1},
        {"sequence": 5, "data": "d5", "timestamp": 0.2},
        {"sequence": 5, "data": "d5", "timestamp": 0.2},
    ]);
    let reply = app.post("/v1/calls/b-1/packets/batch", &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(2), Some(1))
    );
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["accepted", "duplicate", "rejected", "accepted", "duplicate"]);
    assert_eq!(body["results"][2]["error"], "conflict");
    assert_eq!(body["results"][3]["missing"], json!({"first": 3, "last": 4}));
    assert_eq!(app.call("b-1").await["ordering"]["received"], 3);

    let empty = app.post("/v1/calls/b-1/packets/batch", "[]").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json()["results"], json!([]));
}

#[tokio::test]
async fn conflicts_and_closed_calls_are_409() {
    let app = TestApp::new();
    app.ingest("c-3", 1).await;
    let conflict = app.post("/ingest/c-3", &packet(1, "different")).await;
    assert_eq!((conflict.status, conflict.error_code().as_str()), (StatusCode::CONFLICT, "conflict"));

    let hang_up = app.complete("c-3").await;
    assert_eq!(hang_up.status, StatusCode::OK);
    assert_eq!(hang_up.json(), json!({"call_id": "c-3", "from": "IN_PROGRESS", "state": "COMPLETED", "applied": true}));
    let again = app.complete("c-3").await;
    assert_eq!(again.json(), json!({"call_id": "c-3", "from": "COMPLETED", "state": "COMPLETED", "applied": false}));

    let late = app.ingest("c-3", 2).await;
    assert_eq!((late.status, late.error_code().as_str()), (StatusCode::CONFLICT, "call_closed"));
    let late_batch = app.post("/v1/calls/c-3/packets/batch", &format!("[{}]", packet(3, "d3"))).await;
    assert_eq!(late_batch.status, StatusCode::OK);
    assert_eq!(late_batch.json()["results"][0]["error"], "call_closed");

    // Re-drive needs a FAILED call.
    let retry = app.request(Method::POST, "/v1/calls/c-3/retry", None, None).await;
    assert_eq!((retry.status, retry.error_code().as_str()), (StatusCode::CONFLICT, "invalid_transition"));
}

#[tokio::test]
async fn unknown_calls_are_404() {
    let app = TestApp::new();
    for (method, path) in [
        (Method::GET, "/v1/calls/nope"),
        (Method::POST, "/v1/calls/nope/complete"),
        (Method::POST, "/v1/calls/nope/retry"),
        (Method::GET, "/no/such/route"),
    ] {
        let reply = app.request(method.clone(), path, None, None).await;
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn lists_calls_by_state_with_a_cursor() {
    let app = TestApp::new();
    for call in ["a-1", "a-2", "a-3", "b-1"] {
        app.ingest(call, 1).await;
    }
    app.complete("a-2").await;
    let page = app.get("/v1/calls?limit=2").await.json();
    let ids: Vec<&str> = page["calls"].as_array().unwrap().iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-1", "a-2"]);
    assert_eq!(page["next_cursor"], "a-2");
    let next = app.get("/v1/calls?limit=2&cursor=a-2").await.json();
    let ids: Vec<&str> = next["calls"].as_array().unwrap().iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-3", "b-1"]);
    let completed = app.get("/v1/calls?state=COMPLETED").await.json();
    assert_eq!(completed["calls"].as_array().unwrap().len(), 1);
    assert_eq!(completed["calls"][0]["call_id"], "a-2");
    assert_eq!(completed["calls"][0]["received"], 1);
    assert!(completed.get("next_cursor").is_none_or(|n| n.is_null()));
}

#[tokio::test]
async fn health_docs_and_spec() {
    let app = TestApp::new();
    assert_eq!(app.get("/healthz").await.json(), json!({"status": "ok"}));
    assert_eq!(app.get("/readyz").await.json(), json!({"status": "ready"}));
    assert_eq!(app.get("/docs").await.status, StatusCode::OK);
    let spec = app.get("/openapi.json").await.json();
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/ingest/{call_id}",
        "/v1/calls/{call_id}/packets",
        "/v1/calls/{call_id}/packets/batch",
        "/v1/calls/{call_id}/complete",
        "/v1/calls/{call_id}",
        "/v1/calls",
        "/v1/calls/{call_id}/retry",
        "/v1/events",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the spec: {:?}", paths.keys().collect::<Vec<_>>());
    }
}
