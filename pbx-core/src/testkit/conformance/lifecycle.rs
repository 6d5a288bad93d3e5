//! State transitions, accepted and refused.

use std::sync::Arc;

use super::*;
use crate::ordering::PacketOrder;
use crate::state::{Transition, Trigger};
use crate::store::{Appended, PacketRejection, StoreError};

/// The first packet creates the call IN_PROGRESS (`created_call` only on that packet),
/// with no AI bookkeeping yet; later packets move `last_packet_at` and `updated_at`.
pub async fn first_packet_creates_the_call(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    let first = append_one(s, &call, 1, "a1", at(0)).await;
    assert_eq!(first, Ok(Appended { order: PacketOrder::InOrder, created_call: true }));
    let second = append_one(s, &call, 2, "a2", at(7)).await;
    assert_eq!(second, Ok(Appended { order: PacketOrder::InOrder, created_call: false }));
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.call_id, call);
    assert_eq!(snap.state, CallState::InProgress);
    assert_eq!((snap.ordering.counters.received, snap.ordering.counters.highest), (2, 2));
    assert_eq!((snap.attempts, snap.failures), (0, 0));
    assert_eq!(snap.next_attempt_at, None);
    assert_eq!(snap.lease, None);
    assert_eq!((snap.last_error.as_deref(), snap.result.as_ref()), (None, None));
    assert_eq!(snap.created_at, at(0));
    assert_eq!(snap.last_packet_at, at(7));
    assert_eq!(snap.updated_at, at(7));
    assert_eq!((snap.completed_at, snap.finished_at), (None, None));
}

/// Hang-up moves IN_PROGRESS to COMPLETED with its AI work due at once; a second
/// hang-up is a no-op (`applied == false`) that changes nothing.
pub async fn complete_hangs_up_once(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::InProgress).await;
    let t = s.complete(&call, at(100)).await.expect("complete");
    assert_eq!(t, Transition { from: CallState::InProgress, to: CallState::Completed, applied: true });
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::Completed);
    assert_eq!(snap.completed_at, Some(at(100)));
    assert_eq!(snap.next_attempt_at, Some(at(100)));
    let again = s.complete(&call, at(200)).await.expect("complete again");
    assert_eq!(again, Transition { from: CallState::Completed, to: CallState::Completed, applied: false });
    assert_eq!(snapshot(s, &call).await, snap, "a no-op hang-up changes nothing");
}

/// Every call-addressed read and write on an unknown id is `NotFound`.
pub async fn unknown_calls_are_not_found(store: Arc<dyn CallStore>) {
    let s = &*store;
    let ghost = id("ghost");
    let nf = |r: Result<(), StoreError>, what: &str| {
        assert!(matches!(r, Err(StoreError::NotFound { ref call_id }) if *call_id == ghost), "{what}: {r:?}")
    };
    nf(s.complete(&ghost, at(0)).await.map(drop), "complete");
    nf(s.get(&ghost, 10).await.map(drop), "get");
    nf(s.packets(&ghost).await.map(drop), "packets");
    nf(s.redrive(&ghost, at(0)).await.map(drop), "redrive");
    let a = crate::store::AttemptRef { call_id: ghost.clone(), attempt: 1 };
    nf(s.heartbeat(&a, LEASE, at(0)).await.map(drop), "heartbeat");
    nf(s.record_success(&a, &result_for(&ghost), at(0)).await, "record_success");
    nf(s.record_failure(&a, &give_up(), at(0)).await.map(drop), "record_failure");
    nf(s.release(&a, at(0)).await, "release");
}

