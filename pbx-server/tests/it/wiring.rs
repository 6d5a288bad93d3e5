//! The server binary's wiring of the media streams: the settings reach the endpoints
//! (`/v1/media/twilio`, `/v1/media/telnyx`, `/v1/media/audiohook` on the API port,
//! AudioSocket on `--audiosocket-bind`), the API keys do not guard them (each protocol
//! has its own authentication), and the calls they create are the API's calls.

use std::sync::Arc;

use pbx_core::CallState;
use pbx_core::ai::SimulatedAi;
use pbx_server::{Server, Settings};
use pbx_store_memory::MemoryCallStore;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_every_stream_protocol() {
    let settings = Settings::parse_from_args([
        "pbx-server",
        "--bind",
        "127.0.0.1:0",
        "--audiosocket-bind",
        "127.0.0.1:0",
        "--api-key",
        "admin:adm1n",
        "--twilio-auth-token",
        "tok",
        "--audiohook-api-key",
        "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
        "--no-processor",
    ])
    .expect("settings");
    let server = Server::build_with(settings, Arc::new(MemoryCallStore::new()), Arc::new(SimulatedAi::reliable()))
        .await
        .expect("server");
    let api = server.local_addr();
    let audiosocket = server.audiosocket_addr().expect("AudioSocket listener");
    let gateway = server.gateway().clone();
    let mut events = gateway.feed(None).await.expect("feed");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));

    // Twilio: the auth token is in force, so an unsigned upgrade is refused (403).
    match tokio_tungstenite::connect_async(format!("ws://{api}/v1/media/twilio")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
        other => panic!("an unsigned Twilio upgrade must be refused: {:?}", other.map(|_| ())),
    }
    // Telnyx has no signature: the upgrade succeeds without an API key.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{api}/v1/media/telnyx")).await.expect("telnyx upgrade");
    drop(ws);
    // AudioHook: the key is in force, so a request without X-API-KEY is refused (401).
    match tokio_tungstenite::connect_async(format!("ws://{api}/v1/media/audiohook")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("an AudioHook upgrade without a key must be refused: {:?}", other.map(|_| ())),
    }

    // AudioSocket: a call of three 20 ms frames, ended by closing the socket.
    use pbx_core::media::audiosocket::encode_frame;
    let uuid = [0x3au8, 0x1f, 0x2c, 0x4d, 0x5e, 0x6f, 0x40, 0x81, 0x92, 0xa3, 0xb4, 0xc5, 0xd6, 0xe7, 0xf8, 0x09];
    let mut socket = tokio::net::TcpStream::connect(audiosocket).await.expect("connect");
    socket.write_all(&encode_frame(0x01, &uuid)).await.unwrap();
    for _ in 0..3 {
        socket.write_all(&encode_frame(0x10, &[0u8; 320])).await.unwrap();
    }
    socket.shutdown().await.unwrap();
    drop(socket);
    let call = pbx_core::CallId::new("3a1f2c4d-5e6f-4081-92a3-b4c5d6e7f809").unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let pbx_core::gateway::FeedItem::Event(e) = events.next().await.expect("feed")
                && e.call_id == call
                && e.body.new_state() == Some(CallState::Completed)
            {
                break;
            }
        }
    })
    .await
    .expect("the AudioSocket call completes");
    let snap = gateway.call(&call).await.expect("the call exists");
    assert_eq!(snap.ordering.counters.received, 3);
    assert_eq!(snap.media_format.map(|f| f.to_string()).as_deref(), Some("l16/8000/1"));
}
