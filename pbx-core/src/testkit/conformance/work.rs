//! AI work: claiming, leases, rescue, fencing, heartbeat, release, idle hang-up, due times.

use std::sync::Arc;

use super::*;
use crate::store::{AttemptRef, StoreError};

/// Claims hand out due calls oldest `next_attempt_at` first, at most `limit`; a limit of
/// 0 claims nothing; nothing is claimed before it is due.
pub async fn claim_takes_oldest_due_first_up_to_limit(store: Arc<dyn CallStore>) {
    let s = &*store;
    for (name, done) in [("c3", 300), ("c1", 100), ("c2", 200), ("c4", 400)] {
        append_seqs(s, &id(name), &[1], at(0)).await;
        s.complete(&id(name), at(done)).await.expect("complete");
    }
    append_seqs(s, &id("still-talking"), &[1], at(0)).await;
    assert!(s.claim(&worker("w"), LEASE, 10, at(99)).await.expect("claim").is_empty(), "nothing due yet");
    assert!(s.claim(&worker("w"), LEASE, 0, at(1000)).await.expect("claim").is_empty(), "limit 0");
    let claims = s.claim(&worker("w"), LEASE, 2, at(250)).await.expect("claim");
    let ids: Vec<&str> = claims.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, vec!["c1", "c2"]);
    let claims = s.claim(&worker("w"), LEASE, 10, at(250)).await.expect("claim");
    assert!(claims.is_empty(), "c3 is not due at 250: {claims:?}");
    let claims = s.claim(&worker("w"), LEASE, 10, at(1000)).await.expect("claim");
    let ids: Vec<&str> = claims.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, vec!["c3", "c4"]);
    for c in &claims {
        assert_eq!((c.attempt, c.failures, c.rescued), (1, 0, false));
        assert_eq!(c.lease_expires_at, at(1000 + LEASE_MS));
    }
    assert_eq!(snapshot(s, &id("still-talking")).await.state, CallState::InProgress);
}

/// A crashed worker's call is claimed again once its lease expired (not a moment
/// before): `rescued`, attempts + 1, failures unchanged. Repeated rescues never make the
/// call FAILED by themselves.
pub async fn lease_expiry_rescues_without_counting_a_failure(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let mut now = 10;
    let first = claim_one(s, "w0", at(now)).await;
    assert!(!first.rescued);
    for round in 1..=6u32 {
        let expiry = now + LEASE_MS;
        assert_eq!(s.next_due_at().await.expect("next_due_at"), Some(at(expiry)));
        assert!(s.claim(&worker("w"), LEASE, 10, at(expiry - 1)).await.expect("claim").is_empty(), "still leased");
        now = expiry;
        let w = format!("w{round}");
        let rescue = claim_one(s, &w, at(now)).await;
        assert_eq!(rescue.call_id, call);
        assert!(rescue.rescued, "round {round}");
        assert_eq!((rescue.attempt, rescue.failures), (round + 1, 0));
        let snap = snapshot(s, &call).await;
        assert_eq!(snap.state, CallState::ProcessingAi);
        assert_eq!((snap.attempts, snap.failures), (round + 1, 0));
        assert_eq!(snap.lease.map(|l| (l.owner, l.expires_at)), Some((worker(&w), at(now + LEASE_MS))));
    }
    // The rescued call's failures still start from the recorded ones: a failure then a
    // rescue keeps failures at 1.
    let last = AttemptRef { call_id: call.clone(), attempt: 7 };
    s.record_failure(&last, &retry_at(at(now + 1)), at(now)).await.expect("failure");
    let retry = claim_one(s, "w", at(now + 1)).await;
    assert_eq!((retry.attempt, retry.failures, retry.rescued), (8, 1, false));
    let rescue = claim_one(s, "w", at(now + 1 + LEASE_MS)).await;
    assert_eq!((rescue.attempt, rescue.failures, rescue.rescued), (9, 1, true));
}

