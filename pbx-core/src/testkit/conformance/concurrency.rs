//! Races: many appenders on one call, hang-up racing appends, claimers racing.
//!
//! These cases synchronise with barriers only, never sleeps, and assert outcomes, never
//! timings. They are meaningful on a multi-threaded runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Barrier;

use super::*;
use crate::ordering::PacketOrder;
use crate::store::PacketRejection;

const TASKS: u64 = 50;
const PER_TASK: u64 = 20;

/// 1,000 packets appended to one call by 50 concurrent tasks (single packets and small
/// batches, each task also repeating one of its packets): every packet is accepted
/// exactly once, the counters are exact (no lost update) and exactly one packet created
/// the call.
pub async fn concurrent_appends_to_one_call_lose_nothing(store: Arc<dyn CallStore>) {
    let call = id("hot-call");
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, call, barrier) = (store.clone(), call.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            // Task t sends t+1, t+1+50, ...: interleaved, so order anomalies happen.
            let seqs: Vec<u64> = (0..PER_TASK).map(|i| t + 1 + i * TASKS).collect();
            barrier.wait().await;
            let mut outcomes = Vec::new();
            for chunk in seqs.chunks(if t % 2 == 0 { 1 } else { 4 }) {
                let batch: Vec<_> = chunk.iter().map(|&s| new_packet(&call, s, &data(s))).collect();
                let out = store.append(&batch, at(t as i64)).await.expect("append");
                outcomes.extend(chunk.iter().copied().zip(out));
            }
            let again = store.append(&[new_packet(&call, seqs[0], &data(seqs[0]))], at(99)).await.expect("append");
            outcomes.push((seqs[0], again[0].clone()));
            outcomes
        }));
    }
    let mut created = 0;
    let mut stored = BTreeSet::new();
    let mut duplicates = 0;
    let mut out_of_order = 0;
    for task in tasks {
        for (seq, outcome) in task.await.expect("task") {
            let appended = outcome.unwrap_or_else(|e| panic!("packet {seq} refused: {e}"));
            created += usize::from(appended.created_call);
            match appended.order {
                PacketOrder::Duplicate => duplicates += 1,
                PacketOrder::OutOfOrder => {
                    out_of_order += 1;
                    assert!(stored.insert(seq), "{seq} stored twice");
                }
                _ => assert!(stored.insert(seq), "{seq} stored twice"),
            }
        }
    }
    let total = TASKS * PER_TASK;
    assert_eq!(created, 1, "exactly one packet created the call");
    assert_eq!(stored, (1..=total).collect::<BTreeSet<_>>());
    assert_eq!(duplicates, TASKS);
    let snap = store.get(&call, 10).await.expect("get");
    let c = snap.ordering.counters;
    assert_eq!((c.received, c.highest, c.duplicates, c.out_of_order), (total, total, TASKS, out_of_order));
    assert_eq!(c.missing(), 0);
    assert!(snap.ordering.missing_ranges.is_empty());
    let packets = store.packets(&call).await.expect("packets");
    assert_eq!(packets.len() as u64, total);
    assert!(packets.iter().zip(1..).all(|(p, seq)| p.sequence == seq && p.data == data(seq)));
}

/// Hang-up racing appends: every packet answered as stored is in `packets()`, every
/// packet refused as `CallClosed` is absent, and nothing else is stored; the counters
/// agree with the stored packets.
pub async fn completion_racing_appends_stores_exactly_the_accepted_packets(store: Arc<dyn CallStore>) {
    const APPENDERS: u64 = 8;
    const EACH: u64 = 60;
    for round in 0..5 {
        let call = id(&format!("race-{round}"));
        append_seqs(&*store, &call, &[1], at(0)).await;
        let barrier = Arc::new(Barrier::new(APPENDERS as usize + 1));
        let mut tasks = Vec::new();
        for t in 0..APPENDERS {
            let (store, call, barrier) = (store.clone(), call.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut outcomes = Vec::new();
                for i in 0..EACH {
                    let seq = 2 + t + i * APPENDERS;
                    let out = store.append(&[new_packet(&call, seq, &data(seq))], at(1)).await.expect("append");
                    outcomes.push((seq, out[0].clone()));
                }
                outcomes
            }));
        }
        let closer = {
            let (store, call, barrier) = (store.clone(), call.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // Let the appenders get going: hang up after a few of our own yields.
                for _ in 0..(round * 3) {
                    tokio::task::yield_now().await;
                }
                store.complete(&call, at(2)).await.expect("complete")
            })
        };
        let mut answers = BTreeMap::new();
        for task in tasks {
            answers.extend(task.await.expect("task"));
        }
        assert!(closer.await.expect("closer").applied);
        let stored: BTreeSet<u64> = store.packets(&call).await.expect("packets").iter().map(|p| p.sequence).collect();
        let mut accepted = BTreeSet::from([1]);
        for (seq, outcome) in &answers {
            match outcome {
                Ok(a) => {
                    assert!(!a.is_duplicate());
                    assert!(stored.contains(seq), "{seq} answered stored but missing");
                    accepted.insert(*seq);
                }
                Err(PacketRejection::CallClosed { state, .. }) => {
                    assert_eq!(*state, CallState::Completed);
                    assert!(!stored.contains(seq), "{seq} refused but stored");
                }
                Err(other) => panic!("{seq}: {other}"),
            }
        }
        assert_eq!(stored, accepted, "round {round}");
        let snap = store.get(&call, 0).await.expect("get");
        assert_eq!(snap.state, CallState::Completed);
        assert_eq!(snap.ordering.counters.received, stored.len() as u64);
        assert_eq!(snap.ordering.counters.highest, stored.last().copied().unwrap_or(0));
    }
}

