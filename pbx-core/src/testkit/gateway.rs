//! The gateway and processor suite: the orchestration, run over a real backend.
//!
//! Each case is a plain async function taking a fresh store;
//! [`gateway_conformance!`](crate::gateway_conformance) turns them into one test per
//! case for a backend, exactly like the store conformance suite:
//!
//! ```ignore
//! pbx_core::gateway_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] setup() => MemoryCallStore::default());
//! ```
//!
//! Cases that need time to pass use a [`ManualClock`] and [`Processor::run_once`];
//! cases that run the processor in the background wait on events or on
//! [`ScriptedAi::wait_in_flight`], never on sleeps. [`within`] bounds each wait so a
//! broken wake-up fails the test instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::ai::{ScriptedAi, Step};
use super::clock::ManualClock;
use crate::ai::{AiClient, AiError, SimulatedAi};
use crate::events::{EventBody, EventFilter, EventId, EventType, StoredEvent};
use crate::gateway::{Feed, FeedItem, ResyncReason};
use crate::gateway::{Gateway, GatewayConfig, GatewayError, GroupCommit, Processor, ProcessorConfig, Writers};
use crate::id::{CallId, WorkerId};
use crate::ordering::{PacketOrder, SeqRange};
use crate::packet::{NewPacket, Packet, PacketError, PacketLimits};
use crate::retry::{Jitter, RetryPolicy};
use crate::state::CallState;
use crate::store::{CallSnapshot, CallStore, PacketRejection};

/// Generates one test per gateway/processor case for a backend. Same form as
/// [`call_store_conformance!`](crate::call_store_conformance).
#[macro_export]
macro_rules! gateway_conformance {
    (#[$meta:meta] setup($($arg:ident : $ty:ty),* $(,)?) => $make:expr $(,)?) => {
        $crate::gateway_conformance!(@cases #[$meta] ($($arg : $ty),*) ($make);
            group_commit_answers_every_caller,
            several_writers_keep_each_calls_order,
            batches_in_flight_never_share_a_call,
            stream_frames_share_group_commits_in_order,
            ingest_publishes_events,
            feed_replays_then_goes_live_without_gap_or_duplicate,
            feed_resumes_from_the_log_after_lagging,
            feed_resyncs_past_retention_and_on_unknown_cursors,
            batch_limits_refuse_everything,
            processor_archives_a_completed_call,
            processor_retries_with_backoff_then_succeeds,
            processor_honours_retry_after,
            processor_retry_after_sentiment_failure_reuses_the_transcript,
            processor_fails_at_once_on_permanent_error_and_redrive_recovers,
            processor_fails_a_call_without_audio_at_once,
            processor_fails_after_exhausting_attempts,
            processor_rescues_a_crashed_workers_call,
            processor_hangs_up_idle_calls,
            processor_wakes_on_hang_up,
            processor_never_exceeds_its_concurrency,
            shutdown_releases_leases_after_grace,
            shutdown_lets_running_attempts_finish,
        );
    };
    (@cases #[$meta:meta] $args:tt $make:tt; $($case:ident),* $(,)?) => {
        $(
            #[$meta]
            async fn $case $args {
                let store: ::std::sync::Arc<dyn $crate::store::CallStore> = ::std::sync::Arc::new($make);
                $crate::testkit::gateway::$case(store).await
            }
        )*
    };
}

/// Bounds a wait that should end promptly; panics with `what` if it does not.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn id(s: &str) -> CallId {
    CallId::new(s).expect("valid test call id")
}

fn packet(seq: i64) -> Packet {
    Packet::new(seq, format!("audio_chunk_{seq}"), seq as f64 * 0.02).expect("valid test packet")
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("valid time")
}

/// A retry policy without jitter: 1 s, 2 s, 4 s ... capped at 60 s, `attempts` attempts.
fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(1),
        backoff_coefficient: 2.0,
        maximum_interval: Duration::from_secs(60),
        maximum_attempts: attempts,
        jitter: Jitter::None,
    }
}

fn config(worker: &str) -> ProcessorConfig {
    ProcessorConfig {
        worker_id: WorkerId::new(worker),
        concurrency: 8,
        retry: policy(5),
        idle_timeout: None,
        seed: Some(7),
        ..ProcessorConfig::default()
    }
}

struct Manual {
    clock: Arc<ManualClock>,
    gateway: Gateway,
    ai: Arc<ScriptedAi>,
}

fn manual(store: Arc<dyn CallStore>) -> Manual {
    let clock = Arc::new(ManualClock::new(start()));
    let gateway = Gateway::with_clock(store, GatewayConfig::default(), clock.clone()).expect("valid config");
    Manual { clock, gateway, ai: Arc::new(ScriptedAi::new()) }
}

