//! The schema guards itself, and migrations are repeatable.

use std::borrow::Cow;

use pbx_core::ordering::{OrderingCounters, PacketOrder};
use pbx_core::packet::Payload;
use pbx_core::store::{Appended, CallStore, PacketRejection};
use pbx_store_postgres::{MIGRATOR, PgCallStore};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

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
        "INSERT INTO packets VALUES ('ok', 0, 'd', 1.0, now(), 0, false)",
        "INSERT INTO packets VALUES ('ok', -5, 'd', 1.0, now(), 0, false)",
        "INSERT INTO packets VALUES ('ok', 1, 'd', -1.0, now(), 0, false)",
        "INSERT INTO packets VALUES ('ok', 1, 'd', 'NaN', now(), 0, false)",
        "INSERT INTO packets VALUES ('ok', 1, 'd', 'Infinity', now(), 0, false)",
        "INSERT INTO packets VALUES ('ok', 1, 'd', 1.0, now(), 2, false)",
        "INSERT INTO packets VALUES ('ok', 1, 'd', 1.0, now(), -1, false)",
        "INSERT INTO call_channels VALUES ('ok', 0, 0, 0, 0, 0)",
        "INSERT INTO call_channels VALUES ('ok', 2, 0, 0, 0, 0)",
        "INSERT INTO call_channels VALUES ('ok', 1, 2, 1, 0, 0)",
        "INSERT INTO call_channels VALUES ('ok', 1, 2, 2, 0, 3)",
        "INSERT INTO call_channels VALUES ('ok', 1, 0, 0, -1, 0)",
        "UPDATE calls SET media_format = 'mulaw/8001/1'",
        "UPDATE calls SET media_format = 'opus/48000/2'",
        "UPDATE calls SET media_format = 'mulaw/8000/3'",
        "UPDATE calls SET ai_details = '{}'",
        "INSERT INTO calls (call_id, media_format, created_at, updated_at, last_packet_at) VALUES ('f', 'MULAW/8000/1', now(), now(), now())",
    ];
    for sql in checks {
        refused(&pool, sql, CheckViolation).await;
    }
    sqlx::query("UPDATE calls SET media_format = 'l16/44100/2'")
        .execute(&pool)
        .await
        .expect("a good format is accepted");
    sqlx::query(
        "INSERT INTO packets VALUES ('ok', 1, 'd', 1.0, now(), 0, false), ('ok', 1, 'd', 1.0, now(), 1, false)",
    )
    .execute(&pool)
    .await
    .expect("channels have their own sequences");
    refused(&pool, "INSERT INTO packets VALUES ('nope', 1, 'd', 1.0, now(), 0, false)", ForeignKeyViolation).await;
    refused(&pool, "INSERT INTO call_channels VALUES ('nope', 1, 0, 0, 0, 0)", ForeignKeyViolation).await;
    let err = sqlx::query(
        "INSERT INTO packets VALUES ('ok', 1, 'd', 1.0, now(), 0, false), ('ok', 1, 'e', 1.0, now(), 0, true)",
    )
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

/// The migrations before the media model (channels, byte payloads, formats).
const BEFORE_MEDIA_MODEL: i64 = 20261202170000;

/// Packets stored before the media model keep their data: a `data` string that is
/// canonical base64 becomes those bytes as audio, anything else its UTF-8 as text, the
/// rule the gateway applies to every JSON `data` now. Each reads back as the string that
/// was stored, a retransmission of it after the upgrade is a duplicate, and the call
/// goes on counting on channel 0.
#[sqlx::test(migrations = false)]
async fn the_media_model_migration_keeps_existing_packets(pool: PgPool) {
    let before = Migrator {
        migrations: Cow::Owned(MIGRATOR.iter().filter(|m| m.version < BEFORE_MEDIA_MODEL).cloned().collect()),
        ..Migrator::DEFAULT
    };
    assert!(before.iter().count() < MIGRATOR.iter().count());
    before.run(&pool).await.expect("old schema");
    let long = "QUFB".repeat(40); // 160 bytes, longer than one line of PostgreSQL's base64
    let old: [(i64, &str); 7] =
        [(1, "audio_chunk_1"), (2, "AAEC"), (3, "ab=="), (4, ""), (5, &long), (6, "aGk"), (7, "ü")];
    sqlx::query(CALL).execute(&pool).await.unwrap();
    for (seq, data) in old {
        sqlx::query("INSERT INTO packets VALUES ('ok', $1, $2, 1.0, now())")
            .bind(seq)
            .bind(data)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE calls SET received = 7, highest_sequence = 7").execute(&pool).await.unwrap();
    MIGRATOR.run(&pool).await.expect("the rest");

    let store = PgCallStore::new(pool.clone());
    let packets = store.packets(&id("ok")).await.unwrap();
    let got: Vec<(u8, u64, String)> =
        packets.iter().map(|p| (p.channel, p.sequence, p.data.to_base64_or_text())).collect();
    let expect: Vec<(u8, u64, String)> = old.iter().map(|(s, d)| (0, *s as u64, d.to_string())).collect();
    assert_eq!(got, expect, "every packet reads back as stored");
    let kinds: Vec<bool> = packets.iter().map(|p| p.data.is_text()).collect();
    assert_eq!(kinds, [true, false, true, false, false, true, true]);
    assert_eq!(packets[1].data, Payload::Audio(vec![0u8, 1, 2].into()));

    let resent: Vec<_> = old.iter().map(|(s, d)| data_packet("ok", *s, d)).collect();
    let out = store.append(&resent, at(0)).await.unwrap();
    let dup = Ok(Appended { order: PacketOrder::Duplicate, created_call: false });
    assert!(out.iter().all(|o| *o == dup), "{out:?}");
    let out = store.append(&[data_packet("ok", 2, "audio_2"), data_packet("ok", 8, "AAEC")], at(1)).await.unwrap();
    assert_eq!(out[0], Err(PacketRejection::Conflict { call_id: id("ok"), sequence: 2 }));
    assert_eq!(out[1], Ok(Appended { order: PacketOrder::InOrder, created_call: false }));
    let snap = store.get(&id("ok"), 10).await.unwrap();
    assert_eq!(snap.ordering.counters, OrderingCounters { received: 8, highest: 8, duplicates: 7, out_of_order: 0 });
    assert_eq!(snap.media_format, None);
}
