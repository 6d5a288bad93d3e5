//! `GET /v1/media/audiohook` over a real socket: the poem server on port 0, a gateway on
//! the memory store, clients speaking AudioHook with tokio-tungstenite, and Genesys's
//! own reference client (`PBX_AUDIOHOOK_TESTS=1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use pbx_core::gateway::{Gateway, GatewayConfig};
use pbx_core::{CallId, CallState};
use pbx_server::streams::audiohook::{self, AudioHookConfig};
use pbx_server::streams::{StreamConfig, Streams};
use pbx_store_memory::MemoryCallStore;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Route, Server};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const KEY: &str = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";
const SECRET: &str = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=";
const ORG: &str = "d7934305-0972-4844-938e-9060eef73d05";
const CONV: &str = "090eaa2f-72fa-480a-83e0-8667ff89c0ec";
const PROBE: &str = "00000000-0000-0000-0000-000000000000";
const PATH: &str = "/v1/media/audiohook";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Spawned {
    port: u16,
    gateway: Gateway,
    streams: Streams,
}

async fn spawn() -> Spawned {
    let gateway = Gateway::new(Arc::new(MemoryCallStore::new()), GatewayConfig::default()).expect("gateway");
    let streams = Streams::new(gateway.clone(), StreamConfig::default());
    let config = AudioHookConfig::with_keys(vec![format!("{KEY}:{SECRET}").parse().unwrap()]);
    let app = Route::new().nest("/v1/media", audiohook::routes(streams.clone(), config)).map_to_response();
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind");
    let port = acceptor.local_addr()[0].as_socket_addr().expect("tcp").port();
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    Spawned { port, gateway, streams }
}

