//! Stream notes ([`pbx_core::media::notes`]): `call_stream_notes`, one row per note.

use chrono::{DateTime, Utc};
use pbx_core::id::CallId;
use pbx_core::media::notes::StreamNote;
use pbx_core::store::StoreError;
use sqlx::PgPool;

use crate::error::store_error;

/// Touches the call (locking its row, so notes of one call are counted one at a time)
/// while it holds fewer than `$5` notes of kind `$2`, then inserts the note. No row:
/// the call is unknown or full.
const NOTE: &str = r#"
WITH c AS (
    UPDATE calls SET updated_at = $4
    WHERE call_id = $1
      AND (SELECT count(*) FROM call_stream_notes AS n WHERE n.call_id = $1 AND n.kind = $2) < $5
    RETURNING call_id
)
INSERT INTO call_stream_notes (call_id, kind, note)
SELECT c.call_id, $2, $3::jsonb FROM c
RETURNING id
"#;

pub(crate) async fn note(
    pool: &PgPool,
    call_id: &CallId,
    note: &StreamNote,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let json = note.to_json()?;
    let inserted: Option<(i64,)> = sqlx::query_as(NOTE)
        .bind(call_id.as_str())
        .bind(note.kind())
        .bind(json)
        .bind(now)
        .bind(note.limit() as i64)
        .fetch_optional(pool)
        .await
        .map_err(store_error)?;
    if inserted.is_some() {
        return Ok(());
    }
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM calls WHERE call_id = $1)")
        .bind(call_id.as_str())
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    Err(if exists { note.over_limit() } else { StoreError::NotFound { call_id: call_id.clone() } })
}
