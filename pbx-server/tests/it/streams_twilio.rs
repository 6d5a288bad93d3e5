//! Twilio and Telnyx Media Streams over real WebSockets: a client written from the
//! vendors' published message formats (`../shared/protocols.md`, Twilio's "WebSocket
//! messages" and Telnyx's "Stream call media over WebSocket" references) streams real
//! speech into the endpoints served on port 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use pbx_core::gateway::{Feed, FeedItem};
use pbx_core::gateway::{Gateway, GatewayConfig};
use pbx_core::{CallId, CallState};
use pbx_server::streams::{Secret, StreamConfig, Streams};
use pbx_store_memory::MemoryCallStore;
use poem::listener::{Acceptor, Listener};
use serde_json::{Value, json};
use sha1::Sha1;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// Test audio from `target/test-audio`, made by tools/test-audio/prepare.sh if missing.
pub(crate) fn test_audio(name: &str) -> Vec<u8> {
    let path = repo().join("target/test-audio").join(name);
    if !path.exists() {
        let status =
            std::process::Command::new(repo().join("tools/test-audio/prepare.sh")).status().expect("prepare.sh");
        assert!(status.success(), "tools/test-audio/prepare.sh failed");
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The stream endpoints over a memory store, served on a free port.
pub(crate) struct StreamServer {
    pub(crate) addr: SocketAddr,
    pub(crate) gateway: Gateway,
    pub(crate) streams: Streams,
}

impl StreamServer {
    pub(crate) fn gateway_and_streams(config: StreamConfig) -> (Gateway, Streams) {
        Self::over(Arc::new(MemoryCallStore::new()), config)
    }

    fn over(store: Arc<dyn pbx_core::store::CallStore>, config: StreamConfig) -> (Gateway, Streams) {
        if std::env::var_os("TEST_LOG").is_some() {
            pbx_server::init_tracing(pbx_server::LogFormat::Text);
        }
        let gateway = Gateway::new(store, GatewayConfig::default()).expect("gateway");
        let streams = Streams::new(gateway.clone(), config);
        (gateway, streams)
    }

    async fn spawn(config: StreamConfig) -> Self {
        Self::spawn_over(Arc::new(MemoryCallStore::new()), config).await
    }

    async fn spawn_over(store: Arc<dyn pbx_core::store::CallStore>, config: StreamConfig) -> Self {
        let (gateway, streams) = Self::over(store, config);
        let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind");
        let addr = *acceptor.local_addr()[0].as_socket_addr().expect("socket address");
        let app = poem::Route::new().nest("/v1/media", streams.routes());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        Self { addr, gateway, streams }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}/v1/media/{path}", self.addr)
    }

    async fn connect(&self, path: &str) -> Ws {
        tokio_tungstenite::connect_async(self.url(path)).await.expect("upgrade").0
    }
}

/// Waits for `call` to reach COMPLETED on the event feed (a hang guard, not a timing).
pub(crate) async fn wait_completed(events: &mut Feed, call: &CallId) {
    let wait = async {
        loop {
            if let FeedItem::Event(e) = events.next().await.expect("feed")
                && &e.call_id == call
                && e.body.new_state() == Some(CallState::Completed)
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the call was not completed");
}

/// The recording's whole length, by reading every chunk.
pub(crate) async fn recording_len(gateway: &Gateway, call: &CallId) -> (u64, u64, u8) {
    let mut rec = gateway.recording(call).await.expect("recording");
    let declared = rec.content_length();
    let channels = rec.channels();
    let mut read = 0u64;
    while let Some(chunk) = rec.next_chunk().await.expect("chunk") {
        read += chunk.len() as u64;
    }
    (declared, read, channels)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Reads until the server's close frame: its code and reason.
async fn close_frame(ws: &mut Ws) -> (CloseCode, String) {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
                Some(Ok(Message::Close(None))) | None => panic!("closed without a close frame"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before the close frame: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("no close frame")
}

// Twilio's messages, from twilio.com/docs/voice/media-streams/websocket-messages.

fn connected() -> Value {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
}

fn start(call: &str, tracks: &[&str]) -> Value {
    json!({
        "event": "start", "sequenceNumber": "1", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "start": {
            "accountSid": "AC123", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "callSid": call,
            "tracks": tracks, "customParameters": {"FirstName": "Jane"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }
    })
}

fn media(seq: u64, track: &str, chunk: u64, frame: &[u8]) -> Value {
    json!({
        "event": "media", "sequenceNumber": seq.to_string(), "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "media": {"track": track, "chunk": chunk.to_string(), "timestamp": ((chunk - 1) * 20).to_string(),
                  "payload": BASE64.encode(frame)}
    })
}

fn stop(seq: u64, call: &str) -> Value {
    json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
           "stop": {"accountSid": "AC123", "callSid": call}})
}

/// The speech in 160-byte (20 ms) mu-law frames; a short last frame is padded with
/// mu-law silence.
fn frames() -> Vec<Vec<u8>> {
    test_audio("allison-busy.ulaw")
        .chunks(160)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(160, 0xff);
            f
        })
        .collect()
}

/// Streams the speech on `ws` as Twilio does, `tracks` interleaved, then `stop`.
async fn stream_call(ws: &mut Ws, call: &str, tracks: &[&str]) -> usize {
    let frames = frames();
    send(ws, connected()).await;
    send(ws, start(call, tracks)).await;
    let mut seq = 2;
    for (i, frame) in frames.iter().enumerate() {
        for track in tracks {
            send(ws, media(seq, track, i as u64 + 1, frame)).await;
            seq += 1;
        }
        if i == 10 {
            send(
                ws,
                json!({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": seq.to_string(),
                            "dtmf": {"track": "inbound_track", "digit": "7"}}),
            )
            .await;
            seq += 1;
        }
    }
    send(
        ws,
        json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": "MZ1",
                    "mark": {"name": "greeting"}}),
    )
    .await;
    send(ws, stop(seq + 1, call)).await;
    frames.len()
}