fn processor(gateway: &Gateway, ai: Arc<dyn AiClient>, config: ProcessorConfig) -> Processor {
    Processor::new(gateway, ai, config).expect("valid processor config")
}

async fn call_with_packets(gateway: &Gateway, call: &CallId, n: i64) {
    for seq in 1..=n {
        gateway.ingest(call.clone(), packet(seq)).await.expect("packet stored");
    }
}

async fn completed_call(gateway: &Gateway, call: &CallId, n: i64) {
    call_with_packets(gateway, call, n).await;
    assert!(gateway.complete(call).await.expect("hang-up").applied);
}

async fn snapshot(gateway: &Gateway, call: &CallId) -> CallSnapshot {
    gateway.call(call).await.expect("call exists")
}

fn expected_transcript(n: i64) -> String {
    let data: Vec<String> = (1..=n).map(|seq| format!("audio_chunk_{seq}")).collect();
    SimulatedAi::expected_transcript(data.iter().map(String::as_str))
}

/// The next event of a feed (lagging and resyncs are not expected here).
async fn next_event(feed: &mut Feed) -> Arc<StoredEvent> {
    match within("the next event", feed.next()).await.expect("feed") {
        FeedItem::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Waits until every call in `calls` has reached ARCHIVED or FAILED, by the feed.
async fn until_terminal(feed: &mut Feed, gateway: &Gateway, calls: &[CallId]) {
    let mut pending: std::collections::HashSet<CallId> = calls.iter().cloned().collect();
    // Calls that finished before we looked.
    for call in calls {
        if snapshot(gateway, call).await.state.is_terminal() {
            pending.remove(call);
        }
    }
    within("calls to finish", async {
        while !pending.is_empty() {
            if let FeedItem::Event(event) = feed.next().await.expect("feed")
                && event.body.new_state().is_some_and(|s| s.is_terminal())
            {
                pending.remove(&event.call_id);
            }
        }
    })
    .await;
}

/// 500 concurrent single-packet ingests to one call, with group commit and without:
/// every caller is answered with its own verdict, and the store holds exactly 500
/// packets (neither way loses one).
pub async fn group_commit_answers_every_caller(store: Arc<dyn CallStore>) {
    let auto = Gateway::new(store.clone(), GatewayConfig::default()).expect("valid config");
    assert_eq!(auto.group_commits(), store.prefers_group_commit(), "Auto follows the store");
    for (mode, call) in [(GroupCommit::On, "gc-on"), (GroupCommit::Off, "gc-off")] {
        let gateway = Gateway::new(store.clone(), GatewayConfig { group_commit: mode, ..GatewayConfig::default() })
            .expect("valid config");
        assert_eq!(gateway.group_commits(), mode == GroupCommit::On);
        every_caller_answered(&gateway, &id(call)).await;
    }
}

async fn every_caller_answered(gateway: &Gateway, call: &CallId) {
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 1..=500 {
        let (gateway, call) = (gateway.clone(), call.clone());
        tasks.spawn(async move { gateway.ingest(call, packet(seq)).await });
    }
    let mut created = 0;
    while let Some(answer) = tasks.join_next().await {
        let appended = answer.expect("task ran").expect("packet stored");
        assert!(!appended.is_duplicate());
        created += usize::from(appended.created_call);
    }
    assert_eq!(created, 1, "exactly one packet created the call");
    let snap = snapshot(gateway, call).await;
    assert_eq!(snap.ordering.counters.received, 500);
    assert_eq!(snap.ordering.counters.highest, 500);
    assert_eq!(snap.ordering.counters.duplicates, 0);
    assert_eq!(snap.ordering.counters.missing(), 0);
    assert_eq!(gateway.packets(call).await.expect("packets").len(), 500);
}

/// Three batches in flight at most (fixed) and the adaptive default, twelve calls
/// streaming at once, each call's 40 packets queued in order without waiting for
/// answers: batches in flight never share a call, so every packet is answered in order
/// and nothing is reordered or lost.
pub async fn several_writers_keep_each_calls_order(store: Arc<dyn CallStore>) {
    for (writers, prefix) in [(Writers::Fixed(3), "writers"), (Writers::default(), "adaptive")] {
        let watched = Arc::new(super::overlap::watch(store.clone(), false));
        let config = GatewayConfig { group_commit: GroupCommit::On, writers, ..GatewayConfig::default() };
        let gateway = Gateway::new(watched.clone(), config).expect("valid config");
        let calls: Vec<CallId> = (0..12).map(|i| id(&format!("{prefix}-{i:02}"))).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for call in calls.clone() {
            let gateway = gateway.clone();
            tasks.spawn(async move {
                let answers =
                    join_in_order((1..=40).map(|seq| gateway.ingest(call.clone(), packet(seq))).collect()).await;
                (call, answers)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (call, answers) = done.expect("task ran");
            for (seq, answer) in (1..).zip(answers) {
                let appended = answer.unwrap_or_else(|e| panic!("{call} #{seq}: {e}"));
                assert_eq!(appended.order, PacketOrder::InOrder, "{call} #{seq}");
            }
            let counters = snapshot(&gateway, &call).await.ordering.counters;
            assert_eq!((counters.received, counters.highest, counters.out_of_order), (40, 40, 0), "{call}");
            assert_eq!(watched.appended(&call), (1..=40).collect::<Vec<u64>>(), "{call}");
        }
        assert_eq!(watched.shared_calls(), Vec::<CallId>::new(), "{prefix}: calls in two batches at once");
    }
}

/// With batches in flight, a packet whose call is already being appended waits for
/// that append to finish while other calls' packets go ahead in a batch of their own.
/// The first append is held until a second one starts, so the overlap is forced: the
/// test hangs (and `within` fails it) if the dispatcher cannot run two batches at once,
/// and fails if the held-back packet joins a batch that overlaps its call's.
pub async fn batches_in_flight_never_share_a_call(store: Arc<dyn CallStore>) {
    let watched = Arc::new(super::overlap::watch(store, true));
    let config =
        GatewayConfig { group_commit: GroupCommit::On, writers: Writers::Fixed(3), ..GatewayConfig::default() };
    let gateway = Gateway::new(watched.clone(), config).expect("valid config");
    let (a, b) = (id("overlap-a"), id("overlap-b"));
    let first = tokio::spawn({
        let (gateway, a) = (gateway.clone(), a.clone());
        async move { gateway.ingest(a, packet(1)).await }
    });
    within("the first append to start", watched.started(1)).await;
    // Queued while A's first batch is in flight: A #2 must wait, B #1 goes ahead.
    let second = tokio::spawn({
        let (gateway, a) = (gateway.clone(), a.clone());
        async move { gateway.ingest(a, packet(2)).await }
    });
    let other = tokio::spawn({
        let (gateway, b) = (gateway.clone(), b.clone());
        async move { gateway.ingest(b, packet(1)).await }
    });
    for (what, task) in [("A #1", first), ("A #2", second), ("B #1", other)] {
        let appended = within(what, task).await.expect("task ran").unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(appended.order, PacketOrder::InOrder, "{what}");
    }
    assert!(watched.most_at_once() >= 2, "two batches were in flight at once");
    assert_eq!(watched.shared_calls(), Vec::<CallId>::new(), "calls in two batches at once");
    assert_eq!(watched.appended(&a), vec![1, 2]);
    let counters = snapshot(&gateway, &a).await.ordering.counters;
    assert_eq!((counters.received, counters.highest, counters.duplicates), (2, 2, 0));
}

/// Stream frames (`ingest_frames`), group commit on and off: many streams' frames at
/// once, each stream's in order, every outcome answered in order, a resent frame a
/// duplicate, limits enforced before anything is stored.
pub async fn stream_frames_share_group_commits_in_order(store: Arc<dyn CallStore>) {
    for (mode, prefix) in [(GroupCommit::On, "frames-on"), (GroupCommit::Off, "frames-off")] {
        let config = GatewayConfig { group_commit: mode, writers: Writers::Fixed(2), ..GatewayConfig::default() };
        let gateway = Gateway::new(store.clone(), config).expect("valid config");
        let calls: Vec<CallId> = (0..8).map(|i| id(&format!("{prefix}-{i}"))).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for call in calls.clone() {
            let gateway = gateway.clone();
            tasks.spawn(async move {
                for first in (1..=30).step_by(3) {
                    let frames: Vec<NewPacket> =
                        (first..first + 3).map(|seq| NewPacket::new(call.clone(), packet(seq))).collect();
                    let outcomes = gateway.ingest_frames(frames).await.expect("frames stored");
                    for (seq, outcome) in (first..).zip(outcomes) {
                        assert_eq!(outcome.expect("accepted").order, PacketOrder::InOrder, "{call} #{seq}");
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("stream task");
        }
        for call in &calls {
            let counters = snapshot(&gateway, call).await.ordering.counters;
            assert_eq!((counters.received, counters.highest, counters.out_of_order), (30, 30, 0), "{call}");
        }
        let again = gateway.ingest_frames(vec![NewPacket::new(calls[0].clone(), packet(30))]).await.expect("resent");
        assert_eq!(again[0].as_ref().expect("accepted").order, PacketOrder::Duplicate);
        let too_many =
            (1..=gateway.config().max_request_batch as i64 + 1).map(|s| NewPacket::new(calls[1].clone(), packet(s)));
        let refused = gateway.ingest_frames(too_many.collect()).await;
        assert!(matches!(refused, Err(GatewayError::BatchTooLarge { .. })), "{refused:?}");
        assert!(gateway.ingest_frames(Vec::new()).await.expect("nothing").is_empty());
    }
}

/// Polls `futures` in order, each until it waits, then all of them until done: the
/// first poll of each runs before the next one's (so their queueing order is theirs).
async fn join_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// Ingest writes the call's creation and its ordering anomalies to the log a feed
/// follows, and refuses what the store refuses with the store's reason.
pub async fn ingest_publishes_events(store: Arc<dyn CallStore>) {
    let gateway = Gateway::new(store, GatewayConfig::default()).expect("valid config");
    let mut feed = gateway.feed(Some(0)).await.expect("feed");
    let call = id("events-1");
    gateway.ingest(call.clone(), packet(1)).await.expect("stored");
    let gap = gateway.ingest(call.clone(), packet(4)).await.expect("stored");
    assert_eq!(gap.order, PacketOrder::Gap { missing: SeqRange { first: 2, last: 3 } });
    let dup = gateway.ingest(call.clone(), packet(4)).await.expect("duplicate accepted");
    assert!(dup.is_duplicate());
    let conflict = Packet::new(4, "other data", 0.08).expect("valid");
    match gateway.ingest(call.clone(), conflict).await {
        Err(GatewayError::Rejected(PacketRejection::Conflict { sequence: 4, .. })) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    gateway.complete(&call).await.expect("hang-up");
    match gateway.ingest(call.clone(), packet(5)).await {
        Err(GatewayError::Rejected(PacketRejection::CallClosed { state: CallState::Completed, .. })) => {}
        other => panic!("expected call closed, got {other:?}"),
    }

    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next_event(&mut feed).await.body.clone());
    }
    assert_eq!(seen[0], EventBody::CallCreated {});
    assert!(
        matches!(seen[1], EventBody::OrderingAnomaly { channel: 0, missing: 2, .. }),
        "the gap, aggregated with the duplicate that followed within the interval: {seen:?}"
    );
    assert_eq!(seen[2], EventBody::StateChanged { from: CallState::InProgress, to: CallState::Completed });
}

/// Events written before the feed and while it replays come once each, in id order,
/// then live ones follow with no gap or duplicate at the seam; filters keep only what
/// they match while the cursor moves over the rest.
pub async fn feed_replays_then_goes_live_without_gap_or_duplicate(store: Arc<dyn CallStore>) {
    let gateway = Gateway::new(store, GatewayConfig::default()).expect("valid config");
    // 600 calls created before anyone follows: more than one replay page.
    for i in 0..600 {
        gateway.ingest(id(&format!("feed-{i:03}")), packet(1)).await.expect("stored");
    }
    let mut feed = gateway.feed(Some(100)).await.expect("feed");
    let mut live = gateway.feed(None).await.expect("feed");
    let writer = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            for i in 600..900 {
                gateway.ingest(id(&format!("feed-{i:03}")), packet(1)).await.expect("stored");
            }
        })
    };
    let mut ids = Vec::new();
    while ids.len() < 800 {
        ids.push(next_event(&mut feed).await.id);
    }
    writer.await.expect("writer");
    assert_eq!(ids, (101..=900).collect::<Vec<EventId>>(), "every event once, in order");
    assert_eq!(feed.cursor(), 900);

    // The live feed began at the live edge: what it yields continues without a gap.
    assert_eq!(next_event(&mut live).await.id, 601, "live from the subscription on");
    let mut expect = 602;
    while expect <= 900 {
        assert_eq!(next_event(&mut live).await.id, expect);
        expect += 1;
    }

    let filter = EventFilter { types: vec![EventType::StateChanged], ..EventFilter::default() };
    let call = id("feed-200");
    gateway.complete(&call).await.expect("hang-up");
    let mut filtered = gateway.feed(Some(0)).await.expect("feed");
    let event = within("the hang-up", async {
        loop {
            if let FeedItem::Event(e) = filtered.next().await.expect("feed")
                && filter.matches(&e)
            {
                return e;
            }
        }
    })
    .await;
    assert_eq!((event.id, &event.call_id), (901, &call));
}

/// A feed that never reads while thousands of events are written falls behind the
/// broadcast ring, says so once with `lagged`, and then reads the gap from the log:
/// nothing missed, nothing twice. Memory stays the ring's, not the backlog's.
pub async fn feed_resumes_from_the_log_after_lagging(store: Arc<dyn CallStore>) {
    let config = GatewayConfig { event_capacity: 16, ..GatewayConfig::default() };
    let gateway = Gateway::new(store, config).expect("valid config");
    let mut slow = gateway.feed(None).await.expect("feed");
    let mut fast = gateway.feed(None).await.expect("feed");
    let calls: Vec<CallId> = (0..2_000).map(|i| id(&format!("lag-{i:04}"))).collect();
    gateway.ingest(calls[0].clone(), packet(1)).await.expect("stored");
    assert_eq!(next_event(&mut slow).await.id, 1);
    assert_eq!(next_event(&mut fast).await.id, 1);
    let batch: Vec<NewPacket> = calls[1..].iter().map(|c| NewPacket::new(c.clone(), packet(1))).collect();
    for chunk in batch.chunks(500) {
        gateway.ingest_batch(chunk.to_vec()).await.expect("stored");
    }
    // The fast one keeps up (it may lag too on a busy machine; either way, no gap).
    let mut lagged = 0;
    let mut ids = vec![1];
    while ids.len() < 2_000 {
        match within("the slow feed", slow.next()).await.expect("feed") {
            FeedItem::Event(e) => ids.push(e.id),
            FeedItem::Lagged { id, missed } => {
                lagged += 1;
                assert!(missed > 0);
                assert_eq!(id, *ids.last().expect("ids"), "lagged names the last id delivered");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(lagged >= 1, "2,000 events through a ring of 16 lag a feed that never read");
    assert_eq!(ids, (1..=2_000).collect::<Vec<EventId>>());
    let mut fast_ids = vec![1];
    while fast_ids.len() < 2_000 {
        if let FeedItem::Event(e) = within("the fast feed", fast.next()).await.expect("feed") {
            fast_ids.push(e.id);
        }
    }
    assert_eq!(fast_ids, ids);
}

/// A cursor whose events retention dropped, or one the log never reached, gets one
/// `resync` naming the id the feed continues from, then the events after it.
pub async fn feed_resyncs_past_retention_and_on_unknown_cursors(store: Arc<dyn CallStore>) {
    let clock = Arc::new(ManualClock::new(start()));
    let gateway = Gateway::with_clock(store, GatewayConfig::default(), clock.clone()).expect("valid config");
    for i in 0..5 {
        gateway.ingest(id(&format!("resync-{i}")), packet(1)).await.expect("stored");
    }
    clock.advance(Duration::from_secs(3600));
    assert_eq!(gateway.prune_events(Duration::from_secs(60), 3).await.expect("prune"), 3);
    let mut feed = gateway.feed(Some(1)).await.expect("feed");
    match within("resync", feed.next()).await.expect("feed") {
        FeedItem::Resync { id, reason } => assert_eq!((id, reason), (5, ResyncReason::Pruned)),
        other => panic!("expected a resync, got {other:?}"),
    }
    let mut kept = gateway.feed(Some(3)).await.expect("feed");
    assert_eq!(next_event(&mut kept).await.id, 4, "a cursor just before the oldest kept continues");
    let mut ahead = gateway.feed(Some(99)).await.expect("feed");
    match within("resync", ahead.next()).await.expect("feed") {
        FeedItem::Resync { id, reason } => assert_eq!((id, reason), (5, ResyncReason::Unknown)),
        other => panic!("expected a resync, got {other:?}"),
    }
    gateway.ingest(id("resync-after"), packet(1)).await.expect("stored");
    assert_eq!(next_event(&mut feed).await.id, 6, "live after the resync");
    assert_eq!(next_event(&mut ahead).await.id, 6);
}

/// A batch over the request limit, or holding one packet over the size limit, is
/// refused whole: nothing of it is stored.
pub async fn batch_limits_refuse_everything(store: Arc<dyn CallStore>) {
    let config =
        GatewayConfig { max_request_batch: 3, limits: PacketLimits { max_data_bytes: 16 }, ..Default::default() };
    let gateway = Gateway::new(store, config).expect("valid config");
    let call = id("limits-1");
    let batch = |n: i64| (1..=n).map(|s| NewPacket::new(call.clone(), packet(s))).collect::<Vec<_>>();
    match gateway.ingest_batch(batch(4)).await {
        Err(GatewayError::BatchTooLarge { len: 4, limit: 3 }) => {}
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    let mut oversized = batch(2);
    oversized.push(NewPacket::new(call.clone(), Packet::new(3, "x".repeat(17), 0.0).expect("valid")));
    match gateway.ingest_batch(oversized).await {
        Err(GatewayError::InvalidPacket(PacketError::DataTooLarge { .. })) => {}
        other => panic!("expected DataTooLarge, got {other:?}"),
    }
    match gateway.call(&call).await {
        Err(GatewayError::Store(crate::store::StoreError::NotFound { .. })) => {}
        other => panic!("nothing may be stored, got {other:?}"),
    }
    let outcomes = gateway.ingest_batch(batch(3)).await.expect("batch within limits");
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(Result::is_ok));
    assert!(gateway.ingest_batch(Vec::new()).await.expect("empty batch").is_empty());
}

/// A hung-up call is claimed, transcribed from its packets in order, and ARCHIVED
/// with the transcript and sentiment; idempotency key and attempt are the claim's.
pub async fn processor_archives_a_completed_call(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("archive-1");
    completed_call(&m.gateway, &call, 5).await;
    let p = processor(&m.gateway, m.ai.clone(), config("w1"));
    assert_eq!(p.run_once().await.expect("claimed"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    let result = snap.result.expect("result stored");
    assert_eq!(result.transcript, expected_transcript(5));
    assert_eq!(result.sentiment, SimulatedAi::sentiment_of(&result.transcript));
    // The suite's text payloads are not audio: five slots of silence, each counted.
    let stats = crate::media::AudioStats { frames: 5, gaps: 0, undecodable: 5, resized: 0 };
    assert_eq!(result.audio, Some(stats), "what assembly found is stored with the result");
    assert_eq!((snap.attempts, snap.failures), (1, 0));
    assert_eq!(snap.lease, None);
    assert_eq!(snap.next_attempt_at, None);
    assert_eq!(m.ai.attempts(&call), vec![1]);
    assert_eq!(p.run_once().await.expect("nothing due"), 0, "an archived call is never claimed again");
}

/// Retryable failures are recorded with exponential backoff (1 s, then 2 s, no
/// jitter); the call is not claimed before its retry is due; then it succeeds.
pub async fn processor_retries_with_backoff_then_succeeds(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("retry-1");
    completed_call(&m.gateway, &call, 3).await;
    m.ai.script(&call, [Step::Fail(AiError::unavailable("AI down")), Step::Fail(AiError::timeout("slow"))]);
    let p = processor(&m.gateway, m.ai.clone(), config("w1"));

    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::ProcessingAi);
    assert_eq!((snap.attempts, snap.failures), (1, 1));
    assert_eq!(snap.next_attempt_at, Some(start() + chrono::Duration::seconds(1)));
    assert!(snap.last_error.as_deref().is_some_and(|e| e.contains("AI down")), "{:?}", snap.last_error);
    assert_eq!(snap.lease, None);

    m.clock.advance(Duration::from_millis(999));
    assert_eq!(p.run_once().await.expect("claim"), 0, "not due before its backoff");
    m.clock.advance(Duration::from_millis(1));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!((snap.attempts, snap.failures), (2, 2));
    assert_eq!(snap.next_attempt_at, Some(start() + chrono::Duration::seconds(3)));

    m.clock.advance(Duration::from_secs(2));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!((snap.attempts, snap.failures), (3, 2));
    assert_eq!(m.ai.attempts(&call), vec![1, 2, 3]);
}

/// An AI error's `retry_after` hint pushes the retry later than the backoff would.
pub async fn processor_honours_retry_after(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("retry-after-1");
    completed_call(&m.gateway, &call, 1).await;
    m.ai.script(&call, [Step::Fail(AiError::rate_limited("slow down", Some(Duration::from_secs(10))))]);
    let p = processor(&m.gateway, m.ai.clone(), config("w1"));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.next_attempt_at, Some(start() + chrono::Duration::seconds(10)));
}

/// When transcription succeeded but sentiment analysis failed, the retry reuses the
/// transcript (a call's packets never change after hang-up) and only repeats the
/// sentiment step.
pub async fn processor_retry_after_sentiment_failure_reuses_the_transcript(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("sentiment-1");
    completed_call(&m.gateway, &call, 4).await;
    m.ai.script(&call, [Step::FailSentiment(AiError::unavailable("sentiment down"))]);
    let p = processor(&m.gateway, m.ai.clone(), config("w1"));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!((snap.state, snap.failures), (CallState::ProcessingAi, 1));
    assert!(snap.last_error.as_deref().is_some_and(|e| e.contains("sentiment down")));
    m.clock.advance(Duration::from_secs(1));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!(snap.result.expect("result").transcript, expected_transcript(4));
    assert_eq!(m.ai.attempts(&call), vec![1], "transcribed once");
    assert_eq!(m.ai.sentiment_calls(&call), 2);
}

/// A permanent error fails the call at once with its message; a re-drive sends it
/// back through the AI, which then archives it.
pub async fn processor_fails_at_once_on_permanent_error_and_redrive_recovers(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("permanent-1");
    completed_call(&m.gateway, &call, 2).await;
    m.ai.script(&call, [Step::Fail(AiError::permanent("unsupported codec"))]);
    let p = processor(&m.gateway, m.ai.clone(), config("w1"));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Failed);
    assert_eq!((snap.attempts, snap.failures), (1, 1));
    assert!(snap.last_error.as_deref().is_some_and(|e| e.contains("unsupported codec")));
    assert_eq!(snap.next_attempt_at, None);
    assert_eq!(p.run_once().await.expect("claim"), 0, "a FAILED call is not retried by itself");

    let t = m.gateway.redrive(&call).await.expect("re-drive");
    assert_eq!((t.from, t.to), (CallState::Failed, CallState::Completed));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!(snap.attempts, 2, "attempt numbers keep counting across a re-drive");
    assert_eq!(m.ai.attempts(&call), vec![1, 2]);
}

/// A call with no packet has no audio: it fails at once with the reason, and the AI
/// is never asked.
pub async fn processor_fails_a_call_without_audio_at_once(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("silent-1");
    m.gateway.open(&call, crate::media::MediaFormat::TELEPHONY).await.expect("open");
    assert!(m.gateway.complete(&call).await.expect("hang-up").applied);
    let p = processor(&m.gateway, m.ai.clone(), config("w1"));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Failed);
    assert!(snap.last_error.as_deref().is_some_and(|e| e.contains("no audio")), "{:?}", snap.last_error);
    assert_eq!(m.ai.attempts(&call), Vec::<u32>::new(), "the AI is not asked about a call without audio");
}

/// Retryable failures up to `maximum_attempts` fail the call with the last error.
pub async fn processor_fails_after_exhausting_attempts(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let call = id("exhaust-1");
    completed_call(&m.gateway, &call, 1).await;
    m.ai.set_default(Step::Fail(AiError::unavailable("still down")));
    m.ai.script(&call, [Step::Fail(AiError::unavailable("down 1")), Step::Fail(AiError::unavailable("down 2"))]);
    let p = processor(&m.gateway, m.ai.clone(), ProcessorConfig { retry: policy(3), ..config("w1") });
    for attempt in 1..=3 {
        assert_eq!(p.run_once().await.expect("claim"), 1, "attempt {attempt}");
        m.clock.advance(Duration::from_secs(60));
    }
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Failed);
    assert_eq!((snap.attempts, snap.failures), (3, 3));
    assert!(snap.last_error.as_deref().is_some_and(|e| e.contains("still down")), "{:?}", snap.last_error);
    assert_eq!(p.run_once().await.expect("claim"), 0);
}

/// A worker that claimed a call and died: nobody touches the call until its lease
/// expires; then the processor rescues it, and the rescue is not counted as a failure.
pub async fn processor_rescues_a_crashed_workers_call(store: Arc<dyn CallStore>) {
    let m = manual(store.clone());
    let call = id("rescue-1");
    completed_call(&m.gateway, &call, 2).await;
    let crashed = store.claim(&WorkerId::new("crashed"), Duration::from_secs(30), 10, start()).await.expect("claim");
    assert_eq!(crashed.len(), 1);

    let p = processor(&m.gateway, m.ai.clone(), config("w2"));
    m.clock.advance(Duration::from_secs(29));
    assert_eq!(p.run_once().await.expect("claim"), 0, "the lease is still held");
    m.clock.advance(Duration::from_secs(1));
    assert_eq!(p.run_once().await.expect("claim"), 1, "rescued once the lease expired");
    let snap = snapshot(&m.gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!((snap.attempts, snap.failures), (2, 0));
    assert_eq!(m.ai.attempts(&call), vec![2]);
    let stale = store.record_success(&crashed[0].attempt_ref(), &snap.result.expect("result"), start()).await;
    assert!(matches!(stale, Err(crate::store::StoreError::Fenced { .. })), "stale result refused: {stale:?}");
}

/// With an idle time-out, a call silent for longer is hung up and processed.
pub async fn processor_hangs_up_idle_calls(store: Arc<dyn CallStore>) {
    let m = manual(store);
    let (idle, busy) = (id("idle-1"), id("idle-2"));
    call_with_packets(&m.gateway, &idle, 2).await;
    m.clock.advance(Duration::from_secs(30));
    call_with_packets(&m.gateway, &busy, 1).await;
    let config = ProcessorConfig { idle_timeout: Some(Duration::from_secs(60)), ..config("w1") };
    let p = processor(&m.gateway, m.ai.clone(), config);
    m.clock.advance(Duration::from_secs(31));
    assert_eq!(p.run_once().await.expect("claim"), 1);
    assert_eq!(snapshot(&m.gateway, &idle).await.state, CallState::Archived);
    assert_eq!(snapshot(&m.gateway, &busy).await.state, CallState::InProgress, "silent for 31 s only");
}

/// A background processor with an hour-long poll picks up a hang-up at once: the
/// hang-up wakes it (no polling delay).
///
/// The call is made and hung up only once the processor has gone to sleep, so its
/// first claim (and next-due check) cannot find the call: without a wake-up (the
/// gateway's own signal, or the store's [`CallStore::wait_for_work`]) it would sleep
/// for the hour and the test time out. A PostgreSQL store must be listening already
/// (`PgCallStore::listen`), as the server's is before it starts the processor:
/// otherwise its first wait ends when the listener connects, a wake-up of its own.
pub async fn processor_wakes_on_hang_up(store: Arc<dyn CallStore>) {
    let gateway = Gateway::new(store, GatewayConfig::default()).expect("valid config");
    let ai = Arc::new(ScriptedAi::new());
    let config = ProcessorConfig { poll_interval: Duration::from_secs(3600), ..config("w1") };
    let p = processor(&gateway, ai.clone(), config);
    let mut sleeps = p.watch_sleeps();
    let handle = p.clone().spawn();
    within("the processor to go to sleep", sleeps.wait_for(|&n| n >= 1)).await.expect("processor running");
    let mut events = gateway.feed(None).await.expect("feed");
    let call = id("wake-1");
    completed_call(&gateway, &call, 3).await;
    until_terminal(&mut events, &gateway, std::slice::from_ref(&call)).await;
    let snap = snapshot(&gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!(snap.result.expect("result").transcript, expected_transcript(3));
    handle.shutdown(Duration::from_secs(5)).await;
}

/// Twelve calls, concurrency 4: exactly 4 attempts run at once while the AI is held,
/// never more; all twelve are archived once it lets go.
pub async fn processor_never_exceeds_its_concurrency(store: Arc<dyn CallStore>) {
    let gateway = Gateway::new(store, GatewayConfig::default()).expect("valid config");
    let ai = Arc::new(ScriptedAi::new());
    ai.set_default(Step::Gate);
    let p = processor(&gateway, ai.clone(), ProcessorConfig { concurrency: 4, ..config("w1") });
    let handle = p.clone().spawn();
    let mut events = gateway.feed(None).await.expect("feed");
    let calls: Vec<CallId> = (0..12).map(|i| id(&format!("conc-{i:02}"))).collect();
    for call in &calls {
        completed_call(&gateway, call, 2).await;
    }
    within("4 attempts in flight", ai.wait_in_flight(4)).await;
    assert_eq!(p.in_flight(), 4);
    let status = p.status();
    assert_eq!((status.concurrency, status.attempts_in_flight, status.ai_requests_in_flight), (4, 4, 4));
    ai.open_gate();
    until_terminal(&mut events, &gateway, &calls).await;
    for call in &calls {
        assert_eq!(snapshot(&gateway, call).await.state, CallState::Archived);
    }
    assert_eq!(ai.max_in_flight(), 4);
    let status = p.status();
    assert_eq!((status.ai_requests_in_flight, status.ai_requests_peak), (0, 4), "the processor's own gauge agrees");
    assert_eq!(ai.total_attempts(), 12, "each call ran exactly once");
    handle.shutdown(Duration::from_secs(5)).await;
}

/// Shutdown with attempts still running past the grace period gives their leases
/// back: the calls are due again at once, no failure counted, and the next processor
/// finishes them.
pub async fn shutdown_releases_leases_after_grace(store: Arc<dyn CallStore>) {
    let gateway = Gateway::new(store, GatewayConfig::default()).expect("valid config");
    let held = Arc::new(ScriptedAi::new());
    held.set_default(Step::Gate);
    let calls = [id("release-1"), id("release-2")];
    for call in &calls {
        completed_call(&gateway, call, 1).await;
    }
    let handle = processor(&gateway, held.clone(), ProcessorConfig { concurrency: 2, ..config("w1") }).spawn();
    within("2 attempts in flight", held.wait_in_flight(2)).await;
    within("shutdown", handle.shutdown(Duration::ZERO)).await;
    for call in &calls {
        let snap = snapshot(&gateway, call).await;
        assert_eq!(snap.state, CallState::ProcessingAi);
        assert_eq!(snap.lease, None, "lease released");
        assert_eq!(snap.failures, 0, "a release is not a failure");
        assert!(snap.next_attempt_at.is_some(), "due again");
    }
    let ai = Arc::new(ScriptedAi::new());
    let next = processor(&gateway, ai.clone(), config("w2"));
    assert_eq!(next.run_once().await.expect("claim"), 2);
    for call in &calls {
        let snap = snapshot(&gateway, call).await;
        assert_eq!(snap.state, CallState::Archived);
        assert_eq!(snap.attempts, 2);
    }
}

/// Shutdown with a generous grace period waits for the running attempt, which then
/// records its result.
pub async fn shutdown_lets_running_attempts_finish(store: Arc<dyn CallStore>) {
    let gateway = Gateway::new(store, GatewayConfig::default()).expect("valid config");
    let ai = Arc::new(ScriptedAi::new());
    ai.set_default(Step::Gate);
    let call = id("finish-1");
    completed_call(&gateway, &call, 1).await;
    let handle = processor(&gateway, ai.clone(), config("w1")).spawn();
    within("1 attempt in flight", ai.wait_in_flight(1)).await;
    let shutdown = tokio::spawn(handle.shutdown(Duration::from_secs(600)));
    ai.open_gate();
    within("shutdown", shutdown).await.expect("shutdown task");
    let snap = snapshot(&gateway, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!(snap.attempts, 1);
}
