//! Mapping sqlx errors into [`StoreError`]: a lost or refused connection is
//! `Unavailable` (retryable), anything else is `Backend`. The sqlx error is kept as the
//! source either way.

use pbx_core::store::StoreError;

/// A row the database holds but the domain cannot represent (an unknown state, a
/// counter out of range). The schema's constraints should make it impossible.
#[derive(Debug, thiserror::Error)]
#[error("call {call_id}: stored row is inconsistent: {what}")]
pub(crate) struct CorruptRow {
    pub(crate) call_id: String,
    pub(crate) what: String,
}

impl CorruptRow {
    pub(crate) fn error(call_id: impl Into<String>, what: impl Into<String>) -> StoreError {
        StoreError::backend(CorruptRow { call_id: call_id.into(), what: what.into() })
    }
}

/// SQLSTATE codes that mean "the server went away or cannot take us right now".
fn is_unavailable_code(code: &str) -> bool {
    // Class 08: connection exception. 57P01 admin_shutdown, 57P02 crash_shutdown,
    // 57P03 cannot_connect_now (starting up or shutting down), 53300 too_many_connections.
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// `true` when the error says the database cannot be reached right now.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_code(&code)),
        _ => false,
    }
}

/// Maps a sqlx error into the core's error, keeping it as the source.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    if is_unavailable(&error) { StoreError::unavailable(error) } else { StoreError::backend(error) }
}

/// Maps a migration error; a connection lost while migrating is still `Unavailable`.
pub(crate) fn migrate_error(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(inner) if is_unavailable(&inner) => StoreError::unavailable(inner),
        other => StoreError::backend(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(store_error(io), StoreError::Unavailable { .. }));
        assert!(matches!(store_error(sqlx::Error::PoolTimedOut), StoreError::Unavailable { .. }));
        assert!(matches!(store_error(sqlx::Error::PoolClosed), StoreError::Unavailable { .. }));
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
            assert!(is_unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn everything_else_is_backend_with_its_source() {
        let err = store_error(sqlx::Error::RowNotFound);
        assert!(matches!(err, StoreError::Backend { .. }));
        let source = std::error::Error::source(&err).expect("source kept");
        assert!(source.downcast_ref::<sqlx::Error>().is_some());
        for code in ["23514", "23505", "40P01", "42P01", "57014"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }
}
