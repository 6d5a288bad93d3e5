//! Graceful shutdown of a served [`Server`]: in-flight AI attempts that outlive the grace
//! period give their leases back, so another instance takes the call at once.

use std::sync::Arc;

use pbx_core::testkit::ai::{ScriptedAi, Step};
use pbx_server::{Server, Settings};
use pbx_store_memory::MemoryCallStore;
use serde_json::json;

use crate::helpers::id;

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_releases_the_leases_of_unfinished_attempts() {
    let settings = Settings::parse_from_args(["pbx-server", "--bind", "127.0.0.1:0", "--shutdown-grace", "50ms"])
        .expect("settings");
    let ai = Arc::new(ScriptedAi::new());
    ai.set_default(Step::Gate); // every attempt hangs until the gate opens (never)
    let store = Arc::new(MemoryCallStore::new());
    let server = Server::build_with(settings, store.clone(), ai.clone()).await.expect("server");
    let url = format!("http://{}", server.local_addr());
    let gateway = server.gateway().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let packet = json!({"sequence": 1, "data": "audio_chunk_1", "timestamp": 123.45});
    let ack = http.post(format!("{url}/ingest/held")).json(&packet).send().await.unwrap();
    assert_eq!(ack.status(), 200);
    let hung_up = http.post(format!("{url}/v1/calls/held/complete")).send().await.unwrap();
    assert_eq!(hung_up.status(), 200);
    ai.wait_in_flight(1).await;

    stop.send(()).expect("server running");
    running.await.unwrap().expect("clean stop");

    let call = gateway.call(&id("held")).await.unwrap();
    assert_eq!(call.attempts, 1);
    assert_eq!(call.failures, 0, "a released attempt is not a failure");
    assert!(call.lease.is_none(), "the lease was given back: {call:?}");
    assert!(call.next_attempt_at.is_some(), "the call is due again at once");
    // The listener is closed.
    assert!(http.get(format!("{url}/healthz")).send().await.is_err());
}