/// Once a newer attempt claimed the call, every write of the old attempt is `Fenced`
/// and changes nothing; the new attempt's writes are accepted; after its outcome is
/// recorded, its own further writes are fenced too.
pub async fn stale_attempts_are_fenced(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let old = claim_one(s, "w1", at(10)).await.attempt_ref();
    let new = claim_one(s, "w2", at(10 + LEASE_MS)).await.attempt_ref();
    assert_eq!((old.attempt, new.attempt), (1, 2));
    let before = snapshot(s, &call).await;
    let fenced = |r: Result<(), StoreError>, a: &AttemptRef, what: &str| match r {
        Err(StoreError::Fenced { call_id, attempt }) => assert_eq!((call_id, attempt), (a.call_id.clone(), a.attempt)),
        other => panic!("{what} by attempt {}: {other:?}", a.attempt),
    };
    let t = at(20 + LEASE_MS);
    fenced(s.heartbeat(&old, LEASE, t).await.map(drop), &old, "heartbeat");
    fenced(s.record_success(&old, &result_for(&call), t).await, &old, "success");
    fenced(s.record_failure(&old, &give_up(), t).await.map(drop), &old, "failure");
    fenced(s.release(&old, t).await, &old, "release");
    let future = AttemptRef { call_id: call.clone(), attempt: 3 };
    fenced(s.heartbeat(&future, LEASE, t).await.map(drop), &future, "heartbeat");
    assert_eq!(snapshot(s, &call).await, before, "fenced writes change nothing");

    assert_eq!(s.heartbeat(&new, LEASE, t).await.expect("heartbeat"), t + chrono::Duration::milliseconds(LEASE_MS));
    s.record_success(&new, &result_for(&call), t).await.expect("success");
    assert_eq!(snapshot(s, &call).await.state, CallState::Archived);
    fenced(s.record_failure(&new, &give_up(), t).await.map(drop), &new, "failure after success");
    fenced(s.release(&new, t).await, &new, "release after success");
    assert_eq!(snapshot(s, &call).await.state, CallState::Archived);
}

/// A lease that expired but was not claimed again is still held: its attempt may still
/// record its outcome.
pub async fn expired_but_unclaimed_lease_still_writes(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let a = claim_one(s, "w1", at(10)).await.attempt_ref();
    let late = at(10 + 5 * LEASE_MS);
    assert_eq!(s.heartbeat(&a, LEASE, late).await.expect("heartbeat"), late + chrono::Duration::milliseconds(LEASE_MS));
    let state = s.record_failure(&a, &give_up(), late).await.expect("failure");
    assert_eq!(state, CallState::Failed);
    assert_eq!(snapshot(s, &call).await.finished_at, Some(late));
}

/// A heartbeat moves the lease expiry to `now + lease`: the call is not claimable before
/// the new expiry, and is rescued at it.
pub async fn heartbeat_extends_the_lease(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let a = claim_one(s, "w1", at(10)).await.attempt_ref();
    let expiry = s.heartbeat(&a, LEASE, at(20_000)).await.expect("heartbeat");
    assert_eq!(expiry, at(20_000 + LEASE_MS));
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.lease.map(|l| (l.owner, l.expires_at)), Some((worker("w1"), expiry)));
    assert_eq!(s.next_due_at().await.expect("next_due_at"), Some(expiry));
    assert!(s.claim(&worker("w2"), LEASE, 10, at(10 + LEASE_MS)).await.expect("claim").is_empty(), "old expiry");
    assert!(s.claim(&worker("w2"), LEASE, 10, at(20_000 + LEASE_MS - 1)).await.expect("claim").is_empty());
    let rescue = claim_one(s, "w2", expiry).await;
    assert_eq!((rescue.attempt, rescue.rescued, rescue.failures), (2, true, 0));
}

/// Releasing gives the call back due at once, without a failure; the next claim is a
/// plain claim (not a rescue), and the released attempt is fenced.
pub async fn release_makes_the_call_due_at_once(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = call_in_state(s, "call-a", CallState::Completed).await;
    let a = claim_one(s, "w1", at(10)).await.attempt_ref();
    s.release(&a, at(500)).await.expect("release");
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.state, CallState::ProcessingAi);
    assert_eq!((snap.lease, snap.next_attempt_at, snap.failures), (None, Some(at(500)), 0));
    assert_eq!(s.next_due_at().await.expect("next_due_at"), Some(at(500)));
    assert!(matches!(s.release(&a, at(501)).await, Err(StoreError::Fenced { attempt: 1, .. })));
    let again = claim_one(s, "w2", at(500)).await;
    assert_eq!((again.attempt, again.failures, again.rescued), (2, 0, false));
}

