//! Concurrent batches and claims: no deadlock, nothing lost, nothing handed out twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pbx_core::media::MediaFormat;
use pbx_core::prelude::*;
use pbx_store_postgres::PgCallStore;
use sqlx::PgPool;

use crate::common::*;

const CALLS: usize = 12;
const ROUNDS: i64 = 15;
const TASKS: i64 = 4;

/// Tasks append batches over the same (new) calls, half in ascending and half in
/// descending id order, each with its own sequences. If locks were taken in batch
/// order this deadlocks (PostgreSQL would abort one batch with 40P01).
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn overlapping_batches_in_opposite_orders_never_deadlock(pool: PgPool) {
    let stores = [Arc::new(PgCallStore::new(pool.clone())), Arc::new(other_store(&pool).await)];
    let calls: Vec<String> = (0..CALLS).map(|i| format!("call-{i:02}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = stores[task as usize % 2].clone();
        let mut order = calls.clone();
        if task % 2 == 1 {
            order.reverse();
        }
        tasks.spawn(async move {
            let mut created = Vec::new();
            for round in 0..ROUNDS {
                let seq = 1 + task + round * TASKS; // disjoint across tasks
                let batch: Vec<_> = order.iter().map(|c| packet(c, seq)).collect();
                let outcomes = store.append(&batch, at(round)).await.expect("batch stored");
                for (p, o) in batch.iter().zip(outcomes) {
                    let appended = o.expect("packet accepted");
                    assert!(!appended.is_duplicate());
                    if appended.created_call {
                        created.push(p.call_id.clone());
                    }
                }
            }
            created
        });
    }
    let mut created = Vec::new();
    while let Some(done) = tasks.join_next().await {
        created.extend(done.expect("task"));
    }
    created.sort();
    let mut expected: Vec<CallId> = calls.iter().map(|c| id(c)).collect();
    expected.sort();
    assert_eq!(created, expected, "each call created exactly once");
    for c in &calls {
        let snap = stores[0].get(&id(c), 10).await.unwrap();
        let total = (TASKS * ROUNDS) as u64;
        assert_eq!(snap.ordering.counters.received, total, "{c}");
        assert_eq!(snap.ordering.counters.highest, total, "{c}");
        assert_eq!(snap.ordering.counters.duplicates, 0, "{c}");
        assert!(snap.ordering.missing_ranges.is_empty(), "{c}");
        assert_eq!(stores[0].packets(&id(c)).await.unwrap().len() as u64, total, "{c}");
    }
}

/// The same packets sent by several writers at once: each is stored once, every other
/// copy is a duplicate, and the counters add up.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn racing_retransmissions_are_stored_once(pool: PgPool) {
    race_retransmissions(&pool, 1).await;
}

/// The same with calls that exist: one racer stores each packet, the others find it
/// stored once they hold the locks, and answer duplicates.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn racing_retransmissions_on_existing_calls_are_stored_once(pool: PgPool) {
    let store = PgCallStore::new(pool.clone());
    append_ok(&store, &[packet("x", 1), packet("y", 1)], at(0)).await;
    race_retransmissions(&pool, 2).await;
}

/// Four tasks over two pools append the same batch (sequences `first..=20` of calls `x`
/// and `y`) at once.
async fn race_retransmissions(pool: &PgPool, first: i64) {
    let stores = [Arc::new(PgCallStore::new(pool.clone())), Arc::new(other_store(pool).await)];
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        let store = stores[task % 2].clone();
        tasks.spawn(async move {
            let batch: Vec<_> = (first..=20).flat_map(|s| [packet("x", s), packet("y", s)]).collect();
            store.append(&batch, at(0)).await.expect("batch stored")
        });
    }
    let mut stored = 0;
    let mut duplicates = 0;
    while let Some(done) = tasks.join_next().await {
        for o in done.expect("task") {
            if o.expect("accepted").is_duplicate() {
                duplicates += 1;
            } else {
                stored += 1;
            }
        }
    }
    let per_call = 21 - first;
    assert_eq!((stored, duplicates), (2 * per_call, 6 * per_call));
    for c in ["x", "y"] {
        let counters = stores[0].get(&id(c), 1).await.unwrap().ordering.counters;
        assert_eq!((counters.received, counters.duplicates), (20, 3 * per_call as u64));
        assert_eq!(stores[0].packets(&id(c)).await.unwrap().len(), 20);
    }
}

