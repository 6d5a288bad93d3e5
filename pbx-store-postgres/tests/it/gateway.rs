//! The gateway and processor suite of pbx-core, over PostgreSQL.

pbx_core::gateway_conformance!(
    #[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
    setup(pool: sqlx::PgPool) => pbx_store_postgres::PgCallStore::new(pool)
);
