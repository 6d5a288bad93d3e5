//! Completion webhooks end to end: the real binary, a receiver that verifies every
//! request with the PyPI `standardwebhooks` package (tools/webhook-receiver), retries,
//! secret rotation, 410, redirects, and (on PostgreSQL) a SIGKILL with undelivered
//! messages while the receiver is down.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::spawned::Spawned;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

pub(crate) fn secret(byte: u8) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

/// The receiver's python, from its idempotent setup.
fn python() -> String {
    let out = std::process::Command::new(repo().join("tools/webhook-receiver/setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tools/webhook-receiver/setup.sh");
    assert!(out.status.success(), "tools/webhook-receiver/setup.sh failed");
    String::from_utf8(out.stdout).unwrap().lines().last().expect("python path").to_owned()
}

/// A running receiver and the requests it reports.
pub(crate) struct Receiver {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    pub(crate) url: String,
}

impl Receiver {
    pub(crate) async fn start(secrets: &[&str], extra: &[&str]) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tools/webhook-receiver/receiver.py"));
        for s in secrets {
            cmd.args(["--secret", s]);
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().expect("receiver exited");
        let port = first.strip_prefix("listening ").expect("listening line");
        Self { _child: child, lines, url: format!("http://127.0.0.1:{port}/hook") }
    }

    /// The next request it received.
    pub(crate) async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("a webhook within a minute")
            .unwrap()
            .expect("receiver exited");
        serde_json::from_str(&line).expect("receiver JSON")
    }
}

fn packet(seq: u64) -> Value {
    json!({"sequence": seq, "data": format!("audio_chunk_{seq}"), "timestamp": seq as f64})
}

/// Ingests and hangs up `call`, waits for `state`.
pub(crate) async fn call_to(server: &Spawned, call: &str, state: &str) {
    let mut feed = server.events(call).await;
    for seq in 1..=3 {
        assert_eq!(server.post(&format!("/ingest/{call}"), Some(packet(seq))).await.0, 200);
    }
    assert_eq!(server.post(&format!("/v1/calls/{call}/complete"), None).await.0, 200);
    feed.wait_for_state(state).await;
}

const FAST: [&str; 6] = ["--ai-latency-min", "0s", "--ai-latency-max", "0s", "--webhook-max-interval", "200ms"];

#[tokio::test(flavor = "multi_thread")]
async fn archived_calls_are_posted_signed_retried_and_verified_independently() {
    let (a, b, other) = (secret(1), secret(2), secret(3));
    // The receiver checks each secret alone: A (old), B (new), and one pbx never had.
    let mut receiver = Receiver::start(&[&a, &b, &other], &["--fail-first", "2"]).await;
    let mut args = vec!["--store", "memory", "--ai-failure-rate", "0", "--webhook-url", &receiver.url];
    args.extend(["--webhook-secret", &a, "--webhook-secret", &b]);
    args.extend(FAST);
    let server = Spawned::start_with(&args).await;
    call_to(&server, "wh-1", "ARCHIVED").await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(receiver.next().await);
    }
    let answers: Vec<_> = seen.iter().map(|r| r["answered"].as_u64().unwrap()).collect();
    assert_eq!(answers, vec![503, 503, 204], "two failures, then delivered");
    for r in &seen {
        assert_eq!(r["verified"], json!([true, true, false]), "both secrets sign during a rotation: {r}");
        assert_eq!(r["webhook_id"], seen[0]["webhook_id"], "the same webhook-id on every attempt");
        assert_eq!(r["content_type"], "application/json");
        assert_eq!(r["path"], "/hook");
    }
    let body = &seen[2]["body"];
    assert_eq!(body["type"], "call.archived");
    assert_eq!(body["data"]["call_id"], "wh-1");
    assert_eq!(body["data"]["state"], "ARCHIVED");
    assert!(body["data"]["transcript"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

    let listed = server.get("/v1/webhooks/deliveries").await;
    let delivery = &listed["deliveries"][0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["message_id"], seen[0]["webhook_id"]);
    assert_eq!(delivery["last_error"], "HTTP 503 Service Unavailable");
    let (status, refused) = server.post(&format!("/v1/webhooks/deliveries/{}/retry", delivery["id"]), None).await;
    assert_eq!((status, refused["error"].as_str()), (409, Some("not_dead")));
    assert_eq!(server.post("/v1/webhooks/deliveries/999999/retry", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_endpoints_die_redirects_are_not_followed_and_failures_carry_the_reason() {
    let key = secret(9);
    // 307 to another path of the same receiver: pbx must not follow it.
    let mut redirecting = Receiver::start(&[&key], &["--status", "307", "--location", "/elsewhere"]).await;
    let mut gone = Receiver::start(&[&key], &["--status", "410"]).await;
    let mut args = vec!["--store", "memory", "--ai-failure-rate", "1", "--retry-max-attempts", "1"];
    args.extend(["--webhook-url", &redirecting.url, "--webhook-url", &gone.url, "--webhook-secret", &key]);
    args.extend(["--webhook-max-attempts", "2"]);
    args.extend(FAST);
    let server = Spawned::start_with(&args).await;
    call_to(&server, "wh-fail", "FAILED").await;

    let to_gone = gone.next().await;
    assert_eq!((to_gone["answered"].as_u64(), &to_gone["verified"]), (Some(410), &json!([true])));
    assert_eq!(to_gone["body"]["type"], "call.failed");
    assert!(to_gone["body"]["data"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{to_gone}");
    for _ in 0..2 {
        let r = redirecting.next().await;
        assert_eq!((r["path"].as_str(), r["answered"].as_u64()), (Some("/hook"), Some(307)), "never /elsewhere");
    }
    // Both deliveries end dead: one by 410, one out of attempts (the redirect counts as
    // a failure). Wait for it through the API.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed = server.get("/v1/webhooks/deliveries").await;
        if listed["deliveries"].as_array().unwrap().iter().all(|d| d["status"] == "dead") {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries never died: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let errors: Vec<&str> =
        listed["deliveries"].as_array().unwrap().iter().map(|d| d["last_error"].as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("410 Gone")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("gave up after 2 attempts: HTTP 307")), "{errors:?}");

    // A re-drive of the dead 410 one: the URL stays disabled, so it dies again unsent.
    let dead = listed["deliveries"].as_array().unwrap().iter().find(|d| d["url"] == gone.url.as_str()).unwrap();
    let (status, retried) = server.post(&format!("/v1/webhooks/deliveries/{}/retry", dead["id"]), None).await;
    assert_eq!((status, retried["status"].as_str(), retried["attempts"].as_u64()), (200, Some("pending"), Some(0)));
}

#[test]
fn bad_webhook_settings_are_refused_with_the_setting_named() {
    for (args, expected) in [
        (vec!["--webhook-url", "http://127.0.0.1:9/x"], "--webhook-secret"),
        (vec!["--webhook-url", "ftp://host/x", "--webhook-secret", &secret(1)], "--webhook-url"),
        (vec!["--webhook-url", "http://u:p@host/x", "--webhook-secret", &secret(1)], "credentials"),
        (vec!["--webhook-url", "http://host/x", "--webhook-secret", "not-a-secret"], "whsec_"),
        (vec!["--webhook-secret", &secret(1)], "no --webhook-url"),
        (
            vec!["--webhook-url", "http://host/x", "--webhook-secret", &secret(1), "--webhook-events", "nope"],
            "unknown event type",
        ),
    ] {
        let stderr = crate::spawned::refused(&args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