#[tokio::test]
async fn twilio_streams_real_speech_into_a_completed_call() {
    let server = StreamServer::spawn(StreamConfig::default()).await;
    let call: CallId = "CA0123456789abcdef0123456789abcdef".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut ws = server.connect("twilio").await;
    let n = stream_call(&mut ws, call.as_str(), &["inbound"]).await;
    assert_eq!(close_frame(&mut ws).await.0, CloseCode::Normal);
    wait_completed(&mut events, &call).await;

    let snap = server.gateway.call(&call).await.unwrap();
    assert_eq!(snap.state, CallState::Completed);
    assert_eq!(snap.media_format.map(|f| f.to_string()).as_deref(), Some("mulaw/8000/1"));
    assert_eq!(snap.ordering.counters.received, n as u64);
    assert_eq!(snap.ordering.counters.missing(), 0);
    let (declared, read, channels) = recording_len(&server.gateway, &call).await;
    assert_eq!(channels, 1);
    assert_eq!(declared, n as u64 * 160 * 2 + 44);
    assert_eq!(read, declared);
    let stats = server.streams.stats().snapshot();
    assert_eq!((stats.frames_stored, stats.frames_dropped, stats.protocol_errors), (n as u64, 0, 0));

    // The stream's metadata and signals are kept with the call.
    let [stream] = &snap.streams[..] else { panic!("one stream: {:?}", snap.streams) };
    assert_eq!(
        (stream.protocol.as_str(), stream.stream_id.as_deref(), stream.account.as_deref()),
        ("twilio", Some("MZ18ad3ab5a668481ce02b83e7395059f0"), Some("AC123"))
    );
    assert_eq!(stream.custom_parameters, vec![("FirstName".to_owned(), "Jane".to_owned())]);
    assert_eq!(stream.tracks, vec!["inbound".to_owned()]);
    let signals: Vec<(&str, &str, u64)> =
        snap.signals.iter().map(|s| (s.kind.as_str(), s.value.as_str(), s.offset_ms)).collect();
    assert_eq!(signals, vec![("dtmf", "7", 200), ("mark", "greeting", (n as u64 - 1) * 20)]);
    assert!(snap.signals.iter().all(|s| s.stream_id == stream.stream_id));
}

#[tokio::test]
async fn twilio_both_tracks_is_one_call_with_two_channels() {
    let server = StreamServer::spawn(StreamConfig::default()).await;
    let call: CallId = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut ws = server.connect("twilio").await;
    let n = stream_call(&mut ws, call.as_str(), &["inbound", "outbound"]).await as u64;
    wait_completed(&mut events, &call).await;

    let snap = server.gateway.call(&call).await.unwrap();
    assert_eq!(snap.media_format.map(|f| f.channels()), Some(1), "each frame is mono; the tracks make the stereo");
    assert_eq!(snap.channel_ordering.len(), 2);
    for track in &snap.channel_ordering {
        assert_eq!((track.counters.received, track.counters.missing()), (n, 0));
    }
    let (declared, read, channels) = recording_len(&server.gateway, &call).await;
    assert_eq!(channels, 2);
    assert_eq!((declared, read), (n * 160 * 2 * 2 + 44, n * 160 * 2 * 2 + 44));
}

