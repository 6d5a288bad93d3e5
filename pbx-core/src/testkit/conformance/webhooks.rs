//! The webhook outbox ([`crate::webhooks`]): the cursor's compare-and-set, claims with
//! leases and fencing, re-drives, concurrent claimers, and the log kept for the cursor.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::webhooks::{DeliveryOutcome, DeliveryStatus, MAX_DELIVERY_PAGE, NewDelivery, Redelivery};

fn delivery(n: u64) -> NewDelivery {
    NewDelivery {
        message_id: format!("msg_test_{n}"),
        event_id: n,
        call_id: id("wh-call"),
        endpoint: "http://127.0.0.1:9/hook".into(),
        kind: "call.archived".into(),
        body: format!("{{\"n\":{n}}}"),
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Opening keeps the first start; an enqueue moves the cursor from where it is only,
/// storing its deliveries with it, or stores nothing.
pub async fn outbox_enqueue_moves_the_cursor_once(store: Arc<dyn CallStore>) {
    let s = &*store;
    assert!(matches!(s.outbox_enqueue(0, 1, &[], at(0)).await, Err(StoreError::InvalidArgument(_))), "not open");
    assert_eq!(s.outbox_open(5, at(0)).await.expect("open"), 5);
    assert_eq!(s.outbox_open(9, at(0)).await.expect("open again"), 5, "the first start stays");
    assert!(s.outbox_enqueue(5, 7, &[delivery(6), delivery(7)], at(10)).await.expect("enqueue"));
    assert!(!s.outbox_enqueue(5, 8, &[delivery(8)], at(20)).await.expect("stale"), "the cursor moved");
    assert!(matches!(s.outbox_enqueue(7, 6, &[], at(20)).await, Err(StoreError::InvalidArgument(_))), "backwards");
    assert!(s.outbox_enqueue(7, 7, &[], at(30)).await.expect("alive"), "marking alive keeps the cursor");
    assert_eq!(s.outbox_open(0, at(40)).await.expect("reopen"), 7);

    let listed = s.deliveries(10, None).await.expect("list");
    assert_eq!(listed.iter().map(|d| d.event_id).collect::<Vec<_>>(), vec![7, 6], "newest first, nothing of event 8");
    let d = &listed[1];
    assert_eq!((d.message_id.as_str(), d.kind.as_str(), d.body.as_str()), ("msg_test_6", "call.archived", "{\"n\":6}"));
    assert_eq!(
        (d.status, d.attempts, d.created_at, d.next_attempt_at),
        (DeliveryStatus::Pending, 0, at(10), Some(at(10)))
    );
    assert_eq!(s.deliveries(10, Some(listed[0].id)).await.expect("before").len(), 1);
    assert_eq!(s.outbox_depth().await.expect("depth"), 2);
    for bad in [0, MAX_DELIVERY_PAGE + 1] {
        assert!(matches!(s.deliveries(bad, None).await, Err(StoreError::InvalidArgument(_))), "limit {bad}");
        assert!(matches!(s.claim_deliveries(at(0), LEASE, bad).await, Err(StoreError::InvalidArgument(_))));
    }
}

/// A claim leases; a finish is fenced by the attempt; retries come due; a dead
/// delivery can be re-driven; an expired lease makes it due again.
pub async fn deliveries_are_claimed_fenced_retried_and_redriven(store: Arc<dyn CallStore>) {
    let s = &*store;
    s.outbox_open(0, at(0)).await.expect("open");
    assert!(s.outbox_enqueue(0, 2, &[delivery(1), delivery(2)], at(0)).await.expect("enqueue"));
    let claimed = s.claim_deliveries(at(100), LEASE, 10).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|d| d.attempts == 1 && d.next_attempt_at == Some(at(30_100))), "{claimed:?}");
    assert!(s.claim_deliveries(at(100), LEASE, 10).await.expect("again").is_empty(), "leased");
    let (first, second) = (&claimed[0], &claimed[1]);

    assert!(s.finish_delivery(first.id, 1, &DeliveryOutcome::Delivered, at(200)).await.expect("done"));
    assert!(!s.finish_delivery(first.id, 1, &DeliveryOutcome::Delivered, at(300)).await.expect("twice"));
    let retry = DeliveryOutcome::Retry { at: at(10_000), error: "503 Service Unavailable".into() };
    assert!(s.finish_delivery(second.id, 1, &retry, at(200)).await.expect("retry"));
    assert!(s.claim_deliveries(at(5_000), LEASE, 10).await.expect("early").is_empty());
    let again = s.claim_deliveries(at(10_000), LEASE, 10).await.expect("due");
    assert_eq!((again.len(), again[0].id, again[0].attempts), (1, second.id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("503 Service Unavailable"));
    let dead = DeliveryOutcome::Dead { error: "410 Gone".into() };
    assert!(!s.finish_delivery(second.id, 1, &dead, at(10_100)).await.expect("stale"), "attempt 1 is fenced");
    assert!(s.finish_delivery(second.id, 2, &dead, at(10_100)).await.expect("dead"));
    assert_eq!(s.outbox_depth().await.expect("depth"), 0);

    let listed = s.deliveries(10, None).await.expect("list");
    let by_id = |id| listed.iter().find(|d| d.id == id).expect("listed").clone();
    let delivered = by_id(first.id);
    assert_eq!(
        (delivered.status, delivered.finished_at, delivered.next_attempt_at),
        (DeliveryStatus::Delivered, Some(at(200)), None)
    );
    let gone = by_id(second.id);
    assert_eq!((gone.status, gone.last_error.as_deref(), gone.attempts), (DeliveryStatus::Dead, Some("410 Gone"), 2));

    assert!(
        matches!(s.retry_delivery(first.id, at(20_000)).await.expect("not dead"), Redelivery::NotDead(d) if d.status == DeliveryStatus::Delivered)
    );
    assert_eq!(s.retry_delivery(second.id + 1000, at(20_000)).await.expect("unknown"), Redelivery::Unknown);
    let Redelivery::Retried(retried) = s.retry_delivery(second.id, at(20_000)).await.expect("retry") else {
        panic!("a dead delivery is re-driven");
    };
    assert_eq!(
        (retried.status, retried.attempts, retried.next_attempt_at, retried.finished_at),
        (DeliveryStatus::Pending, 0, Some(at(20_000)), None)
    );
    let rescued = s.claim_deliveries(at(20_000), LEASE, 10).await.expect("claim");
    assert_eq!((rescued.len(), rescued[0].attempts), (1, 1));
    // Its sender dies: when the lease ends it is due again, and the late sender is fenced.
    let rescued_again = s.claim_deliveries(at(50_000), LEASE, 10).await.expect("after the lease");
    assert_eq!((rescued_again.len(), rescued_again[0].attempts), (1, 2));
    assert!(!s.finish_delivery(second.id, 1, &DeliveryOutcome::Delivered, at(50_001)).await.expect("late"));
    assert!(s.finish_delivery(second.id, 2, &DeliveryOutcome::Delivered, at(50_001)).await.expect("done"));
}

/// Concurrent claimers never get the same delivery.
pub async fn concurrent_delivery_claimers_take_each_once(store: Arc<dyn CallStore>) {
    store.outbox_open(0, at(0)).await.expect("open");
    let all: Vec<_> = (1..=60).map(delivery).collect();
    assert!(store.outbox_enqueue(0, 60, &all, at(0)).await.expect("enqueue"));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_deliveries(at(1), LEASE, 7).await.expect("claim");
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.expect("claimer") {
            assert!(seen.insert(id), "delivery {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 60);
}

/// The event pruner keeps every event after a cursor that is alive, and stops
/// holding back for one that nobody moved within the retention window.
pub async fn pruning_keeps_what_the_outbox_has_not_enqueued(store: Arc<dyn CallStore>) {
    let s = &*store;
    for n in 0..4 {
        append_seqs(s, &id(&format!("wh-prune-{n}")), &[1], at(n)).await;
    }
    s.outbox_open(0, at(1_000)).await.expect("open");
    assert_eq!(s.prune_events(at(900), 10).await.expect("prune"), 0, "the cursor has enqueued nothing");
    assert!(s.outbox_enqueue(0, 2, &[], at(1_000)).await.expect("move"));
    assert_eq!(s.prune_events(at(900), 10).await.expect("prune"), 2, "up to the cursor");
    assert_eq!(s.events(0, 10).await.expect("page").first, 3);
    // Nobody moved the cursor since 1 000 ms; a retention cut-off after that ignores it.
    assert_eq!(s.prune_events(at(1_001), 10).await.expect("prune"), 2);
}
