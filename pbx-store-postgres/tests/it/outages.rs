//! Connection loss and an unreachable server surface as `Unavailable`, and the store
//! recovers by itself; wake-ups cross processes through LISTEN/NOTIFY, also after the
//! listening connection was killed.

use std::time::Duration;

use futures::FutureExt;
use pbx_core::prelude::*;
use pbx_core::store::{AttemptFailure, StoreError};
use pbx_store_postgres::{PgCallStore, PgStoreOptions};
use sqlx::PgPool;
use sqlx::postgres::PgConnection;

use crate::common::*;

/// Terminates the given backends (all of this database but the admin's when `None`)
/// and waits until they are gone, so the next use of their connections fails.
async fn terminate(admin: &mut PgConnection, pids: Option<Vec<i32>>) -> usize {
    let pids: Vec<i32> = match pids {
        Some(pids) => pids,
        None => sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut *admin)
        .await
        .unwrap(),
    };
    for pid in &pids {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut *admin).await.unwrap();
    }
    // Bounded: a terminated backend exits promptly; this is a condition, not a delay.
    for _ in 0..10_000 {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
            .bind(&pids)
            .fetch_one(&mut *admin)
            .await
            .unwrap();
        if alive == 0 {
            return pids.len();
        }
        tokio::task::yield_now().await;
    }
    panic!("terminated backends {pids:?} did not exit");
}

