//! The store conformance suite of pbx-core: every case on its own fresh database.

pbx_core::call_store_conformance!(#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")] setup(pool: sqlx::PgPool) => pbx_store_postgres::PgCallStore::new(pool));
