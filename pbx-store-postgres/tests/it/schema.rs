//! The schema guards itself, and migrations are repeatable.

use pbx_core::store::CallStore;
use pbx_store_postgres::{MIGRATOR, PgCallStore};
use sqlx::PgPool;

use crate::common::*;

/// Runs raw SQL that must be refused by a CHECK or foreign-key constraint.
async fn refused(pool: &PgPool, sql: &'static str, constraint_kind: sqlx::error::ErrorKind) {
    let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
    let db = err.as_database_error().unwrap_or_else(|| panic!("{sql}: not a database error: {err}"));
    assert_eq!(db.kind(), constraint_kind, "{sql}: {db}");
}

const CALL: &str =
    "INSERT INTO calls (call_id, created_at, updated_at, last_packet_at) VALUES ('ok', now(), now(), now())";

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn constraints_refuse_bad_rows_when_the_code_is_bypassed(pool: PgPool) {
    use sqlx::error::ErrorKind::{CheckViolation, ForeignKeyViolation};
    sqlx::query(CALL).execute(&pool).await.expect("a good row is accepted");
    let checks: &[&'static str] = &[
        "INSERT INTO calls (call_id, state, created_at, updated_at, last_packet_at) VALUES ('x', 'DONE', now(), now(), now())",
        "INSERT INTO calls (call_id, created_at, updated_at, last_packet_at) VALUES ('bad id', now(), now(), now())",
        "INSERT INTO calls (call_id, created_at, updated_at, last_packet_at) VALUES ('', now(), now(), now())",
        "UPDATE calls SET call_id = 'bad id'",
        "UPDATE calls SET received = -1",
        "UPDATE calls SET received = 5, highest_sequence = 4",
        "UPDATE calls SET attempts = -1",
        "UPDATE calls SET lease_owner = 'w'",
        "UPDATE calls SET state = 'COMPLETED'",
        "UPDATE calls SET state = 'ARCHIVED', completed_at = now(), finished_at = now()",
        "UPDATE calls SET state = 'COMPLETED', completed_at = now(), next_attempt_at = now(), sentiment_label = 'HAPPY'",
        "INSERT INTO packets VALUES ('ok', 0, 'd', 1.0, now())",
        "INSERT INTO packets VALUES ('ok', -5, 'd', 1.0, now())",
        "INSERT INTO packets VALUES ('ok', 1, 'd', -1.0, now())",
        "INSERT INTO packets VALUES ('ok', 1, 'd', 'NaN', now())",
        "INSERT INTO packets VALUES ('ok', 1, 'd', 'Infinity', now())",
    ];
    for sql in checks {
        refused(&pool, sql, CheckViolation).await;
    }
    refused(&pool, "INSERT INTO packets VALUES ('nope', 1, 'd', 1.0, now())", ForeignKeyViolation).await;
    let err = sqlx::query("INSERT INTO packets VALUES ('ok', 1, 'd', 1.0, now()), ('ok', 1, 'e', 1.0, now())")
        .execute(&pool)
        .await
        .unwrap_err();
    assert_eq!(err.as_database_error().map(|e| e.kind()), Some(sqlx::error::ErrorKind::UniqueViolation));
}

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn a_constraint_violation_is_a_backend_error(pool: PgPool) {
    let store = PgCallStore::new(pool.clone());
    append_ok(&store, &[packet("a", 1)], at(0)).await;
    // Sabotage the row so the next legitimate update breaks a constraint.
    sqlx::query("ALTER TABLE calls ADD CONSTRAINT no_more CHECK (received < 2)").execute(&pool).await.unwrap();
    let err = store.append(&[packet("a", 2)], at(1)).await.unwrap_err();
    assert!(matches!(err, pbx_core::store::StoreError::Backend { .. }), "{err}");
    assert!(!err.is_retryable());
    // Nothing of the failed batch was stored.
    assert_eq!(store.packets(&id("a")).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn migrations_run_twice_cleanly(pool: PgPool) {
    let store = PgCallStore::new(pool.clone());
    store.migrate().await.expect("first run");
    store.migrate().await.expect("second run is a no-op");
    MIGRATOR.run(&pool).await.expect("and again through the migrator");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
    append_ok(&store, &[packet("a", 1)], at(0)).await;
}

#[sqlx::test(migrations = false)]
async fn concurrent_migrations_do_not_collide(pool: PgPool) {
    let a = PgCallStore::new(pool.clone());
    let b = other_store(&pool).await;
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first migrator");
    rb.expect("second migrator");
    append_ok(&b, &[packet("a", 1)], at(0)).await;
}
