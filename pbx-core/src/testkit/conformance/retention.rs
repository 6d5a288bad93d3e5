//! Retention ([`crate::retention`]): which calls lose their packets, which go, what a
//! swept call keeps, batch limits, and finished webhook deliveries pruned.

use std::sync::Arc;

use super::*;
use crate::packet::Payload;
use crate::retention::{KEPT_MISSING_RANGES, MAX_SWEEP_BATCH, PacketsSwept, Swept};
use crate::store::PacketRejection;
use crate::webhooks::{DeliveryOutcome, MAX_DELIVERY_PAGE, NewDelivery};

/// A call with packets `seqs` (at t=0), hung up, and ARCHIVED (or FAILED) at
/// `finished`. Builds one call at a time: it claims the only COMPLETED call.
async fn finished_call(store: &dyn CallStore, name: &str, seqs: &[u64], archive: bool, finished: i64) -> CallId {
    let call = id(name);
    append_seqs(store, &call, seqs, at(0)).await;
    store.complete(&call, at(finished - 2)).await.expect("complete");
    let claim = claim_one(store, "sweeper-test", at(finished - 1)).await;
    assert_eq!(claim.call_id, call, "claimed another call");
    if archive {
        store.record_success(&claim.attempt_ref(), &result_for(&call), at(finished)).await.expect("success");
    } else {
        store.record_failure(&claim.attempt_ref(), &give_up(), at(finished)).await.expect("failure");
    }
    call
}

fn swept(calls: u64, packets: u64) -> Swept {
    Swept { calls, packets }
}

/// The packets rule takes ARCHIVED calls only, oldest finished first, up to the
/// limit, once each; a swept call keeps its counters, missing ranges, result and a
/// record of its packets, and takes no packet.
pub async fn sweeping_packets_keeps_the_call_and_its_summary(store: Arc<dyn CallStore>) {
    let s = &*store;
    let b = finished_call(s, "ret-b", &[1, 2], true, 2_000).await;
    let a = id("ret-a");
    append_seqs(s, &a, &[1, 2, 4, 7], at(0)).await;
    let stereo = new_packet_on(&a, 1, 2, Payload::from_base64_or_text("AAAA"));
    s.append(&[stereo], at(0)).await.expect("append channel 1").remove(0).expect("stored");
    s.complete(&a, at(998)).await.expect("complete");
    let claim = claim_one(s, "sweeper-test", at(999)).await;
    s.record_success(&claim.attempt_ref(), &result_for(&a), at(1_000)).await.expect("success");
    let failed = finished_call(s, "ret-c", &[1, 2, 3], false, 1_500).await;
    let open = id("ret-d");
    append_seqs(s, &open, &[1], at(0)).await;

    let before = snapshot(s, &a).await;
    assert_eq!(before.packets_swept, None);
    assert_eq!(s.sweep_packets(at(3_000), 0, at(5_000)).await.expect("limit 0"), Swept::default());
    assert!(matches!(
        s.sweep_packets(at(3_000), MAX_SWEEP_BATCH + 1, at(5_000)).await,
        Err(StoreError::InvalidArgument(_))
    ));

    assert_eq!(s.sweep_packets(at(3_000), 1, at(5_000)).await.expect("sweep"), swept(1, 5), "oldest finished first");
    let after = snapshot(s, &a).await;
    let bytes: u64 = ["audio_chunk_1", "audio_chunk_2", "audio_chunk_4", "audio_chunk_7"]
        .iter()
        .map(|d| d.len() as u64)
        .sum::<u64>()
        + 3;
    assert_eq!(after.packets_swept, Some(PacketsSwept { swept_at: at(5_000), packets: 5, bytes }));
    assert_eq!(after.updated_at, at(5_000));
    assert_eq!(after.state, CallState::Archived);
    assert_eq!(after.ordering, before.ordering, "counters and missing ranges kept");
    assert_eq!(after.channel_ordering, before.channel_ordering);
    assert_eq!(after.ordering.missing_ranges.len(), 2, "{:?}", after.ordering);
    assert_eq!(after.result, before.result);
    assert_eq!((after.created_at, after.finished_at), (before.created_at, before.finished_at));
    assert!(s.packets(&a).await.expect("packets").is_empty());
    match append_one(s, &a, 8, "late", at(6_000)).await {
        Err(PacketRejection::CallClosed { .. }) => {}
        other => panic!("a swept call takes no packet: {other:?}"),
    }

    assert_eq!(s.sweep_packets(at(1_500), 10, at(6_000)).await.expect("sweep"), Swept::default(), "b is newer");
    assert_eq!(s.sweep_packets(at(3_000), 10, at(6_000)).await.expect("sweep"), swept(1, 2), "b, not the FAILED one");
    assert_eq!(s.sweep_packets(at(3_000), 10, at(7_000)).await.expect("again"), Swept::default(), "once each");
    assert_eq!(snapshot(s, &b).await.packets_swept.map(|p| p.swept_at), Some(at(6_000)));
    assert_eq!(s.packets(&failed).await.expect("packets").len(), 3, "FAILED calls keep packets for a re-drive");
    assert_eq!(snapshot(s, &failed).await.packets_swept, None);
    assert_eq!(s.packets(&open).await.expect("packets").len(), 1);
}

