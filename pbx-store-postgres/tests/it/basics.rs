//! The store's semantics, case by case (the shared conformance suite checks them all
//! again, against the memory store's behaviour).

use std::time::Duration;

use pbx_core::ai::{AiResult, Sentiment, SentimentLabel};
use pbx_core::ordering::{OrderingCounters, PacketOrder, SeqRange};
use pbx_core::prelude::*;
use pbx_core::store::{AttemptFailure, AttemptRef, ListQuery, PacketRejection, StoreError};
use pbx_store_postgres::PgCallStore;
use sqlx::PgPool;

use crate::common::*;

const LEASE: Duration = Duration::from_secs(30);

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn append_classifies_in_input_order_within_and_across_batches(pool: PgPool) {
    let store = PgCallStore::new(pool);
    let first = append_ok(&store, &[packet("a", 1), packet("a", 2), packet("b", 1)], at(0)).await;
    assert_eq!(first.iter().map(|a| a.created_call).collect::<Vec<_>>(), [true, false, true]);
    assert!(first.iter().all(|a| a.order == PacketOrder::InOrder));

    let out = store
        .append(
            &[
                packet("a", 5),                   // gap 3..=4
                packet("a", 3),                   // fills part of it
                packet("a", 3),                   // duplicate of the packet just before
                data_packet("a", 3, "different"), // conflict with it
                packet("a", 2),                   // duplicate of a stored packet
                data_packet("a", 1, "changed"),   // conflict with a stored packet
                packet("c", 7),                   // a new call starting with a gap
            ],
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            Ok(Appended { order: PacketOrder::Gap { missing: SeqRange { first: 3, last: 4 } }, created_call: false }),
            Ok(Appended { order: PacketOrder::OutOfOrder, created_call: false }),
            Ok(Appended { order: PacketOrder::Duplicate, created_call: false }),
            Err(PacketRejection::Conflict { call_id: id("a"), sequence: 3 }),
            Ok(Appended { order: PacketOrder::Duplicate, created_call: false }),
            Err(PacketRejection::Conflict { call_id: id("a"), sequence: 1 }),
            Ok(Appended { order: PacketOrder::Gap { missing: SeqRange { first: 1, last: 6 } }, created_call: true }),
        ]
    );
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!(a.ordering.counters, OrderingCounters { received: 4, highest: 5, duplicates: 2, out_of_order: 1 });
    assert_eq!(a.ordering.missing_ranges, vec![SeqRange { first: 4, last: 4 }]);
    assert_eq!((a.created_at, a.last_packet_at, a.updated_at), (at(0), at(10), at(10)));
    let packets = store.packets(&id("a")).await.unwrap();
    assert_eq!(packets.iter().map(|p| p.sequence).collect::<Vec<_>>(), [1, 2, 3, 5]);
    assert_eq!(packets[0].data, "audio_1", "the first data is kept");
    assert_eq!(packets[2].received_at, at(10));
    assert_eq!(store.append(&[], at(20)).await.unwrap(), vec![]);
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn a_duplicate_only_batch_does_not_move_last_packet_at(pool: PgPool) {
    let store = PgCallStore::new(pool);
    append_ok(&store, &[packet("a", 1)], at(0)).await;
    let dup = append_ok(&store, &[packet("a", 1)], at(50)).await;
    assert_eq!(dup[0].order, PacketOrder::Duplicate);
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!(a.last_packet_at, at(0));
    assert_eq!(a.ordering.counters.duplicates, 1);
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn missing_ranges_are_lowest_first_and_capped(pool: PgPool) {
    let store = PgCallStore::new(pool);
    append_ok(&store, &[packet("a", 2), packet("a", 4), packet("a", 6), packet("a", 1 << 40)], at(0)).await;
    let a = store.get(&id("a"), 2).await.unwrap();
    assert_eq!(a.ordering.missing_ranges, vec![SeqRange { first: 1, last: 1 }, SeqRange { first: 3, last: 3 }]);
    assert!(a.ordering.missing_ranges_truncated);
    let all = store.get(&id("a"), 100).await.unwrap();
    assert_eq!(all.ordering.missing_ranges.len(), 4);
    assert_eq!(all.ordering.missing_ranges[3], SeqRange { first: 7, last: (1 << 40) - 1 });
    assert!(!all.ordering.missing_ranges_truncated);
    let none = store.get(&id("a"), 0).await.unwrap();
    assert!(none.ordering.missing_ranges.is_empty() && none.ordering.missing_ranges_truncated);
    assert!(matches!(store.get(&id("zz"), 1).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.packets(&id("zz")).await, Err(StoreError::NotFound { .. })));
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn hang_up_closes_the_call_to_packets(pool: PgPool) {
    let store = PgCallStore::new(pool);
    append_ok(&store, &[packet("a", 1)], at(0)).await;
    let t = store.complete(&id("a"), at(5)).await.unwrap();
    assert_eq!((t.from, t.to, t.applied), (CallState::InProgress, CallState::Completed, true));
    let again = store.complete(&id("a"), at(6)).await.unwrap();
    assert_eq!((again.from, again.to, again.applied), (CallState::Completed, CallState::Completed, false));
    let out = store.append(&[packet("a", 2), packet("b", 1)], at(7)).await.unwrap();
    assert_eq!(out[0], Err(PacketRejection::CallClosed { call_id: id("a"), state: CallState::Completed }));
    assert!(out[1].as_ref().unwrap().created_call);
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!((a.completed_at, a.next_attempt_at, a.ordering.counters.received), (Some(at(5)), Some(at(5)), 1));
    assert!(matches!(store.complete(&id("zz"), at(0)).await, Err(StoreError::NotFound { .. })));
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn list_pages_in_byte_order(pool: PgPool) {
    let store = PgCallStore::new(pool);
    let ids = ["b", "B", "a", "A", "_", "-", "0", "a.b", "a-b", "Z:1"];
    let batch: Vec<_> = ids.iter().map(|i| packet(i, 1)).collect();
    append_ok(&store, &batch, at(0)).await;
    store.complete(&id("a"), at(1)).await.unwrap();
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&ListQuery { state: None, limit: 3, after: after.clone() }).await.unwrap();
        seen.extend(page.calls.iter().map(|c| c.call_id.as_str().to_owned()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let completed = store.list(&ListQuery { state: Some(CallState::Completed), limit: 5, after: None }).await.unwrap();
    assert_eq!(completed.calls.len(), 1);
    assert_eq!(completed.calls[0].call_id, id("a"));
    assert_eq!(completed.next, None);
    for limit in [0, 1001] {
        let err = store.list(&ListQuery { state: None, limit, after: None }).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    }
}

fn result() -> AiResult {
    AiResult::new("hello", Sentiment { label: SentimentLabel::Positive, score: 0.5 })
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn claim_fence_retry_rescue_and_archive(pool: PgPool) {
    let store = PgCallStore::new(pool);
    let w1 = WorkerId::new("w1");
    let w2 = WorkerId::new("w2");
    append_ok(&store, &[packet("a", 1), packet("b", 1)], at(0)).await;
    store.complete(&id("b"), at(10)).await.unwrap();
    store.complete(&id("a"), at(20)).await.unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(at(10)));
    assert!(store.claim(&w1, LEASE, 0, at(30)).await.unwrap().is_empty());
    assert!(store.claim(&w1, LEASE, 5, at(5)).await.unwrap().is_empty(), "nothing due yet");

    let claims = store.claim(&w1, LEASE, 5, at(30)).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["b", "a"], "oldest due first");
    assert!(claims.iter().all(|c| c.attempt == 1 && c.failures == 0 && !c.rescued));
    assert_eq!(claims[0].lease_expires_at, at(30_030));
    assert!(store.claim(&w2, LEASE, 5, at(31)).await.unwrap().is_empty(), "leased calls are not due");
    assert_eq!(store.next_due_at().await.unwrap(), Some(at(30_030)));

    // b: heartbeat, then a failure with a retry, then success on attempt 2.
    let b1 = claims[0].attempt_ref();
    assert_eq!(store.heartbeat(&b1, LEASE, at(1_000)).await.unwrap(), at(31_000));
    let state = store
        .record_failure(&b1, &AttemptFailure { error: "boom".into(), retry_at: Some(at(5_000)) }, at(1_000))
        .await
        .unwrap();
    assert_eq!(state, CallState::ProcessingAi);
    assert!(matches!(store.heartbeat(&b1, LEASE, at(1_001)).await, Err(StoreError::Fenced { attempt: 1, .. })));
    assert!(store.claim(&w2, LEASE, 1, at(4_999)).await.unwrap().iter().all(|c| c.call_id != id("b")));
    let b2 = store.claim(&w2, LEASE, 1, at(5_000)).await.unwrap().remove(0);
    assert_eq!((b2.call_id.as_str(), b2.attempt, b2.failures, b2.rescued), ("b", 2, 1, false));
    assert!(matches!(store.record_success(&b1, &result(), at(5_001)).await, Err(StoreError::Fenced { .. })));
    store.record_success(&b2.attempt_ref(), &result(), at(5_002)).await.unwrap();
    let b = store.get(&id("b"), 10).await.unwrap();
    assert_eq!((b.state, b.attempts, b.failures), (CallState::Archived, 2, 1));
    assert_eq!((b.result, b.lease, b.next_attempt_at, b.finished_at), (Some(result()), None, None, Some(at(5_002))));
    assert_eq!(b.last_error.as_deref(), Some("boom"));

    // a: the lease expires (still held until reclaimed), then another worker rescues it.
    let a1 = claims[1].attempt_ref();
    assert_eq!(store.heartbeat(&a1, LEASE, at(40_000)).await.unwrap(), at(70_000), "expired but still held");
    let rescue = store.claim(&w2, LEASE, 5, at(70_000)).await.unwrap();
    assert_eq!(rescue.len(), 1);
    assert_eq!((rescue[0].attempt, rescue[0].failures, rescue[0].rescued), (2, 0, true));
    assert!(matches!(store.release(&a1, at(70_001)).await, Err(StoreError::Fenced { .. })));
    let a2 = rescue[0].attempt_ref();
    store.release(&a2, at(70_002)).await.unwrap();
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!((a.state, a.failures, a.lease, a.next_attempt_at), (CallState::ProcessingAi, 0, None, Some(at(70_002))));
    let a3 = store.claim(&w1, LEASE, 5, at(70_003)).await.unwrap().remove(0);
    assert_eq!((a3.attempt, a3.rescued), (3, false));
    let state = store
        .record_failure(&a3.attempt_ref(), &AttemptFailure { error: "fatal".into(), retry_at: None }, at(70_004))
        .await
        .unwrap();
    assert_eq!(state, CallState::Failed);
    assert_eq!(store.next_due_at().await.unwrap(), None);

    // Re-drive: failures reset, attempts kept.
    let t = store.redrive(&id("a"), at(80_000)).await.unwrap();
    assert_eq!((t.from, t.to), (CallState::Failed, CallState::Completed));
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!((a.failures, a.attempts, a.next_attempt_at, a.finished_at), (0, 3, Some(at(80_000)), None));
    assert_eq!(a.last_error.as_deref(), Some("fatal"));
    let a4 = store.claim(&w1, LEASE, 5, at(80_000)).await.unwrap().remove(0);
    assert_eq!(a4.attempt, 4);
    let err = store.redrive(&id("a"), at(80_001)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition { .. }), "{err}");
    assert!(matches!(store.redrive(&id("zz"), at(0)).await, Err(StoreError::NotFound { .. })));
    let unknown = AttemptRef { call_id: id("zz"), attempt: 1 };
    assert!(matches!(store.heartbeat(&unknown, LEASE, at(0)).await, Err(StoreError::NotFound { .. })));
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn idle_calls_are_hung_up_stalest_first(pool: PgPool) {
    let store = PgCallStore::new(pool);
    append_ok(&store, &[packet("old", 1)], at(0)).await;
    append_ok(&store, &[packet("older", 1)], at(-10)).await;
    append_ok(&store, &[packet("fresh", 1)], at(100)).await;
    assert!(store.complete_idle(at(50), 0, at(200)).await.unwrap().is_empty());
    let done = store.complete_idle(at(50), 10, at(200)).await.unwrap();
    assert_eq!(done, vec![id("older"), id("old")]);
    let old = store.get(&id("old"), 1).await.unwrap();
    assert_eq!(
        (old.state, old.completed_at, old.next_attempt_at),
        (CallState::Completed, Some(at(200)), Some(at(200)))
    );
    assert_eq!(store.get(&id("fresh"), 1).await.unwrap().state, CallState::InProgress);
    assert!(store.complete_idle(at(50), 10, at(300)).await.unwrap().is_empty());
}

/// Batches that extend existing streams, create calls, reach late, resent and closed
/// calls, one after another: verdicts, counters, times and the whole-batch rule.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn batches_of_every_shape_are_classified_and_counted_alike(pool: PgPool) {
    let store = PgCallStore::new(pool);
    append_ok(&store, &[packet("a", 1), packet("a", 2), packet("b", 1)], at(0)).await;

    // Both calls exist and every sequence is above their highest.
    let out = append_ok(&store, &[packet("a", 3), packet("b", 4), packet("a", 6), packet("b", 5)], at(10)).await;
    assert_eq!(
        out.iter().map(|a| (a.order, a.created_call)).collect::<Vec<_>>(),
        [
            (PacketOrder::InOrder, false),
            (PacketOrder::Gap { missing: SeqRange { first: 2, last: 3 } }, false),
            (PacketOrder::Gap { missing: SeqRange { first: 4, last: 5 } }, false),
            (PacketOrder::InOrder, false),
        ]
    );
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!(a.ordering.counters, OrderingCounters { received: 4, highest: 6, duplicates: 0, out_of_order: 0 });
    assert_eq!((a.created_at, a.last_packet_at, a.updated_at), (at(0), at(10), at(10)));
    let b = store.get(&id("b"), 10).await.unwrap();
    assert_eq!(b.ordering.counters, OrderingCounters { received: 3, highest: 5, duplicates: 0, out_of_order: 0 });
    let stored = store.packets(&id("b")).await.unwrap();
    assert_eq!(
        stored.iter().map(|p| (p.sequence, p.data.to_base64_or_text())).collect::<Vec<_>>(),
        [(1, "audio_1".to_owned()), (4, "audio_4".to_owned()), (5, "audio_5".to_owned())]
    );
    assert_eq!(stored[1].received_at, at(10));

    // In order for `a`, and `c` is new: created in the same batch.
    let out = append_ok(&store, &[packet("a", 7), packet("c", 1)], at(20)).await;
    assert_eq!(out.iter().map(|a| a.created_call).collect::<Vec<_>>(), [false, true]);

    // A new call whose first packet is not sequence 1, beside an existing one.
    let out = append_ok(&store, &[packet("c", 2), packet("d", 3)], at(25)).await;
    assert_eq!(
        out.iter().map(|a| (a.order, a.created_call)).collect::<Vec<_>>(),
        [(PacketOrder::InOrder, false), (PacketOrder::Gap { missing: SeqRange { first: 1, last: 2 } }, true)]
    );
    let c = store.get(&id("c"), 10).await.unwrap();
    assert_eq!(c.ordering.counters, OrderingCounters { received: 2, highest: 2, duplicates: 0, out_of_order: 0 });
    assert_eq!(store.packets(&id("d")).await.unwrap().len(), 1);

    // In order for `a`, a late packet for `b`.
    let out = append_ok(&store, &[packet("a", 8), packet("b", 2)], at(30)).await;
    assert_eq!(out.iter().map(|a| a.order).collect::<Vec<_>>(), [PacketOrder::InOrder, PacketOrder::OutOfOrder]);

    // A repeated sequence within one call's share of the batch.
    let out = append_ok(&store, &[packet("a", 9), packet("a", 9)], at(40)).await;
    assert_eq!(out.iter().map(|a| a.order).collect::<Vec<_>>(), [PacketOrder::InOrder, PacketOrder::Duplicate]);

    // In order for both, but `b` was hung up: `a` is stored, `b` refused, nothing of `b` kept.
    store.complete(&id("b"), at(50)).await.unwrap();
    let out = store.append(&[packet("a", 10), packet("b", 6)], at(60)).await.unwrap();
    assert_eq!(out[0], Ok(Appended { order: PacketOrder::InOrder, created_call: false }));
    assert!(matches!(out[1], Err(PacketRejection::CallClosed { .. })), "{:?}", out[1]);
    let a = store.get(&id("a"), 10).await.unwrap();
    assert_eq!(a.ordering.counters, OrderingCounters { received: 8, highest: 10, duplicates: 1, out_of_order: 0 });
    let b = store.get(&id("b"), 10).await.unwrap();
    assert_eq!(b.ordering.counters, OrderingCounters { received: 4, highest: 5, duplicates: 0, out_of_order: 1 });
    assert_eq!(store.packets(&id("b")).await.unwrap().len(), 4);
}

/// JSON has no NaN: a result whose segment times are not finite is refused, not stored
/// as something that would read back differently.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn a_result_with_non_finite_segment_times_is_refused(pool: PgPool) {
    let store = PgCallStore::new(pool);
    append_ok(&store, &[packet("a", 1)], at(0)).await;
    store.complete(&id("a"), at(1)).await.unwrap();
    let claim = store.claim(&WorkerId::new("w"), LEASE, 1, at(2)).await.unwrap().remove(0);
    let mut bad = result();
    bad.segments = vec![pbx_core::ai::Segment { start: f64::NAN, end: 1.0, text: "x".into(), channel: None }];
    let err = store.record_success(&claim.attempt_ref(), &bad, at(3)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert_eq!(store.get(&id("a"), 1).await.unwrap().state, CallState::ProcessingAi);
    store.record_success(&claim.attempt_ref(), &result(), at(4)).await.unwrap();
    assert_eq!(store.get(&id("a"), 1).await.unwrap().result, Some(result()));
}