/// Two workers claiming the one due call at the same moment: exactly one gets it
/// (repeated over many calls to give the race a chance).
pub async fn two_workers_claiming_at_once_one_wins(store: Arc<dyn CallStore>) {
    for round in 0..20 {
        let call = id(&format!("call-{round:02}"));
        append_seqs(&*store, &call, &[1], at(0)).await;
        store.complete(&call, at(round)).await.expect("complete");
        let barrier = Arc::new(Barrier::new(2));
        let claimers: Vec<_> = ["w1", "w2"]
            .into_iter()
            .map(|w| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim(&worker(w), LEASE, 5, at(round)).await.expect("claim")
                })
            })
            .collect();
        let mut won = Vec::new();
        for c in claimers {
            won.extend(c.await.expect("claimer"));
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        assert_eq!((won[0].call_id.clone(), won[0].attempt), (call.clone(), 1));
        assert_eq!(store.get(&call, 0).await.expect("get").attempts, 1);
    }
}

/// Eight workers claiming in a loop over 200 due calls: each call goes to exactly one
/// worker, once, and all are claimed.
pub async fn many_claimers_take_each_call_once(store: Arc<dyn CallStore>) {
    const CALLS: usize = 200;
    const WORKERS: usize = 8;
    let batch: Vec<_> = (0..CALLS).map(|i| new_packet(&id(&format!("c{i:03}")), 1, "x")).collect();
    store.append(&batch, at(0)).await.expect("append");
    for i in 0..CALLS {
        store.complete(&id(&format!("c{i:03}")), at(i as i64 % 7)).await.expect("complete");
    }
    let barrier = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(&worker(&format!("w{w}")), LEASE, 7, at(10)).await.expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                }
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for w in workers {
        for claim in w.await.expect("worker") {
            assert_eq!(claim.attempt, 1);
            assert!(seen.insert(claim.call_id.clone()), "{} claimed twice", claim.call_id);
        }
    }
    assert_eq!(seen.len(), CALLS);
}

/// A hang-up racing a call's first packet: the packet is stored either way (the call
/// is created with it, atomically), and the hang-up either finds no call yet
/// (`NotFound`) or completes a call that holds the packet. No empty call is ever seen.
pub async fn hang_up_racing_the_first_packet_never_sees_an_empty_call(store: Arc<dyn CallStore>) {
    for round in 0..50 {
        let call = id(&format!("new-{round:02}"));
        let barrier = Arc::new(Barrier::new(2));
        let appender = {
            let (store, call, barrier) = (store.clone(), call.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.append(&[new_packet(&call, 1, &data(1))], at(0)).await.expect("append")
            })
        };
        let closer = {
            let (store, call, barrier) = (store.clone(), call.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.complete(&call, at(1)).await
            })
        };
        let appended = appender.await.expect("appender");
        let appended = appended[0].as_ref().unwrap_or_else(|e| panic!("round {round}: first packet refused: {e}"));
        assert!(appended.created_call);
        let closed = closer.await.expect("closer");
        let snap = store.get(&call, 0).await.expect("get");
        assert_eq!(snap.ordering.counters.received, 1);
        match closed {
            Ok(t) => {
                assert!(t.applied);
                assert_eq!(snap.state, CallState::Completed);
            }
            Err(crate::store::StoreError::NotFound { .. }) => assert_eq!(snap.state, CallState::InProgress),
            Err(other) => panic!("round {round}: {other}"),
        }
    }
}