fn signed(url: &str, signature: Option<&str>) -> tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().expect("request");
    if let Some(sig) = signature {
        req.headers_mut().insert("X-Twilio-Signature", sig.parse().unwrap());
    }
    req
}

/// Computed here from Twilio's definition, not with the server's code.
fn twilio_signature(token: &str, url: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn twilio_signature_is_checked_before_the_upgrade() {
    let token = "b1b2c3d4e5f60718293a4b5c6d7e8f90";
    let config = StreamConfig { twilio_auth_token: Some(Secret::new(token)), ..StreamConfig::default() };
    let server = StreamServer::spawn(config).await;
    let url = server.url("twilio");

    for bad in [None, Some("bm90IGl0".to_owned()), Some(twilio_signature("another token", &url))] {
        match tokio_tungstenite::connect_async(signed(&url, bad.as_deref())).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403, "{bad:?}"),
            other => panic!("{bad:?} was not refused: {:?}", other.map(|(_, r)| r.status())),
        }
    }
    assert_eq!(server.streams.stats().snapshot().streams_total, 0, "no stream was accepted");

    let good = twilio_signature(token, &url);
    let (mut ws, response) = tokio_tungstenite::connect_async(signed(&url, Some(&good))).await.expect("upgrade");
    assert_eq!(response.status(), 101);
    let call: CallId = "CAcccccccccccccccccccccccccccccccc".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    stream_call(&mut ws, call.as_str(), &["inbound"]).await;
    wait_completed(&mut events, &call).await;

    // The public URL rule: Twilio signed the URL it was given, not the one we see.
    let config = StreamConfig {
        twilio_auth_token: Some(Secret::new(token)),
        public_url: Some("wss://pbx.example.com".into()),
        ..StreamConfig::default()
    };
    let server = StreamServer::spawn(config).await;
    let public = twilio_signature(token, "wss://pbx.example.com/v1/media/twilio");
    let (_, response) = tokio_tungstenite::connect_async(signed(&server.url("twilio"), Some(&public))).await.unwrap();
    assert_eq!(response.status(), 101);
}

