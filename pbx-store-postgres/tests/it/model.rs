//! Differential test: random operation sequences applied to `PgCallStore` and to the
//! in-memory store (the model, itself checked by the conformance suite) must give the
//! same answers and leave the same calls behind, step by step.

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::ai::{AiResult, ChannelSentiment, Segment, Sentiment, SentimentLabel};
use pbx_core::media::{AudioStats, MediaFormat};
use pbx_core::packet::Payload;
use pbx_core::prelude::*;
use pbx_core::store::{AttemptFailure, AttemptRef, ListQuery, StoreError};
use pbx_store_memory::MemoryCallStore;
use pbx_store_postgres::PgCallStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::common::*;

/// Call ids, in a window that slides along as the run goes, so new calls keep coming
/// while older ones move through hang-up and AI work.
const IDS: [&str; 12] = ["a", "B", "a-1", "b", "_", "A", "a.b", "0", "z", "Z:9", "a-2", "c"];
const WINDOW: usize = 5;
const STEPS: usize = 250;

/// A result in comparable form: the value, or the error's variant and its fields.
fn norm<T: Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Ok(value) => format!("Ok({value:?})"),
        Err(StoreError::NotFound { call_id }) => format!("NotFound({call_id})"),
        Err(StoreError::Fenced { call_id, attempt }) => format!("Fenced({call_id}, {attempt})"),
        Err(StoreError::InvalidTransition { call_id, source }) => format!("InvalidTransition({call_id}, {source:?})"),
        Err(StoreError::InvalidArgument(_)) => "InvalidArgument".to_owned(),
        Err(StoreError::FormatConflict { call_id, declared, requested }) => {
            format!("FormatConflict({call_id}, {declared}, {requested})")
        }
        Err(other) => panic!("unexpected store failure: {other:?}"),
    }
}

struct Run {
    rng: StdRng,
    now: DateTime<Utc>,
    attempts: Vec<AttemptRef>,
    step: usize,
}

impl Run {
    fn call_str(&mut self) -> &'static str {
        let lo = (self.step * (IDS.len() - WINDOW) / STEPS).min(IDS.len() - WINDOW);
        IDS[self.rng.random_range(lo..lo + WINDOW)]
    }

    fn call(&mut self) -> CallId {
        id(self.call_str())
    }

    fn attempt(&mut self) -> AttemptRef {
        if self.attempts.is_empty() || self.rng.random_bool(0.1) {
            AttemptRef { call_id: self.call(), attempt: self.rng.random_range(0..4) }
        } else {
            // Recent attempts are the live ones; older ones are usually stale.
            let n = self.attempts.len();
            let back = self.rng.random_range(0..n.min(4));
            self.attempts[n - 1 - back].clone()
        }
    }

    /// Packets on both channels with every kind of payload: the usual text, other text
    /// (a conflict), audio, and audio with the usual text's bytes (a conflict of kind).
    fn batch(&mut self) -> Vec<NewPacket> {
        (0..self.rng.random_range(1..8))
            .map(|_| {
                let call = self.call_str();
                let seq = self.rng.random_range(1..12);
                let channel = i64::from(self.rng.random_bool(0.25));
                let data = match self.rng.random_range(0..20) {
                    0..2 => Payload::Text("other".into()),
                    2..4 => Payload::Audio(format!("audio_{seq}").into_bytes().into()),
                    4..7 => Payload::Audio(vec![seq as u8; 3].into()),
                    _ => Payload::Text(format!("audio_{seq}").into()),
                };
                let packet = Packet::new(seq, data, seq as f64 * 0.02).unwrap().on_channel(channel).unwrap();
                NewPacket::new(id(call), packet)
            })
            .collect()
    }
}

