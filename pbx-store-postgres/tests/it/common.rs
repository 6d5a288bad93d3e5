//! Helpers shared by the tests.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::prelude::*;
use pbx_core::store::PacketOutcome;
use pbx_store_postgres::PgCallStore;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

/// A fixed, whole-millisecond instant `ms` milliseconds after a base time.
pub(crate) fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_000 + ms).expect("valid test time")
}

pub(crate) fn id(s: &str) -> CallId {
    CallId::new(s).expect("valid test call id")
}

pub(crate) fn packet(call: &str, seq: i64) -> NewPacket {
    data_packet(call, seq, &format!("audio_{seq}"))
}

pub(crate) fn data_packet(call: &str, seq: i64, data: &str) -> NewPacket {
    NewPacket::new(id(call), Packet::new(seq, data, seq as f64 * 0.02).expect("valid test packet"))
}

/// Appends and unwraps every outcome.
pub(crate) async fn append_ok(store: &PgCallStore, batch: &[NewPacket], now: DateTime<Utc>) -> Vec<Appended> {
    store
        .append(batch, now)
        .await
        .expect("append")
        .into_iter()
        .map(|o: PacketOutcome| o.expect("packet accepted"))
        .collect()
}

/// The options of the test database, for extra pools and connections.
pub(crate) fn options(pool: &PgPool) -> PgConnectOptions {
    (*pool.connect_options()).clone()
}

/// A second, independent store on the same database (another process, in effect).
pub(crate) async fn other_store(pool: &PgPool) -> PgCallStore {
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options(pool))
        .await
        .expect("second pool");
    PgCallStore::new(pool)
}

/// A connection outside every store's pool, for administration.
pub(crate) async fn admin(pool: &PgPool) -> PgConnection {
    PgConnection::connect_with(&options(pool)).await.expect("admin connection")
}

/// Bounds a wait that should end promptly, so a broken wake-up fails instead of hanging.
pub(crate) async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