#[tokio::test]
async fn telnyx_snake_case_out_of_order_both_tracks() {
    let server = StreamServer::spawn(StreamConfig::default()).await;
    let call_control_id = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg";
    let call: CallId = call_control_id.parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut ws = server.connect("telnyx").await;
    // From developers.telnyx.com, "Stream call media over WebSocket".
    send(&mut ws, json!({"event": "connected", "version": "1.0.0"})).await;
    send(
        &mut ws,
        json!({
            "event": "start", "sequence_number": "1", "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
            "start": {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237", "call_control_id": call_control_id,
                      "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f", "from": "+13122010094",
                      "to": "+13122123456", "tags": ["TAG1"], "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
                      "custom_parameters": {"customer_id": "customer_123"},
                      "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}
        }),
    )
    .await;
    let frames = frames();
    let n = frames.len() as u64;
    // Pairs swapped: 2, 1, 4, 3, ... ("media frame order is not guaranteed").
    let mut order: Vec<u64> = (1..=n).collect();
    for pair in order.chunks_mut(2) {
        pair.reverse();
    }
    let mut seq = 2;
    for chunk in order {
        for track in ["inbound", "outbound"] {
            send(
                &mut ws,
                json!({
                    "event": "media", "sequence_number": seq.to_string(), "stream_id": "32DE0DEA",
                    "media": {"track": track, "chunk": chunk.to_string(), "timestamp": ((chunk - 1) * 20).to_string(),
                              "payload": BASE64.encode(&frames[chunk as usize - 1])}
                }),
            )
            .await;
            seq += 1;
        }
    }
    send(
        &mut ws,
        json!({"event": "dtmf", "stream_id": "32DE0DEA", "occurred_at": "2024-01-01T00:00:00Z",
                          "sequence_number": seq.to_string(), "dtmf": {"digit": "1"}}),
    )
    .await;
    send(
        &mut ws,
        json!({"event": "stop", "sequence_number": (seq + 1).to_string(), "stream_id": "32DE0DEA",
                          "stop": {"user_id": "3E6F995F", "call_control_id": call_control_id}}),
    )
    .await;
    assert_eq!(close_frame(&mut ws).await.0, CloseCode::Normal);
    wait_completed(&mut events, &call).await;

    let snap = server.gateway.call(&call).await.unwrap();
    assert_eq!(snap.state, CallState::Completed);
    assert_eq!(snap.channel_ordering.len(), 2);
    for track in &snap.channel_ordering {
        assert_eq!((track.counters.received, track.counters.missing()), (n, 0));
        assert!(track.counters.out_of_order > 0, "the swaps are counted");
    }
    let (declared, read, channels) = recording_len(&server.gateway, &call).await;
    assert_eq!((channels, declared, read), (2, n * 640 + 44, n * 640 + 44));
}

#[tokio::test]
async fn garbage_closes_only_its_own_stream() {
    let server = StreamServer::spawn(StreamConfig::default()).await;
    let healthy: CallId = "CAdddddddddddddddddddddddddddddddd".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut good = server.connect("twilio").await;
    send(&mut good, connected()).await;
    send(&mut good, start(healthy.as_str(), &["inbound"])).await;
    send(&mut good, media(2, "inbound", 1, &[0xff; 160])).await;

    let ok_start = start("CAeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", &["inbound"]).to_string();
    let cases: Vec<(&str, Vec<Message>, CloseCode, &str)> = vec![
        ("not JSON", vec![Message::text("hello there")], CloseCode::Policy, "json"),
        (
            "wrong types",
            vec![Message::text(r#"{"event":"start","start":{"callSid":42}}"#)],
            CloseCode::Policy,
            "malformed",
        ),
        ("binary", vec![Message::binary(vec![1u8, 2, 3])], CloseCode::Unsupported, "binary"),
        (
            "media before start",
            vec![Message::text(media(1, "inbound", 1, &[0; 160]).to_string())],
            CloseCode::Policy,
            "before",
        ),
        ("second start", vec![Message::text(ok_start.clone()), Message::text(ok_start)], CloseCode::Policy, "already"),
        (
            "bad call id",
            vec![Message::text(start("CA 1; drop table", &["inbound"]).to_string())],
            CloseCode::Policy,
            "call id",
        ),
        ("unknown event", vec![Message::text(r#"{"event":"teleport"}"#)], CloseCode::Policy, "unknown event"),
        ("huge frame", vec![Message::text("x".repeat(200_000))], CloseCode::Size, "exceeds"),
    ];
    for (name, messages, code, reason) in &cases {
        let mut ws = server.connect("twilio").await;
        for m in messages {
            // The server may close before the last message is sent.
            let _ = ws.send(m.clone()).await;
        }
        let (got, text) = close_frame(&mut ws).await;
        assert_eq!(got, *code, "{name}: {text}");
        assert!(text.to_lowercase().contains(reason), "{name}: reason {text:?}");
    }

    // The healthy stream went on through all of it.
    send(&mut good, media(3, "inbound", 2, &[0xff; 160])).await;
    send(&mut good, stop(4, healthy.as_str())).await;
    assert_eq!(close_frame(&mut good).await.0, CloseCode::Normal);
    wait_completed(&mut events, &healthy).await;
    assert_eq!(server.gateway.call(&healthy).await.unwrap().ordering.counters.received, 2);
    let stats = server.streams.stats().snapshot();
    assert_eq!(stats.protocol_errors, cases.len() as u64);
    assert_eq!(stats.streams_total, cases.len() as u64 + 1);
}

#[tokio::test]
async fn a_dropped_stream_completes_after_the_idle_timeout() {
    let config = StreamConfig { stream_idle_timeout: Duration::from_millis(200), ..StreamConfig::default() };
    let server = StreamServer::spawn(config).await;
    let call: CallId = "CAffffffffffffffffffffffffffffffff".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut ws = server.connect("twilio").await;
    send(&mut ws, connected()).await;
    send(&mut ws, start(call.as_str(), &["inbound"])).await;
    for chunk in 1..=5 {
        send(&mut ws, media(chunk + 1, "inbound", chunk, &[0xff; 160])).await;
    }
    drop(ws); // no stop, no close frame
    wait_completed(&mut events, &call).await;
    assert_eq!(server.gateway.call(&call).await.unwrap().ordering.counters.received, 5);
}

/// A stream that drops and reconnects (the same `callSid`) before the idle timeout: the
/// dropped stream's timer passes without completing the call, which goes on streaming
/// on the new connection and completes at its `stop`.
#[tokio::test]
async fn a_reconnect_before_the_idle_timeout_keeps_the_call_going() {
    let config = StreamConfig { stream_idle_timeout: Duration::from_secs(2), ..StreamConfig::default() };
    let server = StreamServer::spawn(config).await;
    let call: CallId = "CAreconnect0123456789abcdef01234567".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut first = server.connect("twilio").await;
    send(&mut first, connected()).await;
    send(&mut first, start(call.as_str(), &["inbound"])).await;
    for chunk in 1..=5 {
        send(&mut first, media(chunk + 1, "inbound", chunk, &[0xff; 160])).await;
    }
    drop(first); // no stop, no close frame
    let mut second = server.connect("twilio").await;
    send(&mut second, connected()).await;
    send(&mut second, start(call.as_str(), &["inbound"])).await;
    for chunk in 6..=10 {
        send(&mut second, media(chunk - 4, "inbound", chunk, &[0xff; 160])).await;
    }
    // The first stream's idle timer has passed and found the newer stream.
    counters_until(&server.streams, |s| s.resumed == 1).await;
    let snap = server.gateway.call(&call).await.unwrap();
    assert_eq!(snap.state, CallState::InProgress, "a reconnected call is not completed by the old stream's timer");
    assert_eq!(snap.streams.len(), 2, "both streams noted");
    send(&mut second, stop(7, call.as_str())).await;
    assert_eq!(close_frame(&mut second).await.0, CloseCode::Normal);
    wait_completed(&mut events, &call).await;
    let counters = server.gateway.call(&call).await.unwrap().ordering.counters;
    assert_eq!((counters.received, counters.highest, counters.duplicates), (10, 10, 0));
}

/// Polls the streams' counters (every 5 ms, for at most 30 s) until `done` says yes.
async fn counters_until(streams: &Streams, done: impl Fn(&pbx_server::streams::StreamStatsSnapshot) -> bool) {
    let poll = async {
        while !done(&streams.stats().snapshot()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), poll).await.expect("the stream's counters");
}

/// Storage that falls behind: the stream's bounded queue fills, further frames are
/// dropped and counted, never buffered without bound; once storage catches up every
/// frame is either stored or counted as dropped, and the dropped ones are the call's
/// missing sequences.
#[tokio::test]
async fn a_stalled_store_drops_frames_counted_as_gaps_never_unbounded() {
    let store = Arc::new(crate::stalling::shut());
    let config = StreamConfig { buffer_frames: 4, ..StreamConfig::default() };
    let server = StreamServer::spawn_over(store.clone(), config).await;
    let call: CallId = "CAbackpressure0123456789abcdef0123".parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut ws = server.connect("twilio").await;
    send(&mut ws, connected()).await;
    send(&mut ws, start(call.as_str(), &["inbound"])).await;
    let frame = [0xffu8; 160];
    const SENT: u64 = 40;
    for chunk in 1..=SENT {
        send(&mut ws, media(chunk + 1, "inbound", chunk, &frame)).await;
    }
    // At most one batch (4) is held by the stalled append and 4 wait in the queue.
    counters_until(&server.streams, |s| s.frames_dropped >= SENT - 8).await;
    store.open_gate();
    counters_until(&server.streams, |s| s.frames_stored + s.frames_dropped == SENT).await;
    // One more frame once storage caught up, so every dropped one lies below the highest.
    send(&mut ws, media(SENT + 2, "inbound", SENT + 1, &frame)).await;
    send(&mut ws, stop(SENT + 3, call.as_str())).await;
    assert_eq!(close_frame(&mut ws).await.0, CloseCode::Normal);
    wait_completed(&mut events, &call).await;

    let stats = server.streams.stats().snapshot();
    assert_eq!(stats.frames_stored + stats.frames_dropped, SENT + 1, "every frame stored or counted");
    assert!(stats.frames_dropped >= SENT - 8, "{stats:?}");
    let counters = server.gateway.call(&call).await.unwrap().ordering.counters;
    assert_eq!((counters.received, counters.highest), (stats.frames_stored, SENT + 1));
    assert_eq!(counters.missing(), stats.frames_dropped, "each dropped frame is a gap on the call");
}