async fn step(run: &mut Run, pg: &PgCallStore, mem: &MemoryCallStore) -> String {
    run.now += chrono::Duration::milliseconds(run.rng.random_range(0..4_000));
    let now = run.now;
    let lease = Duration::from_secs(10);
    let op = run.rng.random_range(0..100);
    let (what, a, b) = match op {
        0..32 => {
            let batch = run.batch();
            ("append", norm(pg.append(&batch, now).await), norm(mem.append(&batch, now).await))
        }
        32..35 => {
            let call = run.call();
            let format: MediaFormat =
                ["mulaw/8000/1", "l16/16000/2", "alaw/8000/1"][run.rng.random_range(0..3)].parse().unwrap();
            ("open", norm(pg.open(&call, format, now).await), norm(mem.open(&call, format, now).await))
        }
        35..41 => {
            let call = run.call();
            ("complete", norm(pg.complete(&call, now).await), norm(mem.complete(&call, now).await))
        }
        41..57 => {
            let worker = WorkerId::new(format!("w{}", run.rng.random_range(0..3)));
            let limit = run.rng.random_range(0..4);
            let a = pg.claim(&worker, lease, limit, now).await;
            let b = mem.claim(&worker, lease, limit, now).await;
            if let Ok(claims) = &a {
                run.attempts.extend(claims.iter().map(|c| c.attempt_ref()));
            }
            ("claim", norm(a), norm(b))
        }
        57..63 => {
            let at = run.attempt();
            ("heartbeat", norm(pg.heartbeat(&at, lease, now).await), norm(mem.heartbeat(&at, lease, now).await))
        }
        63..69 => {
            let at = run.attempt();
            let result = result(&mut run.rng, at.attempt);
            let a = pg.record_success(&at, &result, now).await;
            ("success", norm(a), norm(mem.record_success(&at, &result, now).await))
        }
        69..77 => {
            let at = run.attempt();
            let retry_at = run.rng.random_bool(0.6).then(|| now + chrono::Duration::milliseconds(1_500));
            let failure = AttemptFailure { error: format!("e{}", at.attempt), retry_at };
            let a = pg.record_failure(&at, &failure, now).await;
            ("failure", norm(a), norm(mem.record_failure(&at, &failure, now).await))
        }
        77..81 => {
            let at = run.attempt();
            ("release", norm(pg.release(&at, now).await), norm(mem.release(&at, now).await))
        }
        81..86 => {
            let since = now - chrono::Duration::milliseconds(run.rng.random_range(0..10_000));
            let limit = run.rng.random_range(0..3);
            let a = pg.complete_idle(since, limit, now).await;
            ("idle", norm(a), norm(mem.complete_idle(since, limit, now).await))
        }
        86..91 => {
            let call = run.call();
            ("redrive", norm(pg.redrive(&call, now).await), norm(mem.redrive(&call, now).await))
        }
        91..94 => ("next_due_at", norm(pg.next_due_at().await), norm(mem.next_due_at().await)),
        _ => {
            let state = run.rng.random_bool(0.5).then(|| CallState::ALL[run.rng.random_range(0..5)]);
            let after = run.rng.random_bool(0.5).then(|| run.call());
            let query = ListQuery { state, limit: run.rng.random_range(0..4), after };
            (
                "list",
                norm(pg.list(&query).await.map(|p| (p.calls, p.next))),
                norm(mem.list(&query).await.map(|p| (p.calls, p.next))),
            )
        }
    };
    assert_eq!(a, b, "{what} differs at {now}");
    what.to_owned()
}

/// A result with or without details (segments, per-channel sentiment, audio stats).
fn result(rng: &mut StdRng, attempt: u32) -> AiResult {
    let mut result = AiResult::new(format!("t{attempt}"), Sentiment { label: SentimentLabel::Negative, score: -0.25 });
    if rng.random_bool(0.5) {
        result.segments = vec![
            Segment { start: 0.0, end: 0.1, text: "hello".into(), channel: Some(0) },
            Segment { start: 1.0 / 3.0, end: 12.345_678_9, text: "ünïcode \"quoted\"".into(), channel: None },
        ];
        result.channel_sentiment =
            vec![ChannelSentiment { channel: 1, sentiment: Sentiment { label: SentimentLabel::Positive, score: 0.1 } }];
        result.audio = Some(AudioStats { frames: attempt.into(), gaps: 2, undecodable: 1, resized: 0 });
    }
    result
}

async fn same_calls(pg: &PgCallStore, mem: &MemoryCallStore, context: &str) {
    for call in IDS.map(id) {
        let max = 2;
        assert_eq!(norm(pg.get(&call, max).await), norm(mem.get(&call, max).await), "{context}: get {call}");
        assert_eq!(norm(pg.packets(&call).await), norm(mem.packets(&call).await), "{context}: packets {call}");
        for (channel, after, limit) in [(0, 0, 3), (0, 3, 1000), (1, 0, 1000), (1, 5, 2)] {
            assert_eq!(
                norm(pg.packet_page(&call, channel, after, limit).await),
                norm(mem.packet_page(&call, channel, after, limit).await),
                "{context}: page {channel}/{after}/{limit} of {call}"
            );
        }
    }
}

async fn replay(pool: PgPool, seed: u64) {
    let pg = PgCallStore::new(pool);
    let mem = MemoryCallStore::new();
    let mut run = Run { rng: StdRng::seed_from_u64(seed), now: at(0), attempts: Vec::new(), step: 0 };
    for i in 0..STEPS {
        run.step = i;
        let what = step(&mut run, &pg, &mem).await;
        same_calls(&pg, &mem, &format!("seed {seed}, step {i} ({what})")).await;
    }
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn random_operations_match_the_memory_store_seed_1(pool: PgPool) {
    replay(pool, 1).await;
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn random_operations_match_the_memory_store_seed_2(pool: PgPool) {
    replay(pool, 2).await;
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn random_operations_match_the_memory_store_seed_3(pool: PgPool) {
    replay(pool, 3).await;
}
