//! The model test: random operation sequences run against the store and against a
//! small reference model, compared after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::*;
use crate::media::MediaFormat;
use crate::ordering::{OrderingCounters, OrderingReport, missing_ranges};
use crate::packet::Payload;
use crate::state::{Transition, Trigger, transition};
use crate::store::{Appended, AttemptRef, Lease, ListQuery, Opened, PacketRejection, StoreError};

const CASES: usize = 32;
const MAX_OPS: usize = 40;
const CALLS: usize = 3;
const MAX_RANGES: usize = 2;

/// One step of a generated sequence. Call and attempt fields are indexes, resolved
/// against the case's ids and the attempts claimed so far (stale ones included).
#[derive(Debug, Clone)]
enum Op {
    /// (call, channel, sequence, payload variant: 0 the suite's text, 1 other text,
    /// 2 the suite's bytes as audio, which conflicts with 0).
    Append(Vec<(usize, u8, u64, u8)>),
    /// (call, format variant).
    Open(usize, bool),
    Complete(usize),
    Claim {
        limit: usize,
        lease_ms: i64,
    },
    Heartbeat {
        attempt: usize,
        lease_ms: i64,
    },
    Succeed(usize),
    Fail {
        attempt: usize,
        retry_in_ms: Option<i64>,
    },
    Release(usize),
    Redrive(usize),
    CompleteIdle {
        idle_ms: i64,
        limit: usize,
    },
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let variant = prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    let channel = prop_oneof![4 => Just(0u8), 1 => Just(1u8)];
    let packet = (0..CALLS, channel, 1u64..10, variant);
    prop_oneof![
        6 => proptest::collection::vec(packet, 1..5).prop_map(Op::Append),
        1 => (0..CALLS, proptest::bool::weighted(0.3)).prop_map(|(c, alt)| Op::Open(c, alt)),
        2 => (0..CALLS).prop_map(Op::Complete),
        3 => (0usize..3, 1i64..4).prop_map(|(limit, s)| Op::Claim { limit, lease_ms: s * 1000 }),
        1 => (any::<usize>(), 1i64..4).prop_map(|(attempt, s)| Op::Heartbeat { attempt, lease_ms: s * 1000 }),
        2 => any::<usize>().prop_map(Op::Succeed),
        2 => (any::<usize>(), proptest::option::weighted(0.7, 0i64..3000))
            .prop_map(|(attempt, retry_in_ms)| Op::Fail { attempt, retry_in_ms }),
        1 => any::<usize>().prop_map(Op::Release),
        1 => (0..CALLS).prop_map(Op::Redrive),
        1 => (0i64..3000, 0usize..3).prop_map(|(idle_ms, limit)| Op::CompleteIdle { idle_ms, limit }),
        3 => (0i64..4000).prop_map(Op::Advance),
    ]
}

/// A call as the model keeps it: the snapshot fields plus the packets.
#[derive(Debug, Clone)]
struct ModelCall {
    snap: CallSnapshot,
    packets: BTreeMap<(u8, u64), Payload>,
}

impl ModelCall {
    fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.snap.state, &self.snap.lease) {
            (CallState::ProcessingAi, Some(lease)) => Some(lease.expires_at),
            (CallState::Completed | CallState::ProcessingAi, None) => self.snap.next_attempt_at,
            _ => None,
        }
    }

    fn fenced(&self, a: &AttemptRef) -> Result<(), String> {
        let s = &self.snap;
        if s.state == CallState::ProcessingAi && s.lease.is_some() && s.attempts == a.attempt {
            Ok(())
        } else {
            Err("Fenced".into())
        }
    }

    fn snapshot(&self) -> CallSnapshot {
        let mut snap = self.snap.clone();
        for (channel, report) in snap.channel_ordering.iter_mut().enumerate() {
            let seqs = self.packets.keys().filter(|(c, _)| usize::from(*c) == channel).map(|(_, s)| *s);
            let (ranges, truncated) = missing_ranges(seqs, MAX_RANGES);
            report.missing_ranges = ranges;
            report.missing_ranges_truncated = truncated;
        }
        snap.ordering = snap.channel_ordering[0].clone();
        snap
    }
}

#[derive(Debug, Default)]
struct Model {
    calls: BTreeMap<CallId, ModelCall>,
}

