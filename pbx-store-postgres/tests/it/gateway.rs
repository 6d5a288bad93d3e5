//! The gateway and processor suite of pbx-core, over PostgreSQL.
//!
//! Each store listens for `pbx_work` before the case starts, as the server's does
//! before it starts its processor: a processor then wakes only for work, never for the
//! listener connecting (which `processor_wakes_on_hang_up` would take for a wake-up).

pbx_core::gateway_conformance!(
    #[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
    setup(pool: sqlx::PgPool) => {
        let store = pbx_store_postgres::PgCallStore::new(pool);
        store.listen().await.expect("LISTEN pbx_work");
        store
    }
);
