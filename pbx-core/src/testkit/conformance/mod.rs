//! The backend conformance suite: every [`CallStore`] backend runs these cases.
//!
//! Each case is a plain `async fn(Arc<dyn CallStore>)` that starts from an empty store;
//! [`call_store_conformance!`](crate::call_store_conformance) turns them into one test
//! per case for a backend:
//!
//! ```ignore
//! pbx_core::call_store_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] setup() => MemoryCallStore::default());
//! pbx_core::call_store_conformance!(#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")] setup(pool: sqlx::PgPool) => PgCallStore::new(pool));
//! ```
//!
//! Time is always passed in: cases use whole-millisecond offsets from a fixed base
//! ([`at`]), because PostgreSQL keeps microseconds. Concurrency cases need a
//! multi-threaded runtime to mean anything; they never sleep and never time anything.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ai::{AiResult, ChannelSentiment, Segment, Sentiment, SentimentLabel};
use crate::id::{CallId, WorkerId};
use crate::media::AudioStats;
use crate::packet::{NewPacket, Packet, Payload};
use crate::state::CallState;
use crate::store::{AttemptFailure, CallSnapshot, CallStore, Claim, PacketOutcome, StoreError};

mod concurrency;
mod events;
mod lifecycle;
mod listing;
mod model;
mod notes;
mod packets;
mod retention;
mod webhooks;
mod work;

pub use concurrency::*;
pub use events::*;
pub use lifecycle::*;
pub use listing::*;
pub use model::*;
pub use notes::*;
pub use packets::*;
pub use retention::*;
pub use webhooks::*;
pub use work::*;

/// Generates one test per conformance case for a backend.
///
/// `#[$meta]` is the test attribute (`tokio::test(..)`, `sqlx::test(..)`), `setup(..)`
/// the generated functions' parameters, and the expression after `=>` builds the store
/// from them.
#[macro_export]
macro_rules! call_store_conformance {
    (#[$meta:meta] setup($($arg:ident : $ty:ty),* $(,)?) => $make:expr $(,)?) => {
        $crate::call_store_conformance!(@cases #[$meta] ($($arg : $ty),*) ($make);
            first_packet_creates_the_call,
            complete_hangs_up_once,
            unknown_calls_are_not_found,
            packets_are_refused_once_the_call_left_in_progress,
            claim_then_success_archives,
            retryable_failure_stays_processing_with_a_retry_time,
            give_up_fails_and_redrive_recovers,
            redrive_is_refused_outside_failed,
            terminal_states_refuse_everything,
            duplicates_and_conflicts,
            duplicates_and_conflicts_within_one_batch,
            batch_for_many_calls_answers_in_input_order,
            out_of_order_and_gaps_with_exact_ranges,
            huge_gap_is_reported_exactly,
            missing_ranges_are_truncated,
            packets_come_back_in_sequence_order,
            channels_have_their_own_sequence_spaces,
            text_and_audio_payloads_are_kept_apart,
            open_declares_the_media_format_once,
            packet_pages_read_one_channel_in_order,
            list_pages_in_byte_order_with_state_filter,
            list_refuses_invalid_limits,
            count_by_state_counts_every_call,
            claim_takes_oldest_due_first_up_to_limit,
            lease_expiry_rescues_without_counting_a_failure,
            stale_attempts_are_fenced,
            expired_but_unclaimed_lease_still_writes,
            heartbeat_extends_the_lease,
            release_makes_the_call_due_at_once,
            complete_idle_hangs_up_only_idle_calls,
            next_due_at_tracks_pending_work,
            concurrent_appends_to_one_call_lose_nothing,
            completion_racing_appends_stores_exactly_the_accepted_packets,
            hang_up_racing_the_first_packet_never_sees_an_empty_call,
            two_workers_claiming_at_once_one_wins,
            many_claimers_take_each_call_once,
            model_random_operation_sequences,
            every_change_writes_its_events_in_order,
            declarations_idle_hang_ups_and_rescues_write_events,
            ordering_anomalies_are_aggregated_per_channel,
            event_pages_records_and_pruning,
            event_signal_changes_on_writes,
            outbox_enqueue_moves_the_cursor_once,
            deliveries_are_claimed_fenced_retried_and_redriven,
            concurrent_delivery_claimers_take_each_once,
            pruning_keeps_what_the_outbox_has_not_enqueued,
            sweeping_packets_keeps_the_call_and_its_summary,
            sweeping_packets_keeps_the_lowest_missing_ranges,
            sweeping_calls_deletes_finished_calls_only,
            finished_deliveries_are_pruned_pending_ones_kept,
            stream_notes_are_kept_in_order_bounded_and_survive_a_sweep,
        );
    };
    (@cases #[$meta:meta] $args:tt $make:tt; $($case:ident),* $(,)?) => {
        $(
            #[$meta]
            async fn $case $args {
                let store: ::std::sync::Arc<dyn $crate::store::CallStore> = ::std::sync::Arc::new($make);
                $crate::testkit::conformance::$case(store).await
            }
        )*
    };
}