fn kind(e: &StoreError) -> String {
    match e {
        StoreError::NotFound { .. } => "NotFound".into(),
        StoreError::Fenced { .. } => "Fenced".into(),
        StoreError::FormatConflict { .. } => "FormatConflict".into(),
        StoreError::InvalidTransition { source, .. } => format!("Invalid({}, {:?})", source.state, source.trigger),
        other => format!("unexpected: {other}"),
    }
}

fn lift<T>(r: Result<T, StoreError>) -> Result<T, String> {
    r.map_err(|e| kind(&e))
}

fn not_found() -> String {
    "NotFound".into()
}

impl Model {
    fn call(&mut self, id: &CallId) -> Result<&mut ModelCall, String> {
        self.calls.get_mut(id).ok_or_else(not_found)
    }

    fn open(&mut self, id: &CallId, format: MediaFormat, now: DateTime<Utc>) -> Result<Opened, String> {
        if let Some(call) = self.calls.get_mut(id) {
            let s = &mut call.snap;
            match s.media_format {
                Some(declared) if declared != format => return Err("FormatConflict".into()),
                Some(_) => {}
                None => {
                    s.media_format = Some(format);
                    s.updated_at = now;
                }
            }
            return Ok(Opened { created: false, state: s.state });
        }
        let snap = CallSnapshot {
            call_id: id.clone(),
            state: CallState::InProgress,
            media_format: Some(format),
            ordering: OrderingReport::default(),
            channel_ordering: vec![OrderingReport::default()],
            attempts: 0,
            failures: 0,
            next_attempt_at: None,
            lease: None,
            last_error: None,
            result: None,
            created_at: now,
            updated_at: now,
            last_packet_at: now,
            completed_at: None,
            finished_at: None,
            packets_swept: None,
            streams: Vec::new(),
            signals: Vec::new(),
        };
        self.calls.insert(id.clone(), ModelCall { snap, packets: BTreeMap::new() });
        Ok(Opened { created: true, state: CallState::InProgress })
    }

    fn append(&mut self, batch: &[NewPacket], now: DateTime<Utc>) -> Vec<PacketOutcome> {
        let mut out = Vec::new();
        for p in batch {
            let mut created_call = false;
            let call = self.calls.entry(p.call_id.clone()).or_insert_with(|| {
                created_call = true;
                ModelCall {
                    snap: CallSnapshot {
                        call_id: p.call_id.clone(),
                        state: CallState::InProgress,
                        media_format: None,
                        ordering: OrderingReport::default(),
                        channel_ordering: vec![OrderingReport::default()],
                        attempts: 0,
                        failures: 0,
                        next_attempt_at: None,
                        lease: None,
                        last_error: None,
                        result: None,
                        created_at: now,
                        updated_at: now,
                        last_packet_at: now,
                        completed_at: None,
                        finished_at: None,
                        packets_swept: None,
                        streams: Vec::new(),
                        signals: Vec::new(),
                    },
                    packets: BTreeMap::new(),
                }
            });
            let s = &mut call.snap;
            if s.state != CallState::InProgress {
                out.push(Err(PacketRejection::CallClosed { call_id: p.call_id.clone(), state: s.state }));
                continue;
            }
            let (channel, seq) = (p.packet.channel(), p.packet.sequence());
            let stored = call.packets.get(&(channel, seq));
            if stored.is_some_and(|d| d != p.packet.data()) {
                out.push(Err(PacketRejection::Conflict { call_id: p.call_id.clone(), sequence: seq }));
                continue;
            }
            while s.channel_ordering.len() <= usize::from(channel) {
                s.channel_ordering.push(OrderingReport::default());
            }
            let order = s.channel_ordering[usize::from(channel)].counters.observe(seq, stored.is_some());
            s.ordering.counters = s.channel_ordering[0].counters;
            if stored.is_none() {
                call.packets.insert((channel, seq), p.packet.data().clone());
                s.last_packet_at = now;
            }
            out.push(Ok(Appended { order, created_call }));
        }
        out
    }

    fn complete(&mut self, id: &CallId, now: DateTime<Utc>) -> Result<Transition, String> {
        let s = &mut self.call(id)?.snap;
        let t = transition(s.state, Trigger::HangUp).map_err(|e| format!("Invalid({}, {:?})", e.state, e.trigger))?;
        if t.applied {
            s.state = t.to;
            s.completed_at = Some(now);
            s.next_attempt_at = Some(now);
        }
        Ok(t)
    }

