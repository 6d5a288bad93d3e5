//! Hang-ups and AI work: claims with leases, fenced outcomes, idle sweeps, re-drives.
//!
//! Each operation is one transaction (most are one statement). Every call that becomes
//! due notifies `pbx_work` in the same transaction, so listeners hear of it exactly when
//! it is committed. State changes come from [`pbx_core::state::transition`]; where a
//! statement changes many rows at once, the source states in its `WHERE` clause are the
//! ones the state machine allows (checked by the unit tests below).

use std::time::Duration;

use chrono::{DateTime, Utc};
use pbx_core::ai::AiResult;
use pbx_core::id::{CallId, WorkerId};
use pbx_core::state::{CallState, Transition, Trigger, transition};
use pbx_core::store::{AttemptFailure, AttemptRef, Claim, StoreError};
use sqlx::PgPool;

use crate::error::store_error;
use crate::rows;

/// The channel every wake-up is sent on.
pub(crate) const CHANNEL: &str = "pbx_work";

/// `now + lease`, saturating instead of overflowing.
pub(crate) fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A `usize` limit as a SQL `LIMIT`.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn invalid(call_id: &CallId, source: pbx_core::state::InvalidTransition) -> StoreError {
    StoreError::InvalidTransition { call_id: call_id.clone(), source }
}

/// The transition a trigger makes from a state the SQL already guarantees.
fn static_transition(from: CallState, trigger: Trigger) -> Result<Transition, StoreError> {
    transition(from, trigger).map_err(StoreError::backend)
}

const LOCK_STATE: &str = "SELECT state FROM calls WHERE call_id = $1 FOR UPDATE";

/// Locks a call's row inside `tx` and returns its state.
async fn locked_state(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    call_id: &CallId,
) -> Result<CallState, StoreError> {
    let state: Option<String> =
        sqlx::query_scalar(LOCK_STATE).bind(call_id.as_str()).fetch_optional(&mut **tx).await.map_err(store_error)?;
    let state = state.ok_or_else(|| StoreError::NotFound { call_id: call_id.clone() })?;
    rows::state(call_id.as_str(), &state)
}

const HANG_UP: &str = r#"
WITH hung_up AS (
    UPDATE calls SET state = $2, completed_at = $3, next_attempt_at = $3, updated_at = $3
    WHERE call_id = $1
    RETURNING call_id
)
SELECT pg_notify('pbx_work', '') FROM hung_up
"#;

