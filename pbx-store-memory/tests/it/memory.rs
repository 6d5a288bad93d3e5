//! Memory-store specifics beyond the shared suite.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::id::{CallId, WorkerId};
use pbx_core::packet::{NewPacket, Packet};
use pbx_core::state::CallState;
use pbx_core::store::CallStore;
use pbx_core::testkit::conformance::at;
use pbx_store_memory::MemoryCallStore;

fn id(i: usize) -> CallId {
    CallId::new(format!("call-{i:05}")).expect("valid id")
}

async fn completed_calls(store: &MemoryCallStore, n: usize, now: impl Fn(usize) -> DateTime<Utc>) {
    let batch: Vec<NewPacket> =
        (0..n).map(|i| NewPacket::new(id(i), Packet::new(1, "x", 0.0).expect("packet"))).collect();
    let out = store.append(&batch, at(0)).await.expect("append");
    assert!(out.iter().all(|o| o.as_ref().is_ok_and(|a| a.created_call)));
    for i in 0..n {
        store.complete(&id(i), now(i)).await.expect("complete");
    }
}

/// 10,000 completed calls, due in reverse id order: claims in pages of 100 drain them
/// oldest due first, each exactly once, and `next_due_at` follows. (Printed timings
/// are for reading with `--nocapture`, never asserted.)
#[tokio::test]
async fn claims_drain_ten_thousand_calls_oldest_first() {
    const N: usize = 10_000;
    let store = MemoryCallStore::new();
    completed_calls(&store, N, |i| at((N - i) as i64)).await;
    assert_eq!(store.len(), N);
    assert_eq!(store.next_due_at().await.expect("next_due_at"), Some(at(1)));
    let started = std::time::Instant::now();
    let mut expected = (0..N).rev();
    let mut rounds = 0;
    loop {
        let claims = store.claim(&WorkerId::new("w"), Duration::from_secs(60), 100, at(N as i64)).await.expect("claim");
        if claims.is_empty() {
            break;
        }
        rounds += 1;
        for c in claims {
            assert_eq!(Some(c.call_id), expected.next().map(id));
        }
    }
    println!("claimed {N} calls in {rounds} claims of 100 in {:?}", started.elapsed());
    assert_eq!(expected.next(), None);
    assert_eq!(store.next_due_at().await.expect("next_due_at"), Some(at(N as i64 + 60_000)));
    let snap = store.get(&id(0), 0).await.expect("get");
    assert_eq!((snap.state, snap.attempts), (CallState::ProcessingAi, 1));
}
