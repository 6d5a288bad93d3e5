//! Wake-ups across processes: `LISTEN pbx_work` on one connection of the store's pool.
//!
//! The listener lives behind a tokio mutex and is created on first use. When its
//! connection breaks (the server restarted, an operator terminated it), it is dropped
//! and re-created with a capped exponential backoff; nothing here panics. Since
//! notifications sent while nobody listened are lost, a wait also ends right after the
//! listener (re)connects: work may have fallen due meanwhile. Waiting is cancel-safe
//! (sqlx reads whole messages only), so callers may race it against timers.

use std::time::Duration;

use pbx_core::store::StoreError;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::store_error;
use crate::work::CHANNEL;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The store's `LISTEN` connection.
#[derive(Default)]
pub(crate) struct WorkListener {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    listener: Option<PgListener>,
    /// Failed connection attempts in a row.
    failures: u32,
    /// No new attempt before this.
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for WorkListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkListener").finish_non_exhaustive()
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

impl State {
    fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.listener = None;
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF.saturating_mul(1 << self.failures.min(10)).min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + backoff);
        tracing::warn!(%error, ?backoff, "pbx_work listener lost; reconnecting");
    }

    fn connected(&mut self, listener: PgListener) {
        self.listener = Some(listener);
        self.failures = 0;
        self.retry_at = None;
    }
}

impl WorkListener {
    /// Starts listening now unless already listening.
    pub(crate) async fn listen(&self, pool: &PgPool) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if state.listener.is_none() {
            let listener = connect(pool).await.map_err(store_error)?;
            state.connected(listener);
        }
        Ok(())
    }

    /// Resolves on a notification, or once the listener (re)connected.
    pub(crate) async fn wait(&self, pool: &PgPool) {
        let mut state = self.state.lock().await;
        loop {
            if pool.is_closed() {
                drop(state);
                return std::future::pending().await;
            }
            let Some(listener) = state.listener.as_mut() else {
                if let Some(at) = state.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                match connect(pool).await {
                    Ok(listener) => {
                        state.connected(listener);
                        return;
                    }
                    Err(error) => {
                        state.failed(&error);
                        continue;
                    }
                }
            };
            match listener.try_recv().await {
                Ok(Some(_)) => {
                    // One wake-up covers every notification already received.
                    while listener.next_buffered().is_some() {}
                    return;
                }
                // The connection was lost and re-established: notifications may be lost.
                Ok(None) => return,
                Err(error) => state.failed(&error),
            }
        }
    }
}

impl Drop for WorkListener {
    fn drop(&mut self) {
        // PgListener's own drop hands its connection back through a spawned task,
        // which needs a runtime; without one, leak the connection instead of panicking.
        if tokio::runtime::Handle::try_current().is_err()
            && let Some(listener) = self.state.get_mut().listener.take()
        {
            std::mem::forget(listener);
        }
    }
}
