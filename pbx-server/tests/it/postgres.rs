//! End to end: the real `pbx-server` binary against PostgreSQL (DATABASE_URL), one fresh
//! database per test. Waiting is done on the server's own event feed, never by sleeping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pbx_core::ai::SimulatedAi;

use crate::spawned::Spawned;
use serde_json::{Value, json};
use sqlx::Connection;

/// The server every PostgreSQL test needs; fails loudly when DATABASE_URL is unset.
fn database_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL must point at a PostgreSQL server for these tests")
}

/// A fresh database, dropped by [`TestDb::drop_now`] at the end of a test that passed
/// (a failed test leaves it behind for inspection).
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn drop_now(self) {
        let mut conn = sqlx::PgConnection::connect(&database_url()).await.expect("connect to DATABASE_URL");
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(&sql).execute(&mut conn).await.expect("drop database");
    }
}

impl std::ops::Deref for TestDb {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

/// Creates a fresh database.
async fn fresh_database() -> TestDb {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = database_url();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("pbx_server_{}_{}_{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect to DATABASE_URL");
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(&create).execute(&mut conn).await.expect("create database");
    let (prefix, rest) = base.rsplit_once('/').expect("DATABASE_URL has a database name");
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    TestDb { url: format!("{prefix}/{name}{query}"), name }
}

fn packet(seq: u64) -> Value {
    json!({"sequence": seq, "data": format!("audio_chunk_{seq}"), "timestamp": 123.45 + seq as f64})
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_hang_up_and_archive_on_postgres() {
    let db = fresh_database().await;
    let server = Spawned::start(&db, &["--ai-latency-min", "0s", "--ai-latency-max", "0s"]).await;

    assert_eq!(
        server.post("/ingest/pg-1", Some(packet(1))).await,
        (200, json!({"status": "accepted", "order": "in_order", "created_call": true}))
    );
    assert_eq!(server.post("/ingest/pg-1", Some(packet(1))).await.1["status"], "duplicate");
    assert_eq!(server.post("/ingest/pg-1", Some(packet(3))).await.1["order"], "gap");
    let batch = json!([packet(2), packet(4)]);
    assert_eq!(server.post("/v1/calls/pg-1/packets/batch", Some(batch)).await.1["accepted"], 2);

    let mut feed = server.events("pg-1").await;
    assert_eq!(server.post("/v1/calls/pg-1/complete", None).await.0, 200);
    feed.wait_for_state("ARCHIVED").await;

    let view = server.get("/v1/calls/pg-1").await;
    assert_eq!(view["state"], "ARCHIVED");
    assert_eq!(view["ordering"]["received"], 4);
    assert_eq!(view["ordering"]["duplicates"], 1);
    assert_eq!(view["ordering"]["out_of_order"], 1);
    let data: Vec<String> = (1..=4).map(|s| format!("audio_chunk_{s}")).collect();
    assert_eq!(view["transcript"], SimulatedAi::expected_transcript(data.iter().map(String::as_str)).as_str());
    assert_eq!(server.post("/ingest/pg-1", Some(packet(5))).await.0, 409);
    assert_eq!(server.get("/readyz").await["status"], "ready");
    drop(server);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_processing_resumes_from_postgres() {
    let db = fresh_database().await;
    // The first instance's AI takes ten minutes; its lease is short.
    let mut first = Spawned::start(
        &db,
        &["--ai-latency-min", "600s", "--ai-latency-max", "600s", "--lease", "1s", "--heartbeat", "250ms"],
    )
    .await;
    for seq in 1..=3 {
        assert_eq!(first.post("/ingest/crash-1", Some(packet(seq))).await.0, 200);
    }
    let mut feed = first.events("crash-1").await;
    assert_eq!(first.post("/v1/calls/crash-1/complete", None).await.0, 200);
    feed.wait_for_state("PROCESSING_AI").await;
    let claimed = first.get("/v1/calls/crash-1").await;
    assert_eq!(claimed["attempts"], 1);

    // Crash: SIGKILL, nothing released.
    first.child.kill().await.expect("kill");

    let second = Spawned::start(
        &db,
        &["--ai-latency-min", "0s", "--ai-latency-max", "0s", "--lease", "1s", "--heartbeat", "250ms"],
    )
    .await;
    let mut feed = second.events("crash-1").await;
    if second.get("/v1/calls/crash-1").await["state"] != "ARCHIVED" {
        feed.wait_for_state("ARCHIVED").await;
    }
    let view = second.get("/v1/calls/crash-1").await;
    assert_eq!(view["state"], "ARCHIVED");
    assert_eq!(view["attempts"], 2, "the second instance rescued the expired lease");
    assert_eq!(view["failures"], 0, "a rescue is not a failure");
    let data: Vec<String> = (1..=3).map(|s| format!("audio_chunk_{s}")).collect();
    assert_eq!(view["transcript"], SimulatedAi::expected_transcript(data.iter().map(String::as_str)).as_str());
    drop((first, second, feed));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully() {
    let db = fresh_database().await;
    let mut server = Spawned::start(&db, &[]).await;
    assert_eq!(server.post("/ingest/term-1", Some(packet(1))).await.0, 200);
    let pid = server.child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "exit status {status}");
    drop(server);
    db.drop_now().await;
}

/// The ranges missing from `acked` below its maximum, as the API reports them.
fn missing_ranges(acked: &std::collections::BTreeSet<u64>) -> Value {
    let mut ranges = Vec::new();
    let mut next = 1;
    for &seq in acked {
        if seq > next {
            ranges.push(json!({"first": next, "last": seq - 1}));
        }
        next = seq + 1;
    }
    Value::Array(ranges)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_on_postgres_loses_nothing_and_doubles_nothing() {
    let db = fresh_database().await;
    let server = std::sync::Arc::new(Spawned::start(&db, &["--ai-latency-min", "0s", "--ai-latency-max", "0s"]).await);

    // 500 concurrent packets to one call: all stored, counters exact.
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 1..=500u64 {
        let server = server.clone();
        tasks.spawn(async move { server.post("/ingest/pg-busy", Some(packet(seq))).await });
    }
    let mut out_of_order = 0;
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.unwrap();
        assert_eq!((status, body["status"].as_str()), (200, Some("accepted")), "{body}");
        out_of_order += u64::from(body["order"] == "out_of_order");
    }
    let ordering = server.get("/v1/calls/pg-busy").await["ordering"].clone();
    assert_eq!(
        (&ordering["received"], &ordering["highest"], &ordering["missing"], &ordering["duplicates"]),
        (&json!(500), &json!(500), &json!(0), &json!(0))
    );
    assert_eq!(ordering["out_of_order"], out_of_order);

    // The same packet twice at once: one accepted, one duplicate.
    for n in 0..20 {
        let path = format!("/ingest/pg-twice-{n}");
        let (a, b) = tokio::join!(server.post(&path, Some(packet(1))), server.post(&path, Some(packet(1))));
        let mut statuses = [a.1["status"].as_str().unwrap().to_owned(), b.1["status"].as_str().unwrap().to_owned()];
        statuses.sort();
        assert_eq!(statuses, ["accepted", "duplicate"]);
    }

    // Hang-up racing ingestion: every 200 is stored, every refusal is a 409 call_closed.
    assert_eq!(server.post("/ingest/pg-race", Some(packet(1))).await.0, 200);
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 2..=300u64 {
        let s = server.clone();
        tasks.spawn(async move { (seq, s.post("/ingest/pg-race", Some(packet(seq))).await) });
        if seq == 150 {
            let s = server.clone();
            tasks.spawn(async move { (0, s.post("/v1/calls/pg-race/complete", None).await) });
        }
    }
    let mut acked = std::collections::BTreeSet::from([1u64]);
    while let Some(joined) = tasks.join_next().await {
        let (seq, (status, body)) = joined.unwrap();
        match (seq, status) {
            (0, s) => assert_eq!(s, 200, "hang-up: {body}"),
            (_, 200) => {
                acked.insert(seq);
            }
            (_, 409) => assert_eq!(body["error"], "call_closed"),
            (_, s) => panic!("packet {seq}: {s} {body}"),
        }
    }
    let view = server.get("/v1/calls/pg-race").await;
    assert_ne!(view["state"], "IN_PROGRESS");
    assert_eq!(view["ordering"]["received"], acked.len() as u64);
    assert_eq!(view["ordering"]["highest"], *acked.last().unwrap());
    // The API lists at most 100 ranges, the lowest ones.
    let expected = missing_ranges(&acked);
    let listed = view["ordering"]["missing_ranges"].as_array().unwrap();
    assert_eq!(listed[..], expected.as_array().unwrap()[..listed.len()]);
    assert_eq!(view["ordering"]["missing_ranges_truncated"], expected.as_array().unwrap().len() > listed.len());
    assert_eq!(server.post("/ingest/pg-race", Some(packet(301))).await.0, 409);
    drop(server);
    db.drop_now().await;
}

/// Two instances on one PostgreSQL: a call ingested on A appears on B's live feed, and
/// both feeds see every event of both instances once, in one order (the log's ids are
/// the store's, not the process's).
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_one_event_feed() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let db = fresh_database().await;
    let a = Spawned::start(&db, &["--no-processor"]).await;
    let b = Spawned::start(&db, &["--no-processor"]).await;
    let ws = |s: &Spawned, query: &str| format!("{}/v1/events/ws?{query}", s.url.replacen("http", "ws", 1));
    let (mut on_b, _) = tokio_tungstenite::connect_async(ws(&b, "")).await.expect("feed on B");
    let (mut on_a, _) = tokio_tungstenite::connect_async(ws(&a, "")).await.expect("feed on A");
    async fn next(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Value {
        let wait = async {
            loop {
                if let Message::Text(text) = ws.next().await.expect("open").expect("frame") {
                    return serde_json::from_str::<Value>(&text).expect("json");
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait).await.expect("a message within a minute")
    }

    assert_eq!(a.post("/ingest/multi-a", Some(packet(1))).await.0, 200);
    let seen = next(&mut on_b).await;
    assert_eq!((seen["type"].as_str(), seen["call_id"].as_str()), (Some("call_created"), Some("multi-a")));
    for i in 0..20 {
        let (server, call) = if i % 2 == 0 { (&a, format!("multi-{i}")) } else { (&b, format!("multi-{i}")) };
        assert_eq!(server.post(&format!("/ingest/{call}"), Some(packet(1))).await.0, 200);
    }
    let mut from_a = vec![next(&mut on_a).await];
    let mut from_b = vec![seen];
    while from_b.len() < 21 {
        from_b.push(next(&mut on_b).await);
    }
    while from_a.len() < 21 {
        from_a.push(next(&mut on_a).await);
    }
    let ids = |v: &[Value]| v.iter().map(|m| m["id"].as_u64().expect("id")).collect::<Vec<_>>();
    assert_eq!(ids(&from_a), ids(&from_b), "one order for every instance");
    let first = ids(&from_a)[0];
    assert_eq!(ids(&from_a), (first..first + 21).collect::<Vec<_>>(), "every event once, no gap");
    let mut calls: Vec<&str> = from_b.iter().map(|m| m["call_id"].as_str().unwrap()).collect();
    calls.sort_unstable();
    calls.dedup();
    assert_eq!(calls.len(), 21);

    // Resuming on the other instance from the middle replays the rest.
    let (mut resumed, _) =
        tokio_tungstenite::connect_async(ws(&a, &format!("since={}", first + 10))).await.expect("resume on A");
    assert_eq!(next(&mut resumed).await["id"].as_u64(), Some(first + 11));
    drop((a, b));
    db.drop_now().await;
}

/// Webhooks with the receiver down, pbx SIGKILLed with every message undelivered, then
/// a new instance and the receiver up: every message arrives once verified, with the
/// webhook-id the first instance had given it.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_survive_a_receiver_outage_and_sigkill() {
    use crate::webhooks::{Receiver, call_to, secret};
    let db = fresh_database().await;
    // A port nobody listens on yet: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let key = secret(5);
    let args = [
        "--ai-latency-min",
        "0s",
        "--ai-latency-max",
        "0s",
        "--webhook-url",
        &url,
        "--webhook-secret",
        &key,
        "--webhook-max-interval",
        "200ms",
    ];
    let mut first = Spawned::start(&db, &args).await;
    let calls = ["wk-1", "wk-2", "wk-3"];
    for call in calls {
        call_to(&first, call, "ARCHIVED").await;
    }
    // Wait (through the API) until every delivery has failed at least once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let before = loop {
        let listed = first.get("/v1/webhooks/deliveries").await;
        let all = listed["deliveries"].as_array().unwrap().clone();
        // Failed, not merely claimed: a claimed attempt counts before it has an error.
        let failed = |d: &Value| d["status"] == "pending" && d["last_error"].is_string();
        if all.len() == 3 && all.iter().all(failed) {
            break all;
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries never attempted: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(before.iter().all(|d| d["last_error"].as_str().is_some_and(|e| e.contains("connect"))), "{before:?}");
    first.child.kill().await.expect("kill");

    let mut receiver = Receiver::start(&[&key], &["--port", &port.to_string()]).await;
    let second = Spawned::start(&db, &args).await;
    let mut got = std::collections::HashMap::new();
    while got.len() < 3 {
        let r = receiver.next().await;
        assert_eq!(r["verified"], json!([true]), "{r}");
        assert_eq!(r["body"]["type"], "call.archived");
        got.insert(r["body"]["data"]["call_id"].as_str().unwrap().to_owned(), r["webhook_id"].clone());
    }
    for d in &before {
        assert_eq!(got[d["call_id"].as_str().unwrap()], d["message_id"], "the same webhook-id after the crash");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = second.get("/v1/webhooks/deliveries").await;
        if listed["deliveries"].as_array().unwrap().iter().all(|d| d["status"] == "delivered") {
            assert_eq!(listed["deliveries"].as_array().unwrap().len(), 3, "no event enqueued twice");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all delivered: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((first, second, receiver));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_sweeps_packets_then_calls_on_postgres() {
    let db = fresh_database().await;
    let mut args = vec!["--database-url", &db];
    args.extend(crate::retention::RETENTION);
    let server = Spawned::start_with(&args).await;
    crate::retention::packets_then_calls_are_swept(&server, "ret-pg-1").await;
}
