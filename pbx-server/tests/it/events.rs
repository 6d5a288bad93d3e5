//! The live feed: `GET /v1/events` (Server-Sent Events) and `GET /v1/events/ws`
//! (WebSocket), both over the store's event log.

use futures::StreamExt;
use poem::http::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn supervisors_watch_creations_anomalies_and_hang_ups_live() {
    let app = TestApp::new();
    let resp = app.client.get("/v1/events").query("call_id", &"live-1").send().await;
    assert_eq!(resp.0.status(), StatusCode::OK);
    let mut feed = resp.json_sse_stream();

    app.ingest("other", 1).await; // filtered out
    app.ingest("live-1", 1).await;
    app.ingest("live-1", 3).await;
    app.complete("live-1").await;

    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 3 {
        let event = feed.next().await.expect("feed ended").value().deserialize::<Value>();
        seen.push(event);
    }
    assert!(seen.iter().all(|e| e["call_id"] == "live-1"), "{seen:?}");
    assert_eq!((seen[0]["type"].as_str(), seen[0]["state"].as_str()), (Some("call_created"), Some("IN_PROGRESS")));
    assert_eq!(seen[1]["type"], "ordering_anomaly");
    assert_eq!((seen[1]["highest"].as_u64(), seen[1]["missing"].as_u64()), (Some(3), Some(1)));
    assert_eq!(
        (seen[2]["type"].as_str(), seen[2]["from"].as_str(), seen[2]["to"].as_str()),
        (Some("state_changed"), Some("IN_PROGRESS"), Some("COMPLETED"))
    );
    let ids: Vec<u64> = seen.iter().map(|e| e["id"].as_u64().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
}

#[tokio::test]
async fn sse_replays_after_last_event_id_and_names_each_event() {
    let app = TestApp::new();
    for call in ["r-1", "r-2", "r-3"] {
        app.ingest(call, 1).await;
    }
    let resp = app.client.get("/v1/events").header("Last-Event-ID", "1").send().await;
    assert_eq!(resp.0.status(), StatusCode::OK);
    let mut feed = resp.0.into_body().into_bytes_stream();
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let chunk = feed.next().await.expect("feed").expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert!(events[0].contains("event: call_created") && events[0].contains("id: 2"), "{text}");
    assert!(events[0].contains("\"call_id\":\"r-2\""), "{text}");
    assert!(events[1].contains("id: 3") && events[1].contains("\"call_id\":\"r-3\""), "{text}");
}

#[tokio::test]
async fn bad_filters_are_refused_before_the_stream_starts() {
    let app = TestApp::new();
    for (name, value) in [("type", "nope"), ("state", "DONE"), ("since", "x"), ("call_id", "bad id!")] {
        let resp = app.client.get("/v1/events").query(name, &value).send().await;
        assert_eq!(resp.0.status(), StatusCode::BAD_REQUEST, "{name}={value}");
    }
}
