//! `GET /v1/events/ws` against a served [`Server`]: live delivery, `since` replay with
//! no gap or duplicate at the seam, `resync`, `lagged` with a client that does not
//! read, filters, tickets, and the close on shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pbx_core::ai::{SimulatedAi, SimulatedAiConfig};
use pbx_core::packet::{NewPacket, Packet};
use pbx_core::store::CallStore;
use pbx_server::{Server, Settings};
use pbx_store_memory::MemoryCallStore;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A served pbx-server over `store`, stopped when dropped.
pub(crate) struct Served {
    pub(crate) url: String,
    pub(crate) ws: String,
    pub(crate) http: reqwest::Client,
    pub(crate) gateway: pbx_core::gateway::Gateway,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<Result<(), pbx_server::ServerError>>>,
}

impl Served {
    pub(crate) async fn start(store: Arc<dyn CallStore>, extra: &[&str]) -> Self {
        let mut args = vec!["pbx-server", "--bind", "127.0.0.1:0", "--no-processor", "--shutdown-grace", "5s"];
        args.extend_from_slice(extra);
        let settings = Settings::parse_from_args(args).expect("settings");
        let ai = Arc::new(SimulatedAi::new(SimulatedAiConfig::default()).expect("simulated AI"));
        let server = Server::build_with(settings, store, ai).await.expect("server");
        let addr = server.local_addr();
        let gateway = server.gateway().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            url: format!("http://{addr}"),
            ws: format!("ws://{addr}/v1/events/ws"),
            http: reqwest::Client::new(),
            gateway,
            stop: Some(stop),
            running: Some(running),
        }
    }

    pub(crate) async fn ingest(&self, call: &str, seq: u64, key: Option<&str>) {
        let packet = json!({"sequence": seq, "data": format!("audio_chunk_{seq}"), "timestamp": 1.0});
        let mut req = self.http.post(format!("{}/ingest/{call}", self.url)).json(&packet);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        assert_eq!(req.send().await.expect("ingest").status(), 200);
    }

    pub(crate) async fn connect(&self, query: &str) -> Ws {
        tokio_tungstenite::connect_async(format!("{}?{query}", self.ws)).await.expect("upgrade").0
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.expect("server task").expect("clean stop");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The next JSON message (pings skipped). A hang guard bounds the wait.
pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    let wait = async {
        loop {
            match ws.next().await.expect("socket open").expect("frame") {
                Message::Text(text) => return serde_json::from_str::<Value>(&text).expect("JSON message"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait).await.expect("a message within a minute")
}

async fn close_code(ws: &mut Ws) -> (CloseCode, String) {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait).await.expect("a close within a minute")
}

fn memory() -> Arc<dyn CallStore> {
    Arc::new(MemoryCallStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_live_and_since_replays_without_gap_or_duplicate() {
    let server = Served::start(memory(), &[]).await;
    let mut live = server.connect("").await;
    server.ingest("ws-1", 1, None).await;
    let created = next_json(&mut live).await;
    assert_eq!((created["type"].as_str(), created["call_id"].as_str()), (Some("call_created"), Some("ws-1")));
    assert_eq!(created["id"], 1);
    assert!(created["at"].is_string());

    for i in 2..=50 {
        server.ingest(&format!("ws-{i}"), 1, None).await;
    }
    // Resume from 10 while more is written: replay, seam, live.
    let mut resumed = server.connect("since=10").await;
    let writer = {
        let (url, http) = (server.url.clone(), server.http.clone());
        tokio::spawn(async move {
            for i in 51..=120 {
                let packet = json!({"sequence": 1, "data": "x", "timestamp": 1.0});
                http.post(format!("{url}/ingest/ws-{i}")).json(&packet).send().await.expect("ingest");
            }
        })
    };
    let mut ids = Vec::new();
    while ids.len() < 110 {
        ids.push(next_json(&mut resumed).await["id"].as_u64().expect("id"));
    }
    writer.await.expect("writer");
    assert_eq!(ids, (11..=120).collect::<Vec<u64>>());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pick_calls_types_and_states() {
    let server = Served::start(memory(), &[]).await;
    let mut only_b = server.connect("call_id=f-b").await;
    let mut completions = server.connect("type=state_changed&state=COMPLETED").await;
    let mut created = server.connect("type=call_created&type=ordering_anomaly").await;
    server.ingest("f-a", 1, None).await;
    server.ingest("f-b", 1, None).await;
    server.ingest("f-b", 5, None).await;
    server.http.post(format!("{}/v1/calls/f-a/complete", server.url)).send().await.expect("complete");

    let b: Vec<Value> = [next_json(&mut only_b).await, next_json(&mut only_b).await].into();
    assert!(b.iter().all(|m| m["call_id"] == "f-b"), "{b:?}");
    assert_eq!((b[0]["type"].as_str(), b[1]["type"].as_str()), (Some("call_created"), Some("ordering_anomaly")));
    let done = next_json(&mut completions).await;
    assert_eq!((done["call_id"].as_str(), done["to"].as_str()), (Some("f-a"), Some("COMPLETED")));
    let kinds: Vec<String> =
        [next_json(&mut created).await, next_json(&mut created).await, next_json(&mut created).await]
            .iter()
            .map(|m| format!("{}:{}", m["type"].as_str().unwrap(), m["call_id"].as_str().unwrap()))
            .collect();
    assert_eq!(kinds, ["call_created:f-a", "call_created:f-b", "ordering_anomaly:f-b"]);

    let bad = tokio_tungstenite::connect_async(format!("{}?type=nope", server.ws)).await;
    match bad {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected a 400, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_past_retention_or_unknown_gets_resync_then_live() {
    // A ring of 10 events: older ones are gone, as past retention.
    let store: Arc<dyn CallStore> = Arc::new(MemoryCallStore::with_event_capacity(10));
    let server = Served::start(store, &[]).await;
    for i in 1..=30 {
        server.ingest(&format!("rs-{i}"), 1, None).await;
    }
    let mut old = server.connect("since=3").await;
    let resync = next_json(&mut old).await;
    assert_eq!(
        (resync["type"].as_str(), resync["id"].as_u64(), resync["reason"].as_str()),
        (Some("resync"), Some(30), Some("pruned"))
    );
    assert!(resync.get("call_id").is_none());
    let mut unknown = server.connect("since=1000").await;
    let resync = next_json(&mut unknown).await;
    assert_eq!((resync["type"].as_str(), resync["reason"].as_str()), (Some("resync"), Some("unknown_cursor")));
    server.ingest("rs-live", 1, None).await;
    assert_eq!(next_json(&mut old).await["id"], 31);
    assert_eq!(next_json(&mut unknown).await["id"], 31);
    let mut kept = server.connect("since=25").await;
    assert_eq!(next_json(&mut kept).await["id"], 26, "a cursor still kept replays");
    server.stop().await;
}

/// A client that reads nothing while 100,000 events are written: ingest goes on (no
/// request waits for it), and when it reads again it is told it lagged and then
/// gets every event, in order, from the log. The server's memory for it is the
/// shared ring plus one page, whatever the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_lags_and_then_catches_up_from_the_log() {
    let store: Arc<dyn CallStore> = Arc::new(MemoryCallStore::with_event_capacity(200_000));
    let server = Served::start(store, &[]).await;
    let mut slow = server.connect("").await;
    // 100,000 calls created in batches of 1,000: 100,000 events, none of which waits
    // for the client.
    for chunk in 0..100 {
        let batch: Vec<NewPacket> = (0..1000)
            .map(|i| {
                let call = pbx_core::CallId::new(format!("lag-{chunk:03}-{i:04}")).expect("id");
                NewPacket::new(call, Packet::new(1, "x", 1.0).expect("packet"))
            })
            .collect();
        server.gateway.ingest_batch(batch).await.expect("stored");
    }
    let mut lagged = 0;
    let mut expect = 1;
    while expect <= 100_000 {
        let m = next_json(&mut slow).await;
        match m["type"].as_str() {
            Some("lagged") => {
                lagged += 1;
                assert_eq!(m["id"].as_u64(), Some(expect - 1), "lagged names the last id delivered");
                assert!(m["missed"].as_u64().unwrap_or(0) > 0);
            }
            Some("call_created") => {
                assert_eq!(m["id"].as_u64(), Some(expect), "no gap, no duplicate");
                expect += 1;
            }
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert!(lagged >= 1, "100,000 events through a ring of 4,096 lag a client that did not read");
    slow.send(Message::Close(None)).await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_the_feed_takes_a_supervisor_key_or_a_one_time_ticket() {
    let keys = ["--api-key", "supervisor:sk,ingest:ik,admin:ak"];
    let server = Served::start(memory(), &keys).await;
    let refused = |r: Result<_, tungstenite::Error>| match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => 101,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(refused(tokio_tungstenite::connect_async(server.ws.clone()).await), 401, "no credentials");

    let ticket = |key: &'static str| {
        let (url, http) = (server.url.clone(), server.http.clone());
        async move {
            let resp = http.post(format!("{url}/v1/events/ticket")).bearer_auth(key).send().await.expect("ticket");
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.expect("json")
        }
    };
    let t = ticket("sk").await;
    assert_eq!(t["role"], "supervisor");
    assert!(t["expires_at"].is_string());
    let t = t["ticket"].as_str().expect("ticket").to_owned();
    let mut ws = server.connect(&format!("ticket={t}")).await;
    server.ingest("auth-1", 1, Some("ik")).await;
    assert_eq!(next_json(&mut ws).await["call_id"], "auth-1");
    let again = tokio_tungstenite::connect_async(format!("{}?ticket={t}", server.ws)).await;
    assert_eq!(refused(again), 401, "a ticket is used once");
    let ingest_ticket = ticket("ik").await;
    let q = format!("{}?ticket={}", server.ws, ingest_ticket["ticket"].as_str().unwrap());
    assert_eq!(refused(tokio_tungstenite::connect_async(q).await), 403, "an ingest key's ticket is not enough");
    let forged = format!("{}?ticket={}x", server.ws, &t);
    assert_eq!(refused(tokio_tungstenite::connect_async(forged).await), 401);
    assert_eq!(ticket("ak").await["role"], "admin");
    let anonymous = server.http.post(format!("{}/v1/events/ticket", server.url)).send().await.expect("ticket");
    assert_eq!(anonymous.status(), 401);

    // A program can send the key itself.
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(server.ws.clone()).expect("request");
    req.headers_mut().insert("authorization", "Bearer sk".parse().expect("header"));
    let (mut direct, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade with a key");
    server.ingest("auth-2", 1, Some("ik")).await;
    assert_eq!(next_json(&mut direct).await["call_id"], "auth-2");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_feed_with_going_away() {
    let server = Served::start(memory(), &[]).await;
    let mut ws = server.connect("").await;
    server.ingest("bye-1", 1, None).await;
    assert_eq!(next_json(&mut ws).await["type"], "call_created");
    let stopping = tokio::spawn(server.stop());
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    assert!(reason.contains("shutting down"), "{reason}");
    stopping.await.expect("stopped");
}
