//! The event log: every change writes its events, in one order, with ids that only grow.

use std::sync::Arc;

use super::*;
use crate::events::{EventBody, EventId, EventType, MAX_EVENT_PAGE, StoredEvent};
use crate::media::MediaFormat;
use crate::ordering::OrderingCounters;

/// Every event after `after`, paging as a reader would.
async fn events_after(store: &dyn CallStore, after: EventId) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let page = store.events(cursor, 3).await.expect("events");
        assert!(page.continues(cursor), "nothing was pruned: {page:?} at {cursor}");
        let Some(last) = page.events.last() else { return out };
        cursor = last.id;
        out.extend(page.events);
    }
}

fn types_of(events: &[StoredEvent], call: &CallId) -> Vec<EventType> {
    events.iter().filter(|e| e.call_id == *call).map(|e| e.body.event_type()).collect()
}

fn assert_contiguous(events: &[StoredEvent], after: EventId) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.id, after + 1 + i as u64, "ids grow one by one: {events:?}");
    }
}

/// A call's whole life writes its events in order: created, hung up, attempt started
/// (COMPLETED -> PROCESSING_AI), failed with its retry time, started again, succeeded
/// with the transcript, ARCHIVED. Another call gives up (FAILED) and is re-driven.
pub async fn every_change_writes_its_events_in_order(store: Arc<dyn CallStore>) {
    let s = &*store;
    let empty = s.events(0, 10).await.expect("events");
    assert!(empty.events.is_empty() && empty.latest == 0 && empty.continues(0), "{empty:?}");

    let call = id("ev-life");
    append_seqs(s, &call, &[1, 2], at(0)).await;
    s.complete(&call, at(5)).await.expect("complete");
    let first = claim_one(s, "w1", at(10)).await;
    s.record_failure(&first.attempt_ref(), &retry_at(at(1_000)), at(20)).await.expect("failure");
    let second = claim_one(s, "w1", at(1_000)).await;
    let result = result_for(&call);
    s.record_success(&second.attempt_ref(), &result, at(1_100)).await.expect("success");

    let events = events_after(s, 0).await;
    assert_contiguous(&events, 0);
    use CallState::*;
    let bodies: Vec<&EventBody> = events.iter().map(|e| &e.body).collect();
    assert_eq!(
        bodies,
        vec![
            &EventBody::CallCreated {},
            &EventBody::StateChanged { from: InProgress, to: Completed },
            &EventBody::AttemptStarted { attempt: 1, rescued: false },
            &EventBody::StateChanged { from: Completed, to: ProcessingAi },
            &EventBody::AttemptFailed { attempt: 1, error: "ai unavailable".into(), retry_at: Some(at(1_000)) },
            &EventBody::AttemptStarted { attempt: 2, rescued: false },
            &EventBody::AttemptSucceeded { attempt: 2 },
            &EventBody::transcript(&result),
            &EventBody::StateChanged { from: ProcessingAi, to: Archived },
        ]
    );
    let times: Vec<_> = events.iter().map(|e| e.at).collect();
    assert_eq!(times, vec![at(0), at(5), at(10), at(10), at(20), at(1_000), at(1_100), at(1_100), at(1_100)]);
    assert!(events.iter().all(|e| e.call_id == call));

    let failing = call_in_state(s, "ev-fail", CallState::Failed).await;
    s.redrive(&failing, at(2_000)).await.expect("redrive");
    let later = events_after(s, events.last().map_or(0, |e| e.id)).await;
    assert_contiguous(&later, events.len() as u64);
    use EventType as T;
    assert_eq!(
        types_of(&later, &failing),
        vec![
            T::CallCreated,
            T::StateChanged,
            T::AttemptStarted,
            T::StateChanged,
            T::AttemptFailed,
            T::StateChanged,
            T::Redriven,
            T::StateChanged
        ]
    );
    let last = &later.last().expect("events").body;
    assert_eq!(*last, EventBody::StateChanged { from: Failed, to: Completed });
}

/// A declaration creates the call with `call_created`, once; idle hang-ups and lease
/// rescues write their events; no-op operations write none.
pub async fn declarations_idle_hang_ups_and_rescues_write_events(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("ev-open");
    s.open(&call, MediaFormat::TELEPHONY, at(0)).await.expect("open");
    s.open(&call, MediaFormat::TELEPHONY, at(1)).await.expect("open again");
    append_seqs(s, &call, &[1], at(2)).await;
    assert_eq!(s.complete_idle(at(100), 10, at(200)).await.expect("idle"), vec![call.clone()]);
    assert!(!s.complete(&call, at(201)).await.expect("complete again").applied);
    let claim = claim_one(s, "w1", at(300)).await;
    let rescue = claim_one(s, "w2", at(300 + LEASE_MS)).await;
    assert!(rescue.rescued);
    assert_eq!(rescue.attempt, claim.attempt + 1);

    let events = events_after(s, 0).await;
    let bodies: Vec<&EventBody> = events.iter().map(|e| &e.body).collect();
    use CallState::*;
    assert_eq!(
        bodies,
        vec![
            &EventBody::CallCreated {},
            &EventBody::StateChanged { from: InProgress, to: Completed },
            &EventBody::AttemptStarted { attempt: 1, rescued: false },
            &EventBody::StateChanged { from: Completed, to: ProcessingAi },
            &EventBody::AttemptStarted { attempt: 2, rescued: true },
        ],
        "a second declaration, a repeated hang-up and the rescue's unchanged state write nothing"
    );
    assert_eq!(events[1].at, at(200));
}

