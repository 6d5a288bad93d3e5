//! Integration tests of `PgCallStore` against a real PostgreSQL.
//!
//! Every test runs on a fresh database that `#[sqlx::test]` creates on the server
//! `DATABASE_URL` names (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and
//! migrates with `pbx_store_postgres::MIGRATOR`. Without `DATABASE_URL` or with the
//! server down, the tests fail; they never skip.

mod basics;
mod common;
mod concurrency;
mod conformance;
mod gateway;
mod model;
mod outages;
mod round_trips;
mod schema;