/// Idle hang-up completes only IN_PROGRESS calls whose last packet is strictly older
/// than `idle_since`, at most `limit`, exactly like `complete`.
pub async fn complete_idle_hangs_up_only_idle_calls(store: Arc<dyn CallStore>) {
    let s = &*store;
    for (name, last) in [("i1", 0), ("i2", 50), ("i3", 80), ("edge", 100), ("busy", 200)] {
        append_seqs(s, &id(name), &[1], at(0)).await;
        append_seqs(s, &id(name), &[2], at(last)).await;
    }
    let done = call_in_state(s, "done", CallState::Completed).await; // last packet at 0
    assert!(s.complete_idle(at(100), 0, at(1000)).await.expect("idle").is_empty(), "limit 0");
    let first = s.complete_idle(at(100), 2, at(1000)).await.expect("idle");
    assert_eq!(first.len(), 2);
    let rest = s.complete_idle(at(100), 10, at(1001)).await.expect("idle");
    assert_eq!(rest.len(), 1);
    let mut all: Vec<&str> = first.iter().chain(&rest).map(CallId::as_str).collect();
    all.sort_unstable();
    assert_eq!(all, vec!["i1", "i2", "i3"]);
    assert!(s.complete_idle(at(100), 10, at(1002)).await.expect("idle").is_empty());
    for name in ["i1", "i2", "i3"] {
        let snap = snapshot(s, &id(name)).await;
        assert_eq!(snap.state, CallState::Completed);
        let t = if rest.contains(&id(name)) { at(1001) } else { at(1000) };
        assert_eq!((snap.completed_at, snap.next_attempt_at), (Some(t), Some(t)));
    }
    for name in ["edge", "busy"] {
        assert_eq!(snapshot(s, &id(name)).await.state, CallState::InProgress, "{name}");
    }
    assert_eq!(snapshot(s, &done).await.completed_at, Some(at(5)), "already completed: untouched");
}

/// `next_due_at` is the earliest of: `next_attempt_at` of unleased COMPLETED and
/// PROCESSING_AI calls, and the lease expiry of leased ones; `None` when nothing is
/// pending (IN_PROGRESS, ARCHIVED and FAILED calls never count).
pub async fn next_due_at_tracks_pending_work(store: Arc<dyn CallStore>) {
    let s = &*store;
    let due = || async { s.next_due_at().await.expect("next_due_at") };
    assert_eq!(due().await, None);
    append_seqs(s, &id("a"), &[1], at(0)).await;
    append_seqs(s, &id("b"), &[1], at(0)).await;
    assert_eq!(due().await, None, "IN_PROGRESS is not pending");
    s.complete(&id("a"), at(50)).await.expect("complete");
    assert_eq!(due().await, Some(at(50)));
    s.complete(&id("b"), at(30)).await.expect("complete");
    assert_eq!(due().await, Some(at(30)));
    let b = claim_one(s, "w", at(40)).await;
    assert_eq!(b.call_id, id("b"));
    assert_eq!(due().await, Some(at(50)), "a is still due, b leased until later");
    let a = claim_one(s, "w", at(60)).await;
    assert_eq!(due().await, Some(at(40 + LEASE_MS)));
    s.record_failure(&b.attempt_ref(), &retry_at(at(90_000)), at(70)).await.expect("failure");
    assert_eq!(due().await, Some(at(60 + LEASE_MS)));
    s.record_success(&a.attempt_ref(), &result_for(&a.call_id), at(80)).await.expect("success");
    assert_eq!(due().await, Some(at(90_000)));
    let b2 = claim_one(s, "w", at(90_000)).await;
    s.record_failure(&b2.attempt_ref(), &give_up(), at(90_001)).await.expect("failure");
    assert_eq!(due().await, None);
    s.redrive(&id("b"), at(95_000)).await.expect("redrive");
    assert_eq!(due().await, Some(at(95_000)));
}
