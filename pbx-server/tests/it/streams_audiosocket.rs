//! Asterisk AudioSocket over real TCP: a client written from Asterisk's module source
//! (`res/res_audiosocket.c`: `ast_audiosocket_init` sends kind 0x01, length 16, the
//! UUID's bytes; `ast_audiosocket_send_frame` sends the voice kind, a big-endian length
//! and the slin samples, or kind 0x03 with one DTMF byte; the app ends by closing).

use std::net::SocketAddr;
use std::time::Duration;

use pbx_core::{CallId, CallState};
use pbx_server::streams::{StreamConfig, Streams, audiosocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::streams_twilio::{StreamServer, recording_len, test_audio, wait_completed};

struct Server {
    addr: SocketAddr,
    gateway: pbx_core::gateway::Gateway,
    streams: Streams,
    _stop: oneshot::Sender<()>,
}

async fn spawn(config: StreamConfig) -> Server {
    let (gateway, streams) = StreamServer::gateway_and_streams(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(audiosocket::serve(listener, streams.clone(), async move {
        let _ = stopped.await;
    }));
    Server { addr, gateway, streams, _stop: stop }
}

/// One frame as `ast_audiosocket_send_frame` writes it.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The UUID as `uuid_parse` lays it out: the 16 bytes of its hex digits, in order.
fn uuid_bytes(uuid: &str) -> Vec<u8> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()
}

/// The speech as 20 ms slin frames (320 bytes at 8 kHz), the WAV's data chunk.
fn slin_frames() -> Vec<Vec<u8>> {
    let wav = test_audio("allison-busy.wav");
    let at = wav.windows(4).position(|w| w == b"data").expect("data chunk") + 8;
    wav[at..].chunks(320).filter(|c| c.len() == 320).map(<[u8]>::to_vec).collect()
}

/// Waits until the server closes the connection (EOF or reset).
async fn closed(socket: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let wait = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the server kept the connection open");
}

#[tokio::test]
async fn asterisk_streams_real_speech_and_hangs_up_by_closing() {
    let server = spawn(StreamConfig::default()).await;
    let uuid = "0e160e42-853e-487c-977d-96989bf5c99d";
    let call: CallId = uuid.parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(&frame(0x01, &uuid_bytes(uuid))).await.unwrap();
    let frames = slin_frames();
    let mut wire = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        wire.extend(frame(0x10, f));
        if i == 20 {
            wire.extend(frame(0x03, b"#"));
        }
    }
    // Written in odd-sized pieces so frames straddle reads.
    for piece in wire.chunks(1000) {
        socket.write_all(piece).await.unwrap();
    }
    drop(socket); // Asterisk hangs up by closing the socket.
    wait_completed(&mut events, &call).await;

    let n = frames.len() as u64;
    let snap = server.gateway.call(&call).await.unwrap();
    assert_eq!(snap.state, CallState::Completed);
    assert_eq!(snap.media_format.map(|f| f.to_string()).as_deref(), Some("l16/8000/1"));
    assert_eq!((snap.ordering.counters.received, snap.ordering.counters.missing()), (n, 0));
    let (declared, read, channels) = recording_len(&server.gateway, &call).await;
    assert_eq!((channels, declared, read), (1, n * 320 + 44, n * 320 + 44));
    let protocols: Vec<&str> = snap.streams.iter().map(|s| s.protocol.as_str()).collect();
    assert_eq!(protocols, vec!["audiosocket"]);
    // The digit came after 21 frames of 20 ms.
    let signals: Vec<(&str, &str, u64)> =
        snap.signals.iter().map(|s| (s.kind.as_str(), s.value.as_str(), s.offset_ms)).collect();
    assert_eq!(signals, vec![("dtmf", "#", 420)]);
}

#[tokio::test]
async fn a_hang_up_frame_and_other_rates() {
    let server = spawn(StreamConfig::default()).await;
    let uuid = "11111111-2222-4333-8444-555555555555";
    let call: CallId = uuid.parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut wire = frame(0x01, &uuid_bytes(uuid));
    for _ in 0..10 {
        wire.extend(frame(0x12, &[0u8; 640])); // slin16, 20 ms
    }
    wire.extend(frame(0x00, &[]));
    socket.write_all(&wire).await.unwrap();
    closed(&mut socket).await;
    wait_completed(&mut events, &call).await;
    let snap = server.gateway.call(&call).await.unwrap();
    assert_eq!(snap.media_format.map(|f| f.to_string()).as_deref(), Some("l16/16000/1"));
    assert_eq!(snap.ordering.counters.received, 10);
}

#[tokio::test]
async fn refused_frames_close_only_their_connection() {
    let server = spawn(StreamConfig::default()).await;
    let uuid = |i: u8| format!("{i:02x}000000-0000-4000-8000-000000000000");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("96 kHz", [frame(0x01, &uuid_bytes(&uuid(1))), frame(0x17, &[0; 3840])].concat()),
        ("192 kHz", [frame(0x01, &uuid_bytes(&uuid(2))), frame(0x18, &[0; 7680])].concat()),
        ("audio before the UUID", frame(0x10, &[0; 320])),
        ("a short UUID", frame(0x01, &[1; 15])),
        ("a second UUID", [frame(0x01, &uuid_bytes(&uuid(3))), frame(0x01, &uuid_bytes(&uuid(4)))].concat()),
        (
            "a rate change",
            [frame(0x01, &uuid_bytes(&uuid(5))), frame(0x10, &[0; 320]), frame(0x16, &[0; 1920])].concat(),
        ),
        ("an odd audio frame", [frame(0x01, &uuid_bytes(&uuid(6))), frame(0x10, &[0; 321])].concat()),
        ("an unknown kind", [frame(0x01, &uuid_bytes(&uuid(7))), frame(0x42, &[1, 2])].concat()),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    // A healthy call stays connected through all of them.
    let healthy: CallId = uuid(9).parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut good = TcpStream::connect(server.addr).await.unwrap();
    good.write_all(&[frame(0x01, &uuid_bytes(healthy.as_str())), frame(0x10, &[1; 320])].concat()).await.unwrap();

    for (name, bytes) in &cases {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        let _ = socket.write_all(bytes).await;
        closed(&mut socket).await;
        eprintln!("refused: {name}");
    }
    good.write_all(&frame(0x10, &[2; 320])).await.unwrap();
    drop(good);
    wait_completed(&mut events, &healthy).await;
    assert_eq!(server.gateway.call(&healthy).await.unwrap().ordering.counters.received, 2);
    let stats = server.streams.stats().snapshot();
    assert_eq!(stats.protocol_errors, cases.len() as u64);
    // The refused 96 kHz call never became a call.
    assert!(server.gateway.call(&uuid(1).parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn a_broken_connection_completes_after_the_idle_timeout() {
    let config = StreamConfig { stream_idle_timeout: Duration::from_millis(200), ..StreamConfig::default() };
    let server = spawn(config).await;
    let uuid = "22222222-2222-4333-8444-555555555555";
    let call: CallId = uuid.parse().unwrap();
    let mut events = server.gateway.feed(None).await.expect("feed");
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    // Two whole frames, then half of one: the connection broke mid-frame.
    let mut wire = [frame(0x01, &uuid_bytes(uuid)), frame(0x10, &[0; 320]), frame(0x10, &[0; 320])].concat();
    wire.extend(&frame(0x10, &[0; 320])[..100]);
    socket.write_all(&wire).await.unwrap();
    drop(socket);
    wait_completed(&mut events, &call).await;
    assert_eq!(server.gateway.call(&call).await.unwrap().ordering.counters.received, 2);
}