/// Retries `op` a bounded number of times: every failure must be `Unavailable`, and it
/// must succeed in the end. Returns how many attempts failed.
async fn eventually<T, F, Fut>(mut op: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    for failed in 0..20 {
        match op().await {
            Ok(_) => return failed,
            Err(StoreError::Unavailable { .. }) => continue,
            Err(other) => panic!("expected Unavailable or success, got {other:?}"),
        }
    }
    panic!("the store did not recover within 20 attempts");
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn terminated_connections_are_unavailable_then_recover(pool: PgPool) {
    // No ping before use, so a dead connection is used and its error is seen.
    let options = PgStoreOptions::default().max_connections(2).ping_after_idle(Duration::from_secs(3600));
    let store = PgCallStore::new(options.pool_options().connect_with(crate::common::options(&pool)).await.unwrap());
    append_ok(&store, &[packet("a", 1)], at(0)).await;
    let mut admin = admin(&pool).await;

    assert!(terminate(&mut admin, None).await >= 1);
    let err = store.ping().await.expect_err("the pooled connection is dead");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let (a, p2, p3) = (id("a"), [packet("a", 2)], [packet("a", 3)]);
    eventually(|| store.append(&p2, at(1))).await;

    // The same for a batch in flight on a dead connection, and the store's other paths.
    terminate(&mut admin, None).await;
    eventually(|| store.append(&p3, at(2))).await;
    terminate(&mut admin, None).await;
    eventually(|| store.complete(&a, at(3))).await;
    terminate(&mut admin, None).await;
    let w = WorkerId::new("w");
    eventually(|| store.claim(&w, Duration::from_secs(5), 1, at(4))).await;
    let snap = store.get(&id("a"), 10).await.unwrap();
    assert_eq!(snap.ordering.counters.received, 3, "every batch answered Ok is stored exactly once");
    assert_eq!(snap.state, CallState::ProcessingAi);
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn the_default_pool_recovers_after_termination(pool: PgPool) {
    let store = PgCallStore::new(pool.clone());
    append_ok(&store, &[packet("a", 1)], at(0)).await;
    let mut admin = admin(&pool).await;
    terminate(&mut admin, None).await;
    let (a, p2) = (id("a"), [packet("a", 2)]);
    eventually(|| store.get(&a, 1)).await;
    eventually(|| store.append(&p2, at(1))).await;
    assert_eq!(store.get(&id("a"), 1).await.unwrap().ordering.counters.received, 2);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on localhost: nothing listens, the connection is refused at once.
    let url = "postgres://postgres@127.0.0.1:1/postgres";
    let options = PgStoreOptions::default().acquire_timeout(Duration::from_millis(500));
    let err = PgCallStore::connect_with(url, options.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");

    let pool = options.pool_options().connect_lazy(url).unwrap();
    let store = PgCallStore::new(pool);
    let down = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
    down(store.ping().await);
    down(store.append(&[packet("a", 1)], at(0)).await.map(|_| ()));
    down(store.get(&id("a"), 1).await.map(|_| ()));
    down(store.claim(&WorkerId::new("w"), Duration::from_secs(1), 1, at(0)).await.map(|_| ()));
    down(store.migrate().await);
    down(store.listen().await);

    let err = PgCallStore::connect("not a url").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
}

/// `wait_for_work` has not resolved yet (polled once, then dropped: waits are cancel-safe).
fn assert_quiet(store: &PgCallStore) {
    assert!(store.wait_for_work().now_or_never().is_none(), "wait_for_work resolved without a notification");
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn every_call_that_falls_due_wakes_other_processes(pool: PgPool) {
    let listener = PgCallStore::new(pool.clone());
    let writer = other_store(&pool).await;
    listener.listen().await.unwrap();
    assert_quiet(&listener);
    let w = WorkerId::new("w");
    let lease = Duration::from_secs(60);

    append_ok(&writer, &[packet("a", 1), packet("b", 1)], at(0)).await;
    assert_quiet(&listener);
    writer.complete(&id("a"), at(1)).await.unwrap();
    within("hang-up", listener.wait_for_work()).await;
    assert_quiet(&listener);

    let claim = writer.claim(&w, lease, 1, at(2)).await.unwrap().remove(0);
    let retry = AttemptFailure { error: "later".into(), retry_at: Some(at(3)) };
    writer.record_failure(&claim.attempt_ref(), &retry, at(2)).await.unwrap();
    within("a scheduled retry", listener.wait_for_work()).await;
    assert_quiet(&listener);

    let claim = writer.claim(&w, lease, 1, at(3)).await.unwrap().remove(0);
    writer.release(&claim.attempt_ref(), at(4)).await.unwrap();
    within("a released lease", listener.wait_for_work()).await;
    assert_quiet(&listener);

    let claim = writer.claim(&w, lease, 1, at(5)).await.unwrap().remove(0);
    let give_up = AttemptFailure { error: "never".into(), retry_at: None };
    writer.record_failure(&claim.attempt_ref(), &give_up, at(5)).await.unwrap();
    writer.redrive(&id("a"), at(6)).await.unwrap();
    within("a re-drive", listener.wait_for_work()).await;
    assert_quiet(&listener);

    writer.complete_idle(at(1), 10, at(7)).await.unwrap();
    within("an idle hang-up", listener.wait_for_work()).await;
    assert_quiet(&listener);
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn the_listener_reconnects_after_its_connection_is_killed(pool: PgPool) {
    let listener = PgCallStore::new(pool.clone());
    let writer = other_store(&pool).await;
    listener.listen().await.unwrap();
    let mut admin = admin(&pool).await;
    // The work listener's connection only: `listen` also starts the event log's
    // sequencer, whose own `LISTEN pbx_events` connects in the background, at a moment
    // this test does not control.
    const LISTENERS: &str = "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%pbx_work%' AND pid <> pg_backend_pid()";
    let before: Vec<i32> = sqlx::query_scalar(LISTENERS).fetch_all(&mut admin).await.unwrap();
    assert_eq!(before.len(), 1, "one listening connection");
    terminate(&mut admin, Some(before.clone())).await;

    // The lost connection ends the wait (notifications may have been missed), and the
    // listener is back on a new connection.
    within("the listener to notice its connection died", listener.wait_for_work()).await;
    let after: Vec<i32> = sqlx::query_scalar(LISTENERS).fetch_all(&mut admin).await.unwrap();
    assert_eq!(after.len(), 1, "listening again");
    assert_ne!(after, before);
    assert_quiet(&listener);

    append_ok(&writer, &[packet("a", 1)], at(0)).await;
    writer.complete(&id("a"), at(1)).await.unwrap();
    within("a hang-up after the reconnect", listener.wait_for_work()).await;
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn waiting_starts_listening_by_itself(pool: PgPool) {
    let listener = PgCallStore::new(pool.clone());
    let writer = other_store(&pool).await;
    // The first wait connects and resolves (nothing was listening before it).
    within("the first wait", listener.wait_for_work()).await;
    assert_quiet(&listener);
    append_ok(&writer, &[packet("a", 1)], at(0)).await;
    writer.complete(&id("a"), at(1)).await.unwrap();
    within("a hang-up", listener.wait_for_work()).await;
}