    fn claim(&mut self, worker: &WorkerId, lease_ms: i64, limit: usize, now: DateTime<Utc>) -> Vec<Claim> {
        let mut due: Vec<(DateTime<Utc>, CallId)> = self
            .calls
            .values()
            .filter_map(|c| c.due_at().filter(|at| *at <= now).map(|at| (at, c.snap.call_id.clone())))
            .collect();
        due.sort();
        let mut claims = Vec::new();
        for (_, id) in due.into_iter().take(limit) {
            let s = &mut self.calls.get_mut(&id).expect("due call exists").snap;
            let rescued = s.lease.is_some();
            let expires_at = now + chrono::Duration::milliseconds(lease_ms);
            s.state = CallState::ProcessingAi;
            s.attempts += 1;
            s.lease = Some(Lease { owner: worker.clone(), expires_at });
            claims.push(Claim {
                call_id: id,
                attempt: s.attempts,
                failures: s.failures,
                lease_expires_at: expires_at,
                rescued,
            });
        }
        claims
    }

    fn heartbeat(&mut self, a: &AttemptRef, lease_ms: i64, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        let call = self.call(&a.call_id)?;
        call.fenced(a)?;
        let expires_at = now + chrono::Duration::milliseconds(lease_ms);
        if let Some(l) = call.snap.lease.as_mut() {
            l.expires_at = expires_at;
        }
        Ok(expires_at)
    }

    fn succeed(&mut self, a: &AttemptRef, now: DateTime<Utc>) -> Result<(), String> {
        let call = self.call(&a.call_id)?;
        call.fenced(a)?;
        let s = &mut call.snap;
        s.state = CallState::Archived;
        s.result = Some(result_for(&a.call_id));
        s.lease = None;
        s.next_attempt_at = None;
        s.finished_at = Some(now);
        Ok(())
    }

    fn fail(&mut self, a: &AttemptRef, f: &AttemptFailure, now: DateTime<Utc>) -> Result<CallState, String> {
        let call = self.call(&a.call_id)?;
        call.fenced(a)?;
        let s = &mut call.snap;
        s.failures += 1;
        s.last_error = Some(f.error.clone());
        s.lease = None;
        s.next_attempt_at = f.retry_at;
        if f.retry_at.is_none() {
            s.state = CallState::Failed;
            s.finished_at = Some(now);
        }
        Ok(s.state)
    }

    fn release(&mut self, a: &AttemptRef, now: DateTime<Utc>) -> Result<(), String> {
        let call = self.call(&a.call_id)?;
        call.fenced(a)?;
        call.snap.lease = None;
        call.snap.next_attempt_at = Some(now);
        Ok(())
    }

    fn redrive(&mut self, id: &CallId, now: DateTime<Utc>) -> Result<Transition, String> {
        let s = &mut self.call(id)?.snap;
        let t = transition(s.state, Trigger::Redrive).map_err(|e| format!("Invalid({}, {:?})", e.state, e.trigger))?;
        s.state = t.to;
        s.failures = 0;
        s.next_attempt_at = Some(now);
        s.lease = None;
        s.finished_at = None;
        Ok(t)
    }

    fn next_due_at(&self) -> Option<DateTime<Utc>> {
        self.calls.values().filter_map(ModelCall::due_at).min()
    }
}

/// Checks one value against the model's, as a step failure message.
fn same<T: PartialEq + std::fmt::Debug>(what: &str, store: T, model: T) -> Result<(), String> {
    if store == model { Ok(()) } else { Err(format!("{what}: store {store:?}, model {model:?}")) }
}

/// `updated_at` ("when anything last changed") is left out of the comparison: the
/// contract pins it only for stored packets, which the dedicated cases check.
fn comparable(mut snap: CallSnapshot) -> CallSnapshot {
    snap.updated_at = snap.created_at;
    snap
}

struct Case<'a> {
    store: &'a dyn CallStore,
    model: Model,
    ids: Vec<CallId>,
    attempts: Vec<AttemptRef>,
    now: i64,
}