/// The upgrade headers, signed as Genesys signs them (written from the reference
/// client's `clientwebsocket.ts` / `SignatureBuilder`, not from pbx's verifier).
fn signed_request(
    port: u16,
    session: &str,
    secret: &[u8],
    nonce: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://127.0.0.1:{port}{PATH}").into_client_request().unwrap();
    let host = format!("127.0.0.1:{port}");
    let correlation = "30b0e395-84d3-4570-ac13-9a62d8f514c0";
    let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let params = format!(
        r#"("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="{KEY}";nonce="{nonce}";alg="hmac-sha256";created={created};expires={}"#,
        created + 30
    );
    let base = format!(
        "\"@request-target\": {PATH}\n\"@authority\": {host}\n\"audiohook-organization-id\": {ORG}\n\"audiohook-session-id\": {session}\n\"audiohook-correlation-id\": {correlation}\n\"x-api-key\": {KEY}\n\"@signature-params\": {params}"
    );
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(base.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let h = req.headers_mut();
    for (k, v) in [
        ("audiohook-organization-id", ORG.to_owned()),
        ("audiohook-session-id", session.to_owned()),
        ("audiohook-correlation-id", correlation.to_owned()),
        ("x-api-key", KEY.to_owned()),
        ("signature-input", format!("sig1={params}")),
        ("signature", format!("sig1=:{signature}:")),
    ] {
        h.insert(k, HeaderValue::from_str(&v).unwrap());
    }
    req
}

fn nonce(session: &str) -> String {
    format!("nonce-{session}")
}

async fn connect(port: u16, session: &str) -> Ws {
    let secret = BASE64.decode(SECRET).unwrap();
    let (ws, resp) = tokio_tungstenite::connect_async(signed_request(port, session, &secret, &nonce(session)))
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// A client's message sequence: seq from 1, serverseq as seen.
struct Client {
    ws: Ws,
    session: String,
    seq: u64,
    serverseq: u64,
}

impl Client {
    async fn new(port: u16, session: &str) -> Self {
        Self { ws: connect(port, session).await, session: session.to_owned(), seq: 0, serverseq: 0 }
    }

    async fn send(&mut self, kind: &str, position: &str, parameters: Value) {
        self.seq += 1;
        let msg = json!({"version":"2","type":kind,"seq":self.seq,"serverseq":self.serverseq,"id":self.session,
            "position":position,"parameters":parameters});
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        loop {
            match self.ws.next().await.expect("a message").expect("no error") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["seq"].as_u64(), Some(self.serverseq + 1), "server seq grows by one: {v}");
                    assert_eq!(v["clientseq"].as_u64(), Some(self.seq), "{v}");
                    self.serverseq += 1;
                    return v;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn open(&mut self, conversation: &str, media: Value) -> Value {
        let params = json!({"organizationId":ORG,"conversationId":conversation,
            "participant":{"id":"883efee8-3d6c-4537-b500-6d7ca4b92fa0","ani":"+1-555-555-1234","aniName":"John Doe","dnis":"+1-800-555-6789"},
            "media":media,"language":"en-US"});
        self.send("open", "PT0S", params).await;
        self.recv().await
    }

    /// The close frame the server ends with (code, reason).
    async fn closed_by_server(&mut self) -> (u16, String) {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
                Some(Ok(_)) => {}
            }
        }
    }
}

fn stereo() -> Value {
    json!([{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000},
           {"type":"audio","format":"PCMU","channels":["external"],"rate":8000}])
}

async fn wav_len(gateway: &Gateway, call: &CallId) -> (u64, u8) {
    let rec = gateway.recording(call).await.expect("recording");
    (rec.content_length() - 44, rec.channels())
}

#[tokio::test]
async fn a_full_session_is_stored_and_completed() {
    let app = spawn().await;
    let session = "e160e428-53e2-487c-977d-96989bf5c99d";
    let mut c = Client::new(app.port, session).await;
    let opened = c.open(CONV, stereo()).await;
    assert_eq!(opened["type"], "opened");
    assert_eq!(opened["parameters"]["media"], json!([stereo()[0]]));
    // 10 frames of 20 ms stereo PCMU (160 samples x 2 channels).
    for i in 0..10u8 {
        c.ws.send(Message::binary(vec![i; 320])).await.unwrap();
    }
    c.send("ping", "PT0.2S", json!({})).await;
    assert_eq!(c.recv().await["type"], "pong");
    c.send("paused", "PT0.2S", json!({})).await;
    c.send("resumed", "PT0.2S", json!({"start":"PT0.2S","discarded":"PT0.04S"})).await;
    for i in 0..5u8 {
        c.ws.send(Message::binary(vec![100 + i; 320])).await.unwrap();
    }
    c.send("update", "PT0.3S", json!({"language":"fr-FR"})).await;
    assert_eq!(c.recv().await["type"], "updated");
    c.send("close", "PT0.3S", json!({"reason":"end"})).await;
    assert_eq!(c.recv().await["type"], "closed");
    assert_eq!(c.closed_by_server().await.0, 1000);

    // `closed` comes after the call was completed: nothing to wait for.
    let call = CallId::new(session).unwrap();
    let snapshot = app.gateway.call(&call).await.unwrap();
    assert_eq!(snapshot.state, CallState::Completed);
    let counters = snapshot.ordering.counters;
    // 10 + 2 silent frames (the pause) + 5.
    assert_eq!((counters.received, counters.highest, counters.missing(), counters.duplicates), (17, 17, 0, 0));
    let (bytes, channels) = wav_len(&app.gateway, &call).await;
    assert_eq!(channels, 2);
    assert_eq!(bytes, 17 * 160 * 2 * 2, "17 frames of 20 ms, stereo PCM16");
    let stats = app.streams.stats().snapshot();
    assert_eq!((stats.frames_stored, stats.frames_dropped, stats.protocol_errors), (17, 0, 0));

    // What `open` said is kept with the call.
    let [stream] = &snapshot.streams[..] else { panic!("one stream: {:?}", snapshot.streams) };
    assert_eq!(
        (stream.protocol.as_str(), stream.stream_id.as_deref(), stream.account.as_deref()),
        ("audiohook", Some(session), Some(ORG))
    );
    assert_eq!(stream.conversation_id.as_deref(), Some(CONV));
    let p = stream.participant.as_ref().expect("participant");
    assert_eq!(
        (p.ani.as_str(), p.ani_name.as_str(), p.dnis.as_str()),
        ("+1-555-555-1234", "John Doe", "+1-800-555-6789")
    );
    assert_eq!(stream.language.as_deref(), Some("en-US"));
    assert_eq!(stream.tracks, vec!["external".to_owned(), "internal".to_owned()]);
}

#[tokio::test]
async fn a_reconnect_continues_the_call_and_resent_frames_are_duplicates() {
    let app = spawn().await;
    let session = "1a0c5a3e-8d8e-4c0e-9a55-31d1d3b5f0a1";
    let mut c = Client::new(app.port, session).await;
    c.open(CONV, stereo()).await;
    for _ in 0..3 {
        c.ws.send(Message::binary(vec![1; 320])).await.unwrap();
    }
    c.ws.close(None).await.unwrap();
    // The same session reconnects at 40 ms and resends frame 3.
    let secret = BASE64.decode(SECRET).unwrap();
    let (ws, _) =
        tokio_tungstenite::connect_async(signed_request(app.port, session, &secret, "another-nonce-0123456789"))
            .await
            .unwrap();
    let mut c = Client { ws, session: session.into(), seq: 0, serverseq: 0 };
    c.seq += 1;
    let open = json!({"version":"2","type":"open","seq":1,"serverseq":0,"id":session,"position":"PT0.04S",
        "parameters":{"organizationId":ORG,"conversationId":CONV,"media":stereo()}});
    c.ws.send(Message::text(open.to_string())).await.unwrap();
    assert_eq!(c.recv().await["type"], "opened");
    for _ in 0..2 {
        c.ws.send(Message::binary(vec![1; 320])).await.unwrap();
    }
    c.send("close", "PT0.08S", json!({"reason":"end"})).await;
    assert_eq!(c.recv().await["type"], "closed");
    let snapshot = app.gateway.call(&CallId::new(session).unwrap()).await.unwrap();
    assert_eq!(snapshot.state, CallState::Completed);
    let counters = snapshot.ordering.counters;
    assert_eq!((counters.highest, counters.duplicates, counters.missing()), (4, 1, 0));
    let offsets: Vec<u64> = snapshot.streams.iter().map(|s| s.start_offset_ms).collect();
    assert_eq!(offsets, vec![0, 40], "the reconnect is a second stream, starting at 40 ms");
}

#[tokio::test]
async fn a_probe_creates_no_call() {
    let app = spawn().await;
    let session = "2b1d6b4f-9e9f-4d1f-8b66-42e2e4c6a1b2";
    let mut c = Client::new(app.port, session).await;
    assert_eq!(c.open(PROBE, stereo()).await["type"], "opened");
    c.send("close", "PT0S", json!({"reason":"end"})).await;
    assert_eq!(c.recv().await["type"], "closed");
    assert!(app.gateway.call(&CallId::new(session).unwrap()).await.is_err(), "no call for a probe");
}

#[tokio::test]
async fn another_organization_in_open_is_disconnected_unauthorized() {
    let app = spawn().await;
    let session = "3c2e7c5a-af0a-4e2a-9c77-53f3f5d7b2c3";
    let mut c = Client::new(app.port, session).await;
    c.send(
        "open",
        "PT0S",
        json!({"organizationId":"11111111-2222-3333-4444-555555555555","conversationId":CONV,"media":stereo()}),
    )
    .await;
    let d = c.recv().await;
    assert_eq!((d["type"].as_str(), d["parameters"]["reason"].as_str()), (Some("disconnect"), Some("unauthorized")));
    c.send("close", "PT0S", json!({"reason":"disconnect"})).await;
    assert_eq!(c.recv().await["type"], "closed");
    assert!(app.gateway.call(&CallId::new(session).unwrap()).await.is_err());
}

async fn refused_status(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> u16 {
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn bad_keys_and_signatures_get_401() {
    let app = spawn().await;
    let session = "4d3f8d6b-b01b-4f3b-8d88-64a4a6e8c3d4";
    let secret = BASE64.decode(SECRET).unwrap();
    let mut bad_key = signed_request(app.port, session, &secret, &nonce(session));
    bad_key.headers_mut().insert("x-api-key", HeaderValue::from_static("not-the-key"));
    assert_eq!(refused_status(bad_key).await, 401);
    let wrong_secret = signed_request(app.port, session, b"wrong secret", &nonce(session));
    assert_eq!(refused_status(wrong_secret).await, 401);
    let mut unsigned = format!("ws://127.0.0.1:{}{PATH}", app.port).into_client_request().unwrap();
    unsigned.headers_mut().insert("x-api-key", HeaderValue::from_static(KEY));
    assert_eq!(refused_status(unsigned).await, 401);
    // A good request once; the same nonce again is a replay.
    let ok = signed_request(app.port, session, &secret, "replayed-nonce-0123456789");
    let replay = ok.clone();
    assert!(tokio_tungstenite::connect_async(ok).await.is_ok());
    assert_eq!(refused_status(replay).await, 401);
}

#[tokio::test]
async fn garbage_closes_only_that_stream() {
    let app = spawn().await;
    // A healthy stream alongside.
    let good = "5e4a9e7c-c12c-4a4c-9e99-75b5b7f9d4e5";
    let mut healthy = Client::new(app.port, good).await;
    healthy.open(CONV, stereo()).await;

    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        ("binary before open", vec![Message::binary(vec![0; 320])], 1008),
        ("not JSON", vec![Message::text("not json")], 1008),
        ("huge frame", vec![Message::binary(vec![0; 200_000])], 1009),
    ];
    for (i, (name, frames, code)) in cases.into_iter().enumerate() {
        let session = format!("6f5b0f8d-d23d-4b5d-8f00-86c6c80ae5f{i}");
        let mut c = Client::new(app.port, &session).await;
        if name == "huge frame" {
            c.open(CONV, stereo()).await;
        }
        for f in frames {
            c.ws.send(f).await.unwrap();
        }
        let d = c.recv().await;
        assert_eq!(
            (d["type"].as_str(), d["parameters"]["reason"].as_str()),
            (Some("disconnect"), Some("error")),
            "{name}"
        );
        let (got, reason) = c.closed_by_server().await;
        assert_eq!(got, code, "{name}: {reason}");
        assert!(!reason.is_empty(), "{name}: a reason");
    }
    // A second open.
    let session = "7a6c1a9e-e34e-4c6e-9a11-97d7d91bf6a7";
    let mut c = Client::new(app.port, session).await;
    c.open(CONV, stereo()).await;
    c.send("open", "PT0S", json!({"organizationId":ORG,"conversationId":CONV,"media":stereo()})).await;
    assert_eq!(c.recv().await["parameters"]["reason"], "error");
    let (code, reason) = c.closed_by_server().await;
    assert_eq!(code, 1008);
    assert!(reason.contains("already"), "{reason}");

    // The healthy stream goes on.
    healthy.ws.send(Message::binary(vec![9; 320])).await.unwrap();
    healthy.send("close", "PT0.02S", json!({"reason":"end"})).await;
    assert_eq!(healthy.recv().await["type"], "closed");
    let snapshot = app.gateway.call(&CallId::new(good).unwrap()).await.unwrap();
    assert_eq!((snapshot.state, snapshot.ordering.counters.received), (CallState::Completed, 1));
    assert_eq!(app.streams.stats().snapshot().protocol_errors, 4);
}

// ---------------------------------------------------------------------------------
// Genesys's reference client

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn sh(script: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(script)
        .args(args)
        .current_dir(repo())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let text = strip_ansi(&format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{} failed:\n{text}", script.display());
    text
}

async fn reference_client(port: u16, secret: &str, extra: &[&str]) -> String {
    let uri = format!("ws://127.0.0.1:{port}{PATH}");
    let wav = repo().join("target/test-audio/allison-busy.wav");
    let wav = wav.to_str().unwrap();
    let mut args = vec!["--uri", &uri, "--api-key", KEY, "--client-secret", secret, "--wavfile", wav];
    args.extend_from_slice(extra);
    sh(&repo().join("tools/audiohook-client/run.sh"), &args).await
}

fn session_ids(log: &str) -> Vec<String> {
    log.lines().filter_map(|l| l.split("SessionId: ").nth(1)).map(|s| s.trim().to_owned()).collect()
}

/// Samples of the mono 16-bit WAV `path` (its `data` chunk).
fn wav_samples(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()) as u64;
        if &bytes[i..i + 4] == b"data" {
            return len / 2;
        }
        i += 8 + len as usize + (len as usize & 1);
    }
    panic!("no data chunk in {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesys_reference_client() {
    if std::env::var("PBX_AUDIOHOOK_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set PBX_AUDIOHOOK_TESTS=1 to run Genesys's AudioHook reference client");
        return;
    }
    let wav = repo().join("target/test-audio/allison-busy.wav");
    if !wav.exists() {
        sh(&repo().join("tools/test-audio/prepare.sh"), &[]).await;
    }
    sh(&repo().join("tools/audiohook-client/setup.sh"), &[]).await;
    let app = spawn().await;

    // One session streaming real speech.
    let log = reference_client(app.port, SECRET, &[]).await;
    assert!(log.contains("onOpenedMessage - Session open!"), "{log}");
    assert!(log.contains("onClosedMessage - Session closed"), "{log}");
    for failure in ["Websocket error", "closed unexpectedly", "Unexpected server response"] {
        assert!(!log.contains(failure), "{failure}:\n{log}");
    }
    let ids = session_ids(&log);
    assert_eq!(ids.len(), 1, "{log}");
    let call = CallId::new(ids[0].clone()).unwrap();
    let snapshot = app.gateway.call(&call).await.unwrap();
    assert_eq!(snapshot.state, CallState::Completed);
    let samples = wav_samples(&wav);
    let (bytes, channels) = wav_len(&app.gateway, &call).await;
    assert_eq!(channels, 1, "the client offers mono for a mono WAV");
    let recorded = bytes / 2;
    // The client sends 200 ms frames (1600 samples); the last is padded to a full frame.
    assert_eq!(recorded, samples.div_ceil(1600) * 1600, "recorded {recorded} samples for {samples}");
    assert_eq!(snapshot.ordering.counters.missing(), 0);
    println!(
        "reference client, one session:\n{}",
        log.lines().filter(|l| l.contains("Session")).collect::<Vec<_>>().join("\n")
    );

    // Twenty concurrent sessions.
    let log = reference_client(app.port, SECRET, &["--session-count", "20"]).await;
    assert_eq!(log.matches("onOpenedMessage - Session open!").count(), 20, "{log}");
    assert_eq!(log.matches("onClosedMessage - Session closed").count(), 20, "{log}");
    assert!(!log.contains("Websocket error") && !log.contains("closed unexpectedly"), "{log}");
    let ids = session_ids(&log);
    assert_eq!(ids.len(), 20);
    for id in &ids {
        let call = CallId::new(id.clone()).unwrap();
        assert_eq!(app.gateway.call(&call).await.unwrap().state, CallState::Completed, "{id}");
        assert_eq!(wav_len(&app.gateway, &call).await.0 / 2, samples.div_ceil(1600) * 1600, "{id}");
    }

    // A wrong secret is refused at the upgrade.
    let wrong = BASE64.encode(b"not the client secret at all!");
    let log = reference_client(app.port, &wrong, &[]).await;
    assert!(log.contains("Unexpected server response: 401"), "{log}");
    assert!(!log.contains("Session open!"), "{log}");
    println!(
        "reference client, wrong secret:\n{}",
        log.lines().filter(|l| l.contains("401")).collect::<Vec<_>>().join("\n")
    );
}