/// A swept call keeps the lowest `KEPT_MISSING_RANGES` of its missing ranges, and
/// says when there were more.
pub async fn sweeping_packets_keeps_the_lowest_missing_ranges(store: Arc<dyn CallStore>) {
    let s = &*store;
    let gaps = KEPT_MISSING_RANGES as u64 + 2;
    let seqs: Vec<u64> = (1..=gaps).map(|n| 2 * n).collect();
    let call = finished_call(s, "ret-gaps", &seqs, true, 1_000).await;
    let before = s.get(&call, 2 * KEPT_MISSING_RANGES).await.expect("get");
    assert_eq!(
        (before.ordering.missing_ranges.len(), before.ordering.missing_ranges_truncated),
        (gaps as usize, false)
    );
    assert_eq!(s.sweep_packets(at(2_000), 1, at(3_000)).await.expect("sweep"), swept(1, gaps));
    let wide = s.get(&call, 2 * KEPT_MISSING_RANGES).await.expect("get");
    assert_eq!(wide.ordering.missing_ranges.len(), KEPT_MISSING_RANGES);
    assert!(wide.ordering.missing_ranges_truncated);
    assert_eq!(wide.ordering.missing_ranges[..], before.ordering.missing_ranges[..KEPT_MISSING_RANGES]);
    let narrow = s.get(&call, 3).await.expect("get");
    assert_eq!(narrow.ordering.missing_ranges[..], before.ordering.missing_ranges[..3]);
    assert!(narrow.ordering.missing_ranges_truncated);
    assert_eq!(narrow.ordering.counters, before.ordering.counters);
}