impl Case<'_> {
    fn attempt(&self, i: usize) -> AttemptRef {
        match self.attempts.len() {
            0 => AttemptRef { call_id: self.ids[i % CALLS].clone(), attempt: 1 },
            n => self.attempts[i % n].clone(),
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        let (s, now) = (self.store, at(self.now));
        match op {
            Op::Append(packets) => {
                let batch: Vec<NewPacket> = packets
                    .iter()
                    .map(|&(c, channel, seq, variant)| {
                        let payload = match variant {
                            0 => Payload::Text(data(seq).into()),
                            1 => Payload::Text(format!("other_{seq}").into()),
                            _ => Payload::Audio(data(seq).into()),
                        };
                        new_packet_on(&self.ids[c], channel, seq, payload)
                    })
                    .collect();
                let got = s.append(&batch, now).await.map_err(|e| format!("append failed: {e}"))?;
                same("append", got, self.model.append(&batch, now))?;
            }
            Op::Open(c, alt) => {
                let format = if *alt { "l16/16000/2" } else { "mulaw/8000/1" }.parse().expect("valid format");
                let got = s.open(&self.ids[*c], format, now).await.map_err(|e| kind(&e));
                same("open", got, self.model.open(&self.ids[*c], format, now))?;
            }
            Op::Complete(c) => {
                same("complete", lift(s.complete(&self.ids[*c], now).await), self.model.complete(&self.ids[*c], now))?
            }
            Op::Claim { limit, lease_ms } => {
                let w = worker(&format!("w{}", self.now));
                let lease = Duration::from_millis(*lease_ms as u64);
                let got = s.claim(&w, lease, *limit, now).await.map_err(|e| format!("claim failed: {e}"))?;
                let expect = self.model.claim(&w, *lease_ms, *limit, now);
                self.attempts.extend(expect.iter().map(Claim::attempt_ref));
                same("claim", got, expect)?;
            }
            Op::Heartbeat { attempt, lease_ms } => {
                let a = self.attempt(*attempt);
                let lease = Duration::from_millis(*lease_ms as u64);
                same("heartbeat", lift(s.heartbeat(&a, lease, now).await), self.model.heartbeat(&a, *lease_ms, now))?
            }
            Op::Succeed(i) => {
                let a = self.attempt(*i);
                let got = lift(s.record_success(&a, &result_for(&a.call_id), now).await);
                same("record_success", got, self.model.succeed(&a, now))?
            }
            Op::Fail { attempt, retry_in_ms } => {
                let a = self.attempt(*attempt);
                let f = AttemptFailure {
                    error: format!("error at {}", self.now),
                    retry_at: retry_in_ms.map(|ms| at(self.now + ms)),
                };
                same("record_failure", lift(s.record_failure(&a, &f, now).await), self.model.fail(&a, &f, now))?
            }
            Op::Release(i) => {
                let a = self.attempt(*i);
                same("release", lift(s.release(&a, now).await), self.model.release(&a, now))?
            }
            Op::Redrive(c) => {
                same("redrive", lift(s.redrive(&self.ids[*c], now).await), self.model.redrive(&self.ids[*c], now))?
            }
            Op::CompleteIdle { idle_ms, limit } => {
                let idle_since = at(self.now - idle_ms);
                let got = s.complete_idle(idle_since, *limit, now).await.map_err(|e| format!("idle failed: {e}"))?;
                let eligible: BTreeSet<CallId> = self
                    .model
                    .calls
                    .values()
                    .filter(|c| c.snap.state == CallState::InProgress && c.snap.last_packet_at < idle_since)
                    .map(|c| c.snap.call_id.clone())
                    .collect();
                // Which of the idle calls a limited sweep takes is the store's choice.
                let taken: BTreeSet<CallId> = got.iter().cloned().collect();
                same("complete_idle count", got.len(), eligible.len().min(*limit))?;
                same("complete_idle distinct", taken.len(), got.len())?;
                if !taken.is_subset(&eligible) {
                    return Err(format!("complete_idle took {taken:?}, eligible {eligible:?}"));
                }
                for id in &taken {
                    self.model.complete(id, now)?;
                }
            }
            Op::Advance(ms) => self.now += ms,
        }
        self.compare().await
    }

    async fn compare(&self) -> Result<(), String> {
        let s = self.store;
        for id in &self.ids {
            let got = s.get(id, MAX_RANGES).await.map(comparable).map_err(|e| kind(&e));
            let expect = self.model.calls.get(id).map(|c| comparable(c.snapshot())).ok_or_else(not_found);
            same(&format!("get {id}"), got, expect)?;
            let got = s
                .packets(id)
                .await
                .map(|p| p.into_iter().map(|p| ((p.channel, p.sequence), p.data)).collect::<Vec<_>>());
            let expect =
                self.model.calls.get(id).map(|c| c.packets.clone().into_iter().collect()).ok_or_else(not_found);
            same(&format!("packets {id}"), got.map_err(|e| kind(&e)), expect)?;
        }
        let due = s.next_due_at().await.map_err(|e| format!("next_due_at failed: {e}"))?;
        // Other cases' calls share the store but were all left with nothing due.
        same("next_due_at", due, self.model.next_due_at())?;
        let page = s
            .list(&ListQuery { state: None, limit: CALLS + 1, after: Some(id(&self.prefix_before())) })
            .await
            .map_err(|e| format!("list failed: {e}"))?;
        let listed: Vec<(CallId, CallState, OrderingCounters)> = page
            .calls
            .into_iter()
            .filter(|c| self.ids.contains(&c.call_id))
            .map(|c| (c.call_id, c.state, c.counters))
            .collect();
        let expect: Vec<_> = self
            .model
            .calls
            .values()
            .map(|c| (c.snap.call_id.clone(), c.snap.state, c.snap.ordering.counters))
            .collect();
        same("list", listed, expect)
    }

    /// A cursor just below this case's ids (`m07-` sorts before `m07-0`).
    fn prefix_before(&self) -> String {
        let first = self.ids[0].as_str();
        first[..first.len() - 1].to_owned()
    }

    /// Leaves nothing of this case due or IN_PROGRESS, so the next case's claims, idle
    /// sweeps and `next_due_at` see only its own calls.
    async fn finish(&mut self) -> Result<(), String> {
        for id in self.ids.clone() {
            if self.model.calls.contains_key(&id) {
                let got = self.store.complete(&id, at(self.now)).await.map_err(|e| kind(&e));
                same("final complete", got, self.model.complete(&id, at(self.now)))?;
            }
        }
        // Claim everything still pending (far in the future, so leases expired) and
        // settle each claim, leaving every call ARCHIVED, FAILED or IN_PROGRESS-free.
        let far = self.now + 1_000_000;
        let w = worker("finisher");
        let got = self.store.claim(&w, Duration::from_secs(1), 100, at(far)).await.map_err(|e| kind(&e))?;
        let expect = self.model.claim(&w, 1000, 100, at(far));
        same("final claim", got.clone(), expect)?;
        for c in got {
            self.store
                .record_success(&c.attempt_ref(), &result_for(&c.call_id), at(far))
                .await
                .map_err(|e| kind(&e))?;
            self.model.succeed(&c.attempt_ref(), at(far))?;
        }
        self.now = far;
        self.compare().await
    }
}