/// Locks the call, asks the state machine about `trigger`, and when it applies runs
/// `update` (`$1` call id, `$2` target state, `$3` now), all in one transaction.
async fn locked_transition(
    pool: &PgPool,
    call_id: &CallId,
    trigger: Trigger,
    update: &'static str,
    now: DateTime<Utc>,
) -> Result<Transition, StoreError> {
    let mut tx = pool.begin().await.map_err(store_error)?;
    let state = locked_state(&mut tx, call_id).await?;
    let t = transition(state, trigger).map_err(|e| invalid(call_id, e))?;
    if t.applied {
        sqlx::query(update)
            .bind(call_id.as_str())
            .bind(t.to.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(t)
}

/// IN_PROGRESS -> COMPLETED, due at `now`; a no-op in later states.
pub(crate) async fn complete(pool: &PgPool, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
    locked_transition(pool, call_id, Trigger::HangUp, HANG_UP, now).await
}

const REDRIVE: &str = r#"
WITH redriven AS (
    UPDATE calls
    SET state = $2, failures = 0, next_attempt_at = $3, lease_owner = NULL, lease_expires_at = NULL,
        finished_at = NULL, updated_at = $3
    WHERE call_id = $1
    RETURNING call_id
)
SELECT pg_notify('pbx_work', '') FROM redriven
"#;

/// FAILED -> COMPLETED, failures reset, due at `now`.
pub(crate) async fn redrive(pool: &PgPool, call_id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
    locked_transition(pool, call_id, Trigger::Redrive, REDRIVE, now).await
}

/// Due work, oldest first; a leased call is due when its lease expired (a rescue), an
/// unleased one at `next_attempt_at`. `SKIP LOCKED` lets concurrent claimers pass each
/// other instead of queueing, and hands each row to one of them.
const CLAIM: &str = r#"
WITH due AS (
    SELECT call_id, lease_owner IS NOT NULL AS rescued, COALESCE(lease_expires_at, next_attempt_at) AS due_at
    FROM calls
    WHERE state IN ('COMPLETED', 'PROCESSING_AI')
      AND COALESCE(lease_expires_at, next_attempt_at) <= $1
    ORDER BY COALESCE(lease_expires_at, next_attempt_at), call_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE calls AS c
SET state = $3, attempts = c.attempts + 1, lease_owner = $4, lease_expires_at = $5, updated_at = $1
FROM due
WHERE c.call_id = due.call_id
RETURNING c.call_id, c.attempts, c.failures, due.rescued, due.due_at
"#;

/// Claims up to `limit` due calls.
pub(crate) async fn claim(
    pool: &PgPool,
    worker: &WorkerId,
    lease: Duration,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<Vec<Claim>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let to = static_transition(CallState::Completed, Trigger::Claim)?.to;
    let expires_at = lease_until(now, lease);
    let claimed: Vec<(String, i32, i32, bool, DateTime<Utc>)> = sqlx::query_as(CLAIM)
        .bind(now)
        .bind(sql_limit(limit))
        .bind(to.as_str())
        .bind(worker.as_str())
        .bind(expires_at)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    let mut claims = Vec::with_capacity(claimed.len());
    for (call_id, attempts, failures, rescued, due_at) in claimed {
        let claim = Claim {
            attempt: rows::count(&call_id, "attempts", attempts)?,
            failures: rows::count(&call_id, "failures", failures)?,
            call_id: rows::call_id(&call_id)?,
            lease_expires_at: expires_at,
            rescued,
        };
        claims.push((due_at, claim));
    }
    // RETURNING has no order of its own: oldest due first, as the contract says.
    claims.sort_by(|a, b| (a.0, &a.1.call_id).cmp(&(b.0, &b.1.call_id)));
    Ok(claims.into_iter().map(|(_, claim)| claim).collect())
}

/// What a fenced write answers: the value when the attempt held the lease, else whether
/// the call exists at all. Rows are never deleted, so "absent" here means NotFound.
fn fenced<T>(attempt: &AttemptRef, value: Option<T>, found: bool) -> Result<T, StoreError> {
    match (value, found) {
        (Some(value), _) => Ok(value),
        (None, true) => Err(StoreError::Fenced { call_id: attempt.call_id.clone(), attempt: attempt.attempt }),
        (None, false) => Err(StoreError::NotFound { call_id: attempt.call_id.clone() }),
    }
}

/// The lease check of every fenced write, as SQL (`$1` call id, `$2` attempt).
macro_rules! fence {
    () => {
        "call_id = $1 AND state = 'PROCESSING_AI' AND lease_owner IS NOT NULL AND attempts = $2"
    };
}

const HEARTBEAT: &str = concat!(
    "WITH upd AS (UPDATE calls SET lease_expires_at = $3, updated_at = $4 WHERE ",
    fence!(),
    " RETURNING lease_expires_at) ",
    "SELECT (SELECT lease_expires_at FROM upd), EXISTS (SELECT 1 FROM calls WHERE call_id = $1)"
);

/// Extends a held lease.
pub(crate) async fn heartbeat(
    pool: &PgPool,
    attempt: &AttemptRef,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    let (value, found): (Option<DateTime<Utc>>, bool) = sqlx::query_as(HEARTBEAT)
        .bind(attempt.call_id.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(lease_until(now, lease))
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    fenced(attempt, value, found)
}

const RECORD_SUCCESS: &str = concat!(
    "WITH upd AS (UPDATE calls SET state = $3, transcript = $4, sentiment_label = $5, sentiment_score = $6, ",
    "ai_details = $8::jsonb, lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL, ",
    "finished_at = $7, updated_at = $7 WHERE ",
    fence!(),
    " RETURNING state) ",
    "SELECT (SELECT state FROM upd), EXISTS (SELECT 1 FROM calls WHERE call_id = $1)"
);

/// PROCESSING_AI -> ARCHIVED with the result.
pub(crate) async fn record_success(
    pool: &PgPool,
    attempt: &AttemptRef,
    result: &AiResult,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let to = static_transition(CallState::ProcessingAi, Trigger::Succeed)?.to;
    let details = rows::AiDetails::json(result)?;
    let (value, found): (Option<String>, bool) = sqlx::query_as(RECORD_SUCCESS)
        .bind(attempt.call_id.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(to.as_str())
        .bind(&result.transcript)
        .bind(result.sentiment.label.as_str())
        .bind(result.sentiment.score)
        .bind(now)
        .bind(details)
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    fenced(attempt, value, found).map(|_| ())
}

const RECORD_FAILURE: &str = concat!(
    "WITH upd AS (UPDATE calls SET state = $3, failures = failures + 1, last_error = $4, ",
    "lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = $5, ",
    "finished_at = CASE WHEN $5::timestamptz IS NULL THEN $6 END, updated_at = $6 WHERE ",
    fence!(),
    " RETURNING state), ",
    "notified AS (SELECT pg_notify('pbx_work', '') FROM upd WHERE $5::timestamptz IS NOT NULL) ",
    "SELECT (SELECT state FROM upd), EXISTS (SELECT 1 FROM calls WHERE call_id = $1), ",
    "(SELECT count(*) FROM notified)"
);

/// Records a failed attempt: a retry later, or FAILED.
pub(crate) async fn record_failure(
    pool: &PgPool,
    attempt: &AttemptRef,
    failure: &AttemptFailure,
    now: DateTime<Utc>,
) -> Result<CallState, StoreError> {
    let trigger = if failure.retry_at.is_some() { Trigger::RetryLater } else { Trigger::GiveUp };
    let to = static_transition(CallState::ProcessingAi, trigger)?.to;
    let (value, found, _): (Option<String>, bool, i64) = sqlx::query_as(RECORD_FAILURE)
        .bind(attempt.call_id.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(to.as_str())
        .bind(&failure.error)
        .bind(failure.retry_at)
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    let state = fenced(attempt, value, found)?;
    rows::state(attempt.call_id.as_str(), &state)
}

const RELEASE: &str = concat!(
    "WITH upd AS (UPDATE calls SET lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = $3, ",
    "updated_at = $3 WHERE ",
    fence!(),
    " RETURNING state), ",
    "notified AS (SELECT pg_notify('pbx_work', '') FROM upd) ",
    "SELECT (SELECT state FROM upd), EXISTS (SELECT 1 FROM calls WHERE call_id = $1), ",
    "(SELECT count(*) FROM notified)"
);

/// Gives a lease back: due again at `now`, no failure counted.
pub(crate) async fn release(pool: &PgPool, attempt: &AttemptRef, now: DateTime<Utc>) -> Result<(), StoreError> {
    let (value, found, _): (Option<String>, bool, i64) = sqlx::query_as(RELEASE)
        .bind(attempt.call_id.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    fenced(attempt, value, found).map(|_| ())
}

/// Idle calls, stalest first, skipping any a batch holds right now (it is not idle).
const COMPLETE_IDLE: &str = r#"
WITH idle AS (
    SELECT call_id
    FROM calls
    WHERE state = 'IN_PROGRESS' AND last_packet_at < $1
    ORDER BY last_packet_at, call_id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), hung_up AS (
    UPDATE calls AS c
    SET state = $3, completed_at = $4, next_attempt_at = $4, updated_at = $4
    FROM idle
    WHERE c.call_id = idle.call_id
    RETURNING c.call_id, c.last_packet_at
), notified AS (
    SELECT pg_notify('pbx_work', '') FROM hung_up
)
SELECT call_id, last_packet_at, (SELECT count(*) FROM notified) FROM hung_up
"#;

/// Hangs up calls idle since before `idle_since`.
pub(crate) async fn complete_idle(
    pool: &PgPool,
    idle_since: DateTime<Utc>,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<Vec<CallId>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let to = static_transition(CallState::InProgress, Trigger::HangUp)?.to;
    let mut hung_up: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(COMPLETE_IDLE)
        .bind(idle_since)
        .bind(sql_limit(limit))
        .bind(to.as_str())
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    hung_up.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    hung_up.into_iter().map(|(id, _, _)| rows::call_id(&id)).collect()
}

const NEXT_DUE_AT: &str = r#"
SELECT min(COALESCE(lease_expires_at, next_attempt_at))
FROM calls
WHERE state IN ('COMPLETED', 'PROCESSING_AI')
"#;

/// When the earliest pending work falls due.
pub(crate) async fn next_due_at(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    sqlx::query_scalar(NEXT_DUE_AT).fetch_one(pool).await.map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states the SQL treats as "due work" are exactly those the state machine lets
    /// a claim start from, and the targets bound as parameters are the machine's.
    #[test]
    fn sql_states_agree_with_the_state_machine() {
        let claimable: Vec<_> = CallState::ALL.into_iter().filter(|s| transition(*s, Trigger::Claim).is_ok()).collect();
        assert_eq!(claimable, [CallState::Completed, CallState::ProcessingAi]);
        for s in &claimable {
            assert!(CLAIM.contains(&format!("'{}'", s.as_str())));
            assert!(NEXT_DUE_AT.contains(&format!("'{}'", s.as_str())));
        }
        let hang_up_applies: Vec<_> =
            CallState::ALL.into_iter().filter(|s| transition(*s, Trigger::HangUp).is_ok_and(|t| t.applied)).collect();
        assert_eq!(hang_up_applies, [CallState::InProgress]);
        assert!(COMPLETE_IDLE.contains("state = 'IN_PROGRESS'"));
        // Fenced writes happen only in PROCESSING_AI, where these are the machine's moves.
        for trigger in [Trigger::Succeed, Trigger::RetryLater, Trigger::GiveUp] {
            assert!(transition(CallState::ProcessingAi, trigger).is_ok());
        }
        assert!(HEARTBEAT.contains("state = 'PROCESSING_AI'"));
        assert_eq!(CHANNEL, "pbx_work");
        assert!(HANG_UP.contains("pg_notify('pbx_work'"));
    }

    #[test]
    fn leases_saturate() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(lease_until(now, Duration::from_secs(30)), now + chrono::Duration::seconds(30));
        assert_eq!(lease_until(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
