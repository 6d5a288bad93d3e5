//! Operators' figures: calls per state (one aggregate over the calls table) and the
//! pool's use.

use pbx_core::state::CallState;
use pbx_core::store::{PoolStats, StoreError};
use sqlx::PgPool;

use crate::error::store_error;
use crate::rows;

/// One row per state that has calls.
pub(crate) async fn count_by_state(pool: &PgPool) -> Result<Vec<(CallState, u64)>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, count(*) FROM calls GROUP BY state")
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    rows.into_iter().map(|(state, n)| Ok((rows::state("(count by state)", &state)?, n.max(0) as u64))).collect()
}

pub(crate) fn pool_stats(pool: &PgPool) -> PoolStats {
    PoolStats { size: pool.size(), idle: pool.num_idle() as u32, max: pool.options().get_max_connections() }
}
