//! The live feed: `GET /v1/events` as Server-Sent Events.

use futures::StreamExt;
use poem::http::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn supervisors_watch_state_changes_and_anomalies_live() {
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
    assert_eq!(seen[0]["type"], "state_changed");
    assert_eq!(seen[0]["to"], "IN_PROGRESS");
    assert_eq!(seen[1]["type"], "ordering_anomaly");
    assert_eq!((seen[1]["sequence"].as_u64(), seen[1]["order"].as_str()), (Some(3), Some("gap")));
    assert_eq!(
        (seen[2]["type"].as_str(), seen[2]["from"].as_str(), seen[2]["to"].as_str()),
        (Some("state_changed"), Some("IN_PROGRESS"), Some("COMPLETED"))
    );
}