/// Once a call left IN_PROGRESS, every packet (new, duplicate or conflicting) is
/// `CallClosed` with the call's state, and nothing about the call changes.
pub async fn packets_are_refused_once_the_call_left_in_progress(store: Arc<dyn CallStore>) {
    let s = &*store;
    let mut calls = Vec::new();
    // COMPLETED last: call_in_state claims the oldest due call.
    for (name, state) in [
        ("p", CallState::ProcessingAi),
        ("a", CallState::Archived),
        ("f", CallState::Failed),
        ("c", CallState::Completed),
    ] {
        calls.push((call_in_state(s, name, state).await, state));
    }
    for (call, state) in calls {
        let before = snapshot(s, &call).await;
        let batch = [new_packet(&call, 4, "new"), new_packet(&call, 1, &data(1)), new_packet(&call, 2, "other")];
        let out = s.append(&batch, at(1000)).await.expect("append");
        let closed = Err(PacketRejection::CallClosed { call_id: call.clone(), state });
        assert_eq!(out, vec![closed.clone(), closed.clone(), closed], "{state}");
        assert_eq!(snapshot(s, &call).await, before, "{state}: a refused packet changes nothing");
        let seqs: Vec<u64> = s.packets(&call).await.expect("packets").iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}

/// Claim moves COMPLETED to PROCESSING_AI under a lease (attempt 1); success moves it
/// to ARCHIVED with the result saved, the lease released and nothing due.
pub async fn claim_then_success_archives(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let claim = claim_one(s, "w1", at(10)).await;
    assert_eq!(claim.call_id, call);
    assert_eq!((claim.attempt, claim.failures, claim.rescued), (1, 0, false));
    assert_eq!(claim.lease_expires_at, at(10 + LEASE_MS));
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::ProcessingAi);
    assert_eq!(snap.attempts, 1);
    let lease = snap.lease.expect("lease held");
    assert_eq!((lease.owner, lease.expires_at), (worker("w1"), at(10 + LEASE_MS)));
    assert!(s.claim(&worker("w2"), LEASE, 10, at(11)).await.expect("claim").is_empty(), "leased");

    s.record_success(&claim.attempt_ref(), &result_for(&call), at(50)).await.expect("success");
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::Archived);
    assert_eq!(snap.result, Some(result_for(&call)));
    assert_eq!((snap.lease, snap.next_attempt_at), (None, None));
    assert_eq!(snap.finished_at, Some(at(50)));
    assert_eq!((snap.attempts, snap.failures), (1, 0));
    assert_eq!(s.next_due_at().await.expect("next_due_at"), None);
}

/// A retryable failure keeps the call PROCESSING_AI, counts the failure, records the
/// error, drops the lease, and makes the call due exactly at `retry_at`.
pub async fn retryable_failure_stays_processing_with_a_retry_time(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let claim = claim_one(s, "w1", at(10)).await;
    let state = s.record_failure(&claim.attempt_ref(), &retry_at(at(5000)), at(20)).await.expect("failure");
    assert_eq!(state, CallState::ProcessingAi);
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::ProcessingAi);
    assert_eq!((snap.attempts, snap.failures), (1, 1));
    assert_eq!(snap.last_error.as_deref(), Some("ai unavailable"));
    assert_eq!((snap.lease, snap.next_attempt_at, snap.finished_at), (None, Some(at(5000)), None));
    assert_eq!(s.next_due_at().await.expect("next_due_at"), Some(at(5000)));
    assert!(s.claim(&worker("w1"), LEASE, 10, at(4999)).await.expect("claim").is_empty(), "not due yet");
    let retry = claim_one(s, "w2", at(5000)).await;
    assert_eq!((retry.attempt, retry.failures, retry.rescued), (2, 1, false));
}

