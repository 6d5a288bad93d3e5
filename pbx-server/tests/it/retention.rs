//! Retention end to end on the real binary: an ARCHIVED call loses its packets and
//! keeps its summary, its recording answers 410, then the call goes; the counts show
//! in the metrics; contradictory settings are refused with the flag named.

use std::time::Duration;

use serde_json::{Value, json};

use crate::spawned::Spawned;

/// Fast AI, packets kept 1 s after ARCHIVED, calls 3 s, a sweep every 100 ms.
pub(crate) const RETENTION: [&str; 12] = [
    "--ai-latency-min",
    "0s",
    "--ai-latency-max",
    "0s",
    "--ai-failure-rate",
    "0",
    "--retain-packets",
    "1s",
    "--retain-calls",
    "3s",
    "--sweep-interval",
    "100ms",
];

/// Polls `GET /v1/calls/{call}` (every 50 ms, for at most a minute) until `done`
/// says yes; the last answer's status and body.
async fn poll_call(server: &Spawned, call: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let poll = async {
        loop {
            let resp = server.http.get(format!("{}/v1/calls/{call}", server.url)).send().await.expect("get");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), poll).await.expect("the sweep within a minute")
}

async fn metrics(server: &Spawned) -> String {
    server.http.get(format!("{}/metrics", server.url)).send().await.expect("metrics").text().await.expect("text")
}

/// A call with packets 1, 2 and 4 is archived, loses its packets (keeping counters,
/// the missing range, the transcript), then is deleted; its id then starts anew.
pub(crate) async fn packets_then_calls_are_swept(server: &Spawned, call: &str) {
    let mut feed = server.events(call).await;
    for seq in [1u64, 2, 4] {
        let packet = json!({"sequence": seq, "data": format!("audio_chunk_{seq}"), "timestamp": seq as f64});
        assert_eq!(server.post(&format!("/ingest/{call}"), Some(packet)).await.0, 200);
    }
    assert_eq!(server.post(&format!("/v1/calls/{call}/complete"), None).await.0, 200);
    feed.wait_for_state("ARCHIVED").await;

    let (_, view) = poll_call(server, call, |_, v| !v["packets_swept"].is_null()).await;
    assert_eq!(view["state"], "ARCHIVED");
    assert_eq!(view["packets_swept"]["packets"], 3, "{view}");
    assert_eq!(view["packets_swept"]["bytes"], 3 * "audio_chunk_1".len(), "{view}");
    assert_eq!(view["ordering"]["received"], 3);
    assert_eq!(view["ordering"]["missing_ranges"], json!([{"first": 3, "last": 3}]), "kept: {view}");
    assert!(view["transcript"].as_str().is_some_and(|t| !t.is_empty()), "the result stays: {view}");

    let wav = server.http.get(format!("{}/v1/calls/{call}/recording.wav", server.url)).send().await.expect("wav");
    assert_eq!(wav.status().as_u16(), 410);
    let body: Value = wav.json().await.expect("error body");
    assert_eq!(body["error"], "packets_deleted");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("retention")), "{body}");
    let text = metrics(server).await;
    assert!(text.contains(r#"pbx_retention_swept_calls_total{rule="packets"} 1"#), "{text}");
    assert!(text.contains(r#"pbx_retention_deleted_packets_total{rule="packets"} 3"#), "{text}");

    let (status, _) = poll_call(server, call, |status, _| status == 404).await;
    assert_eq!(status, 404, "the call is gone");
    let text = metrics(server).await;
    assert!(text.contains(r#"pbx_retention_swept_calls_total{rule="calls"} 1"#), "{text}");

    let again = json!({"sequence": 1, "data": "audio_chunk_1", "timestamp": 1.0});
    let (status, answer) = server.post(&format!("/ingest/{call}"), Some(again)).await;
    assert_eq!((status, answer["created_call"].as_bool()), (200, Some(true)), "the id starts a new call: {answer}");
    let fresh = server.get(&format!("/v1/calls/{call}")).await;
    assert_eq!((fresh["state"].as_str(), fresh["packets_swept"].is_null()), (Some("IN_PROGRESS"), true));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_sweeps_packets_then_calls_on_the_memory_store() {
    let mut args = vec!["--store", "memory"];
    args.extend(RETENTION);
    let server = Spawned::start_with(&args).await;
    packets_then_calls_are_swept(&server, "ret-mem-1").await;
}

#[test]
fn contradictory_retention_settings_are_refused_with_the_setting_named() {
    for (args, expected) in [
        (vec!["--retain-packets", "30d", "--retain-calls", "7d"], "--retain-calls"),
        (vec!["--retain-packets", "10ms"], "--retain-packets"),
        (vec!["--retain-calls", "2 weeks"], "--retain-calls"),
        (vec!["--sweep-interval", "1ms"], "--sweep-interval"),
    ] {
        let stderr = crate::spawned::refused(&args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
