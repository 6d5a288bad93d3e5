//! Declaring a call and its media format ([`pbx_core::store::CallStore::open`]): one
//! statement, `pbx_open` (created by the migrations), one round trip.

use chrono::{DateTime, Utc};
use pbx_core::id::CallId;
use pbx_core::media::MediaFormat;
use pbx_core::store::{Opened, StoreError};
use sqlx::PgPool;

use crate::error::{CorruptRow, store_error};
use crate::rows;

const OPEN: &str = "SELECT created, state, declared FROM pbx_open($1, $2, $3)";

/// Creates the call with `format`, or declares `format` for a call that has none; a
/// call with another format is [`StoreError::FormatConflict`] and is left as it was.
pub(crate) async fn open(
    pool: &PgPool,
    call_id: &CallId,
    format: MediaFormat,
    now: DateTime<Utc>,
) -> Result<Opened, StoreError> {
    let id = call_id.as_str();
    let (created, state, declared): (bool, Option<String>, Option<String>) =
        sqlx::query_as(OPEN).bind(id).bind(format.to_string()).bind(now).fetch_one(pool).await.map_err(store_error)?;
    let state = rows::state(id, state.as_deref().unwrap_or_default())?;
    if let Some(declared) = declared {
        let declared: MediaFormat =
            declared.parse().map_err(|e| CorruptRow::error(id, format!("media_format: {e}")))?;
        if declared != format {
            return Err(StoreError::FormatConflict { call_id: call_id.clone(), declared, requested: format });
        }
    }
    Ok(Opened { created, state })
}