/// Ordering anomalies are aggregated per channel: one event for a channel's first
/// anomaly carrying its counters, then at most one per interval, however many late
/// or resent packets arrive; in-order packets write none.
pub async fn ordering_anomalies_are_aggregated_per_channel(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("ev-order");
    append_seqs(s, &call, &[1, 2, 3], at(0)).await;
    append_seqs(s, &call, &[6], at(10)).await; // a gap: 4, 5 missing
    append_seqs(s, &call, &[4], at(20)).await; // late: inside the interval, no event
    append_seqs(s, &call, &[4, 4, 4], at(30)).await; // resent
    let two = [new_packet_on(&call, 1, 2, Payload::from_base64_or_text("x"))];
    s.append(&two, at(40)).await.expect("append channel 1"); // channel 1's own first anomaly
    append_seqs(s, &call, &[5], at(10 + 1_000)).await; // an interval later: an event
    append_seqs(s, &call, &[7, 8], at(3_000)).await; // in order: none

    let events = events_after(s, 0).await;
    let anomalies: Vec<(u8, OrderingCounters, u64, DateTime<Utc>)> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::OrderingAnomaly { channel, counters, missing } => Some((channel, counters, missing, e.at)),
            _ => None,
        })
        .collect();
    let c =
        |received, highest, duplicates, out_of_order| OrderingCounters { received, highest, duplicates, out_of_order };
    assert_eq!(
        anomalies,
        vec![(0, c(4, 6, 0, 0), 2, at(10)), (1, c(1, 2, 0, 0), 1, at(40)), (0, c(6, 6, 3, 2), 0, at(1_010)),]
    );
    assert_eq!(types_of(&events, &call)[0], EventType::CallCreated);
    assert_eq!(events.len(), 4, "created + three anomalies: {events:?}");
}

/// Pages respect `after` and `limit`; a bad limit is refused; recorded events of an
/// existing call are kept, of an unknown call refused; pruning drops the oldest and
/// moves `first`, so a cursor before it no longer continues.
pub async fn event_pages_records_and_pruning(store: Arc<dyn CallStore>) {
    let s = &*store;
    for bad in [0, MAX_EVENT_PAGE + 1] {
        assert!(matches!(s.events(0, bad).await, Err(StoreError::InvalidArgument(_))), "limit {bad}");
    }
    let call = id("ev-page");
    append_seqs(s, &call, &[1], at(0)).await;
    let started = EventBody::StreamStarted { protocol: "twilio".into(), stream_id: "MZ1".into() };
    s.record_event(&call, &started, at(1_000)).await.expect("record");
    let ended = EventBody::StreamEnded { protocol: "twilio".into(), stream_id: "MZ1".into(), reason: "stop".into() };
    s.record_event(&call, &ended, at(2_000)).await.expect("record");
    let unknown = s.record_event(&id("ev-nobody"), &started, at(2_000)).await;
    assert!(matches!(unknown, Err(StoreError::NotFound { .. })), "{unknown:?}");

    let page = s.events(1, 1).await.expect("page");
    assert_eq!(page.events.len(), 1);
    assert_eq!((page.events[0].id, &page.events[0].body, page.events[0].at), (2, &started, at(1_000)));
    assert_eq!((page.first, page.latest), (1, 3));
    assert!(s.events(3, 10).await.expect("end").events.is_empty());

    assert_eq!(s.prune_events(at(1_500), 10).await.expect("prune"), 2);
    let page = s.events(0, 10).await.expect("after prune");
    assert_eq!((page.first, page.latest), (3, 3));
    assert!(!page.continues(0) && !page.continues(1) && page.continues(2));
    assert_eq!(page.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3], "what is kept is still readable");
    assert_eq!(s.prune_events(at(10_000), 10).await.expect("prune all"), 1);
    let page = s.events(3, 10).await.expect("empty log");
    assert_eq!((page.first, page.latest), (4, 3), "an empty log keeps its latest id");
    assert!(page.continues(3));
    append_seqs(s, &id("ev-page-2"), &[1], at(20_000)).await;
    assert_eq!(s.events(3, 10).await.expect("new").events[0].id, 4, "ids never restart");
}

/// The store's signal changes when events are written, from another task too.
pub async fn event_signal_changes_on_writes(store: Arc<dyn CallStore>) {
    let Some(mut signal) = store.event_signal() else {
        panic!("this conformance suite is for stores with an event log");
    };
    signal.borrow_and_update();
    let writer = store.clone();
    let task = tokio::spawn(async move {
        let call = id("ev-signal");
        append_seqs(&*writer, &call, &[1], at(0)).await;
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), signal.changed())
        .await
        .expect("the signal changed within a minute")
        .expect("the store keeps its signal");
    task.await.expect("writer");
    let latest = store.events(0, 1).await.expect("events").latest;
    assert!(latest >= 1);
}
