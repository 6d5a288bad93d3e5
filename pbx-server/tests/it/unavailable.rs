//! While the store is unavailable every operation answers 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pbx_core::ai::AiResult;
use pbx_core::prelude::*;
use pbx_core::store::*;
use poem::http::{Method, StatusCode};

use crate::helpers::{TestApp, packet};

/// A store whose backend is down: every operation fails as retryable.
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::unavailable("connection refused"))
}

#[async_trait]
impl CallStore for DownStore {
    async fn append(&self, _: &[NewPacket], _: DateTime<Utc>) -> Result<Vec<PacketOutcome>, StoreError> {
        down()
    }
    async fn complete(&self, _: &CallId, _: DateTime<Utc>) -> Result<Transition, StoreError> {
        down()
    }
    async fn get(&self, _: &CallId, _: usize) -> Result<CallSnapshot, StoreError> {
        down()
    }
    async fn list(&self, _: &ListQuery) -> Result<CallPage, StoreError> {
        down()
    }
    async fn open(&self, _: &CallId, _: MediaFormat, _: DateTime<Utc>) -> Result<Opened, StoreError> {
        down()
    }
    async fn packets(&self, _: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
        down()
    }
    async fn packet_page(&self, _: &CallId, _: u8, _: u64, _: usize) -> Result<Vec<StoredPacket>, StoreError> {
        down()
    }
    async fn claim(&self, _: &WorkerId, _: Duration, _: usize, _: DateTime<Utc>) -> Result<Vec<Claim>, StoreError> {
        down()
    }
    async fn heartbeat(&self, _: &AttemptRef, _: Duration, _: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        down()
    }
    async fn record_success(&self, _: &AttemptRef, _: &AiResult, _: DateTime<Utc>) -> Result<(), StoreError> {
        down()
    }
    async fn record_failure(
        &self,
        _: &AttemptRef,
        _: &AttemptFailure,
        _: DateTime<Utc>,
    ) -> Result<CallState, StoreError> {
        down()
    }
    async fn release(&self, _: &AttemptRef, _: DateTime<Utc>) -> Result<(), StoreError> {
        down()
    }
    async fn complete_idle(&self, _: DateTime<Utc>, _: usize, _: DateTime<Utc>) -> Result<Vec<CallId>, StoreError> {
        down()
    }
    async fn redrive(&self, _: &CallId, _: DateTime<Utc>) -> Result<Transition, StoreError> {
        down()
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        down()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        down()
    }
}

#[tokio::test]
async fn an_unavailable_store_is_503_with_retry_after() {
    let app = TestApp::with_store(Arc::new(DownStore));
    let body = packet(1, "x");
    let batch = format!("[{body}]");
    for (method, path, body) in [
        (Method::POST, "/ingest/c1", Some(body.as_str())),
        (Method::POST, "/v1/calls/c1/packets", Some(body.as_str())),
        (Method::POST, "/v1/calls/c1/packets/batch", Some(batch.as_str())),
        (Method::POST, "/v1/calls/c1/complete", None),
        (Method::POST, "/v1/calls/c1/retry", None),
        (Method::GET, "/v1/calls/c1", None),
        (Method::GET, "/v1/calls", None),
        (Method::GET, "/readyz", None),
    ] {
        let reply = app.request(method.clone(), path, body, None).await;
        assert_eq!(
            (reply.status, reply.error_code().as_str(), reply.retry_after.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some("1")),
            "{method} {path}"
        );
    }
    // Liveness does not depend on the store.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}