/// The calls rule deletes ARCHIVED and FAILED calls finished before the cutoff,
/// oldest first, up to the limit, with their packets; never a call still working; and
/// a deleted call's id starts a new call.
pub async fn sweeping_calls_deletes_finished_calls_only(store: Arc<dyn CallStore>) {
    let s = &*store;
    let a = finished_call(s, "ret-a", &[1, 2, 3], true, 1_000).await;
    let b = finished_call(s, "ret-b", &[1, 2], false, 2_000).await;
    let c = finished_call(s, "ret-c", &[1], true, 3_000).await;
    let open = id("ret-d");
    append_seqs(s, &open, &[1], at(0)).await;
    let done = id("ret-e");
    append_seqs(s, &done, &[1], at(0)).await;
    s.complete(&done, at(10)).await.expect("complete");

    assert!(matches!(s.sweep_calls(at(9_000), MAX_SWEEP_BATCH + 1).await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(s.sweep_calls(at(9_000), 0).await.expect("limit 0"), Swept::default());
    assert_eq!(s.sweep_calls(at(2_500), 1).await.expect("sweep"), swept(1, 3), "oldest finished first");
    assert!(matches!(s.get(&a, 10).await, Err(StoreError::NotFound { .. })), "a is gone");
    assert!(matches!(s.complete(&a, at(4_000)).await, Err(StoreError::NotFound { .. })));
    assert_eq!(s.sweep_calls(at(2_500), 10).await.expect("sweep"), swept(1, 2), "the FAILED one too");
    assert!(matches!(s.get(&b, 10).await, Err(StoreError::NotFound { .. })));
    assert_eq!(s.sweep_calls(at(2_500), 10).await.expect("again"), Swept::default());

    let listed: Vec<CallId> = s
        .list(&crate::store::ListQuery { state: None, limit: 10, after: None })
        .await
        .expect("list")
        .calls
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    assert_eq!(listed, vec![c.clone(), open.clone(), done.clone()]);
    let mut counts = s.count_by_state().await.expect("count");
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, vec![(CallState::Archived, 1), (CallState::Completed, 1), (CallState::InProgress, 1)]);

    // A call whose packets went can go too; its packets are already counted.
    assert_eq!(s.sweep_packets(at(9_000), 10, at(9_000)).await.expect("packets"), swept(1, 1));
    assert_eq!(s.sweep_calls(at(9_000), 10).await.expect("calls"), swept(1, 0), "neither IN_PROGRESS nor COMPLETED");
    assert_eq!(snapshot(s, &open).await.state, CallState::InProgress);
    assert_eq!(snapshot(s, &done).await.state, CallState::Completed);

    let again = append_one(s, &a, 1, "audio_chunk_1", at(10_000)).await.expect("a new call");
    assert!(again.created_call, "a deleted call's id starts a new call");
    let fresh = snapshot(s, &a).await;
    assert_eq!((fresh.state, fresh.ordering.counters.received, fresh.attempts), (CallState::InProgress, 1, 0));
    assert_eq!((fresh.result, fresh.packets_swept), (None, None));
}

/// Pruning drops delivered and dead deliveries finished before the cutoff, oldest
/// finished first, never a pending one.
pub async fn finished_deliveries_are_pruned_pending_ones_kept(store: Arc<dyn CallStore>) {
    let s = &*store;
    let new = |n: u64| NewDelivery {
        message_id: format!("msg_prune_{n}"),
        event_id: n,
        call_id: id("wh-prune"),
        endpoint: "http://127.0.0.1:9/hook".into(),
        kind: "call.archived".into(),
        body: "{}".into(),
    };
    s.outbox_open(0, at(0)).await.expect("open");
    assert!(s.outbox_enqueue(0, 3, &[new(1), new(2), new(3)], at(0)).await.expect("enqueue"));
    let claimed = s.claim_deliveries(at(10), Duration::from_secs(30), 10).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let by_event = |n: u64| claimed.iter().find(|d| d.event_id == n).expect("claimed").clone();
    let (one, two, three) = (by_event(1), by_event(2), by_event(3));
    assert!(
        s.finish_delivery(two.id, 1, &DeliveryOutcome::Dead { error: "gone".into() }, at(200)).await.expect("dead")
    );
    assert!(s.finish_delivery(one.id, 1, &DeliveryOutcome::Delivered, at(100)).await.expect("delivered"));
    let retry = DeliveryOutcome::Retry { at: at(50), error: "503".into() };
    assert!(s.finish_delivery(three.id, 1, &retry, at(20)).await.expect("retry"));

    assert!(matches!(s.prune_deliveries(at(0), MAX_DELIVERY_PAGE + 1).await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(s.prune_deliveries(at(1_000), 0).await.expect("limit 0"), 0);
    assert_eq!(s.prune_deliveries(at(150), 10).await.expect("prune"), 1, "only the one finished before 150");
    assert_eq!(s.prune_deliveries(at(1_000), 1).await.expect("prune"), 1, "the dead one");
    assert_eq!(s.prune_deliveries(at(1_000), 10).await.expect("prune"), 0, "never the pending one");
    let left = s.deliveries(10, None).await.expect("list");
    assert_eq!(left.iter().map(|d| d.event_id).collect::<Vec<_>>(), vec![3]);
    assert_eq!(s.outbox_depth().await.expect("depth"), 1);
}