/// Giving up moves the call to FAILED (nothing due); an operator re-drive moves it back
/// to COMPLETED with failures reset, the last error kept, due at once, and the next
/// claim continues the attempt count (attempts never reset: they are the fencing token).
pub async fn give_up_fails_and_redrive_recovers(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let claim = claim_one(s, "w1", at(10)).await;
    let state = s.record_failure(&claim.attempt_ref(), &give_up(), at(20)).await.expect("failure");
    assert_eq!(state, CallState::Failed);
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::Failed);
    assert_eq!((snap.failures, snap.lease.as_ref(), snap.next_attempt_at), (1, None, None));
    assert_eq!(snap.finished_at, Some(at(20)));
    assert_eq!(snap.last_error.as_deref(), Some("permanent"));
    assert_eq!(s.next_due_at().await.expect("next_due_at"), None);
    assert!(s.claim(&worker("w1"), LEASE, 10, at(100_000)).await.expect("claim").is_empty());

    let t = s.redrive(&call, at(30)).await.expect("redrive");
    assert_eq!(t, Transition { from: CallState::Failed, to: CallState::Completed, applied: true });
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::Completed);
    assert_eq!((snap.failures, snap.attempts), (0, 1));
    assert_eq!(snap.last_error.as_deref(), Some("permanent"));
    assert_eq!((snap.next_attempt_at, snap.finished_at), (Some(at(30)), None));
    let again = claim_one(s, "w2", at(30)).await;
    assert_eq!((again.attempt, again.failures, again.rescued), (2, 0, false));
}

/// Re-drive from any state but FAILED is `InvalidTransition` carrying the state
/// machine's refusal, and changes nothing.
pub async fn redrive_is_refused_outside_failed(store: Arc<dyn CallStore>) {
    let s = &*store;
    let mut calls = Vec::new();
    for (name, state) in [
        ("i", CallState::InProgress),
        ("p", CallState::ProcessingAi),
        ("a", CallState::Archived),
        ("c", CallState::Completed),
    ] {
        calls.push((call_in_state(s, name, state).await, state));
    }
    for (call, state) in calls {
        let before = snapshot(s, &call).await;
        match s.redrive(&call, at(1000)).await {
            Err(StoreError::InvalidTransition { call_id, source }) => {
                assert_eq!(call_id, call);
                assert_eq!((source.state, source.trigger), (state, Trigger::Redrive));
            }
            other => panic!("redrive from {state}: {other:?}"),
        }
        assert_eq!(snapshot(s, &call).await, before);
    }
}

/// ARCHIVED and FAILED take nothing by themselves: no packet, hang-up is a no-op, they
/// are never claimed or due, and every fenced write of their last attempt is `Fenced`
/// (ARCHIVED also refuses re-drive).
pub async fn terminal_states_refuse_everything(store: Arc<dyn CallStore>) {
    let s = &*store;
    for (name, state) in [("a", CallState::Archived), ("f", CallState::Failed)] {
        let call = call_in_state(s, name, state).await;
        let before = snapshot(s, &call).await;
        let out = append_one(s, &call, 9, "late", at(100)).await;
        assert_eq!(out, Err(PacketRejection::CallClosed { call_id: call.clone(), state }));
        let t = s.complete(&call, at(100)).await.expect("complete");
        assert_eq!(t, Transition { from: state, to: state, applied: false });
        assert!(s.claim(&worker("w"), LEASE, 10, at(1_000_000)).await.expect("claim").is_empty());
        assert_eq!(s.next_due_at().await.expect("next_due_at"), None);
        let a = crate::store::AttemptRef { call_id: call.clone(), attempt: before.attempts };
        let fenced = |r: Result<(), StoreError>, what: &str| {
            assert!(matches!(r, Err(StoreError::Fenced { attempt: 1, .. })), "{state} {what}: {r:?}")
        };
        fenced(s.heartbeat(&a, LEASE, at(100)).await.map(drop), "heartbeat");
        fenced(s.record_success(&a, &result_for(&call), at(100)).await, "success");
        fenced(s.record_failure(&a, &retry_at(at(200)), at(100)).await.map(drop), "failure");
        fenced(s.release(&a, at(100)).await, "release");
        if state == CallState::Archived {
            assert!(matches!(s.redrive(&call, at(100)).await, Err(StoreError::InvalidTransition { .. })));
        }
        assert_eq!(snapshot(s, &call).await, before, "{state} changed");
    }
}