/// The suite's time zero: a fixed instant, so runs are reproducible.
pub fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_000).unwrap_or_default()
}

/// `ms` whole milliseconds after [`base_time`].
pub fn at(ms: i64) -> DateTime<Utc> {
    base_time() + chrono::Duration::milliseconds(ms)
}

fn id(s: &str) -> CallId {
    CallId::new(s).expect("valid test call id")
}

fn worker(s: &str) -> WorkerId {
    WorkerId::new(s)
}

fn new_packet(call: &CallId, seq: u64, data: &str) -> NewPacket {
    new_packet_on(call, 0, seq, Payload::from_base64_or_text(data))
}

fn new_packet_on(call: &CallId, channel: u8, seq: u64, payload: Payload) -> NewPacket {
    let seq = i64::try_from(seq).expect("test sequence fits i64");
    let packet = Packet::new(seq, payload, seq as f64 * 0.02)
        .and_then(|p| p.on_channel(i64::from(channel)))
        .expect("valid test packet");
    NewPacket::new(call.clone(), packet)
}

/// The data the suite sends for sequence `seq` unless a case says otherwise.
fn data(seq: u64) -> String {
    format!("audio_chunk_{seq}")
}

async fn append_one(store: &dyn CallStore, call: &CallId, seq: u64, data: &str, now: DateTime<Utc>) -> PacketOutcome {
    let mut out = store.append(&[new_packet(call, seq, data)], now).await.expect("append");
    assert_eq!(out.len(), 1, "one outcome per packet");
    out.remove(0)
}

/// Appends sequences `seqs` (with [`data`]) to `call` in one batch; all must be accepted.
async fn append_seqs(store: &dyn CallStore, call: &CallId, seqs: &[u64], now: DateTime<Utc>) {
    let batch: Vec<_> = seqs.iter().map(|&s| new_packet(call, s, &data(s))).collect();
    let out = store.append(&batch, now).await.expect("append");
    assert_eq!(out.len(), seqs.len());
    for (s, o) in seqs.iter().zip(out) {
        assert!(o.is_ok(), "packet {s} of {call} refused: {o:?}");
    }
}

async fn snapshot(store: &dyn CallStore, call: &CallId) -> CallSnapshot {
    store.get(call, 100).await.expect("get")
}

fn result_for(call: &CallId) -> AiResult {
    AiResult {
        segments: vec![Segment { start: 0.0, end: 1.5, text: format!("transcript of {call}"), channel: None }],
        channel_sentiment: vec![ChannelSentiment {
            channel: 1,
            sentiment: Sentiment { label: SentimentLabel::Negative, score: -0.5 },
        }],
        audio: Some(AudioStats { frames: 3, gaps: 1, undecodable: 1, resized: 0 }),
        ..AiResult::new(format!("transcript of {call}"), Sentiment { label: SentimentLabel::Positive, score: 0.75 })
    }
}

fn retry_at(t: DateTime<Utc>) -> AttemptFailure {
    AttemptFailure { error: "ai unavailable".into(), retry_at: Some(t) }
}

fn give_up() -> AttemptFailure {
    AttemptFailure { error: "permanent".into(), retry_at: None }
}

const LEASE: Duration = Duration::from_secs(30);
const LEASE_MS: i64 = 30_000;

/// Claims one call (the oldest due) for `w` at `now`; there must be one.
async fn claim_one(store: &dyn CallStore, w: &str, now: DateTime<Utc>) -> Claim {
    let mut claims = store.claim(&worker(w), LEASE, 1, now).await.expect("claim");
    assert_eq!(claims.len(), 1, "expected exactly one claim at {now}: {claims:?}");
    claims.remove(0)
}

/// Builds a call `name` (packets 1..=3 at t=0) and drives it into `state`. For
/// PROCESSING_AI, ARCHIVED and FAILED the call went through attempt 1 at t=10.
async fn call_in_state(store: &dyn CallStore, name: &str, state: CallState) -> CallId {
    let call = id(name);
    append_seqs(store, &call, &[1, 2, 3], at(0)).await;
    if state == CallState::InProgress {
        return call;
    }
    store.complete(&call, at(5)).await.expect("complete");
    if state == CallState::Completed {
        return call;
    }
    // Limit 1: a case that needs a COMPLETED call next to later states builds it last.
    let claim = claim_one(store, "setup", at(10)).await;
    assert_eq!(claim.call_id, call, "setup claimed another call");
    match state {
        CallState::Archived => {
            store.record_success(&claim.attempt_ref(), &result_for(&call), at(20)).await.expect("success")
        }
        CallState::Failed => {
            let s = store.record_failure(&claim.attempt_ref(), &give_up(), at(20)).await.expect("failure");
            assert_eq!(s, CallState::Failed);
        }
        _ => {}
    }
    assert_eq!(snapshot(store, &call).await.state, state);
    call
}