/// Eight workers over two pools claim 200 due calls in small bites: each call goes to
/// exactly one of them.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn claim_under_contention_hands_each_call_to_one_worker(pool: PgPool) {
    let stores = [Arc::new(PgCallStore::new(pool.clone())), Arc::new(other_store(&pool).await)];
    let batch: Vec<_> = (0..200).map(|i| packet(&format!("c{i:03}"), 1)).collect();
    append_ok(&stores[0], &batch, at(0)).await;
    assert_eq!(stores[0].complete_idle(at(1), 1000, at(2)).await.unwrap().len(), 200);

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = stores[worker % 2].clone();
        tasks.spawn(async move {
            let me = WorkerId::new(format!("w{worker}"));
            let mut mine = Vec::new();
            loop {
                let claims = store.claim(&me, Duration::from_secs(60), 7, at(10)).await.expect("claim");
                if claims.is_empty() {
                    return mine;
                }
                mine.extend(claims.into_iter().map(|c| (c.call_id, c.attempt)));
            }
        });
    }
    let mut owners: HashMap<CallId, usize> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        for (call, attempt) in done.expect("worker") {
            assert_eq!(attempt, 1);
            *owners.entry(call).or_default() += 1;
        }
    }
    assert_eq!(owners.len(), 200, "every call claimed");
    assert!(owners.values().all(|n| *n == 1), "no call claimed twice");
    let leased: HashSet<_> = owners.keys().collect();
    assert_eq!(leased.len(), 200);
    assert_eq!(stores[0].next_due_at().await.unwrap(), Some(at(60_010)));
}

/// Declaring a call and appending its first packets race to create it: neither fails,
/// exactly one says it created the call, and the call ends up with both the format and
/// the packets.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn open_racing_the_first_append_creates_the_call_once(pool: PgPool) {
    let stores = [Arc::new(PgCallStore::new(pool.clone())), Arc::new(other_store(&pool).await)];
    let format: MediaFormat = "l16/16000/2".parse().unwrap();
    for round in 0..20 {
        let call = format!("race-{round:02}");
        let (opener, appender) = (stores[round % 2].clone(), stores[(round + 1) % 2].clone());
        let opened = {
            let call = id(&call);
            tokio::spawn(async move { opener.open(&call, format, at(0)).await })
        };
        let batch = vec![packet(&call, 1), packet(&call, 2)];
        let appended = tokio::spawn(async move { appender.append(&batch, at(0)).await });
        let opened = opened.await.unwrap().expect("open");
        let appended = appended.await.unwrap().expect("append");
        let created_by_append = appended[0].as_ref().expect("accepted").created_call;
        assert!(opened.created != created_by_append, "round {round}: {opened:?}, {appended:?}");
        assert!(!appended[1].as_ref().expect("accepted").created_call);
        let snap = stores[0].get(&id(&call), 1).await.unwrap();
        assert_eq!((snap.media_format, snap.ordering.counters.received), (Some(format), 2));
    }
}

/// A batch that finds a call missing, then waits to create it while another transaction
/// creates it and commits, must not lock it out of order: the append runs again (nothing
/// of the first try stored) and finds it. Staged with an open transaction, so the race
/// happens every time.
#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn a_call_created_while_a_batch_waits_to_create_it_is_found_on_the_retry(pool: PgPool) {
    use sqlx::Connection;
    let store = Arc::new(PgCallStore::new(pool.clone()));
    append_ok(&store, &[packet("e", 1)], at(0)).await;
    let mut creator = admin(&pool).await;
    let mut tx = creator.begin().await.unwrap();
    sqlx::query("INSERT INTO calls (call_id, created_at, updated_at, last_packet_at) VALUES ('n', $1, $1, $1)")
        .bind(at(1))
        .execute(&mut *tx)
        .await
        .unwrap();
    let appending = {
        let store = store.clone();
        tokio::spawn(async move { store.append(&[packet("e", 2), packet("n", 1)], at(2)).await })
    };
    // Wait until the batch waits for the uncommitted row.
    let mut watcher = admin(&pool).await;
    within("the batch to wait for the row", async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%pbx_append%'",
            )
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    tx.commit().await.unwrap();
    let out = appending.await.unwrap().expect("the retry stores the batch");
    let out: Vec<_> = out.into_iter().map(|o| o.expect("accepted")).collect();
    assert_eq!(
        out.iter().map(|a| (a.order, a.created_call)).collect::<Vec<_>>(),
        [(pbx_core::ordering::PacketOrder::InOrder, false), (pbx_core::ordering::PacketOrder::InOrder, false),]
    );
    assert_eq!(store.get(&id("e"), 1).await.unwrap().ordering.counters.received, 2);
    let n = store.get(&id("n"), 1).await.unwrap();
    assert_eq!((n.ordering.counters.received, n.created_at), (1, at(1)));
}