/// 32 random sequences of up to 40 operations (batches with duplicates and conflicts,
/// hang-ups, claims, heartbeats, successes, failures with and without retry, releases,
/// re-drives, idle sweeps, time advancing), each run against the store and a reference
/// model; every answer, every call's snapshot and packets, `next_due_at` and the listing
/// must agree after each step. Claims are compared exactly: due calls go oldest due
/// time first (lease expiry for a rescue, `next_attempt_at` otherwise), ties by id. A
/// limited idle sweep may take any of the idle calls. Each case uses its own call ids
/// (`mNN-k`) and settles its calls at the end, so all cases share one store.
pub async fn model_random_operation_sequences(store: Arc<dyn CallStore>) {
    let mut runner = TestRunner::default();
    let ops = proptest::collection::vec(op(), 1..=MAX_OPS);
    for case in 0..CASES {
        let ops = ops.new_tree(&mut runner).expect("generate operations").current();
        let ids = (0..CALLS).map(|k| id(&format!("m{case:02}-{k}"))).collect();
        let mut run =
            Case { store: &*store, model: Model::default(), ids, attempts: Vec::new(), now: case as i64 * 10_000_000 };
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = run.step(op).await {
                panic!("case {case}, step {i} ({op:?}): {e}\noperations: {ops:#?}");
            }
        }
        if let Err(e) = run.finish().await {
            panic!("case {case}, settling: {e}\noperations: {ops:#?}");
        }
    }
}
