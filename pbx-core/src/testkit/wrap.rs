//! A store that delegates everything to another one, with a hook around each
//! [`CallStore::append`]: the base of test stores that watch, delay or gate appends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::ai::AiResult;
use crate::events::{EventBody, EventId, EventPage};
use crate::id::{CallId, WorkerId};
use crate::media::MediaFormat;
use crate::media::notes::StreamNote;
use crate::packet::{NewPacket, StoredPacket};
use crate::state::{CallState, Transition};
use crate::store::{
    AttemptFailure, AttemptRef, CallPage, CallSnapshot, CallStore, Claim, ListQuery, Opened, PacketOutcome, StoreError,
};

/// What a [`WrappedStore`] does instead of a plain append: usually something around
/// `inner.append(batch, now)`.
#[async_trait]
pub trait AroundAppend: Send + Sync + 'static {
    /// Appends `batch` through `inner`, doing whatever the hook is for around it.
    async fn append(
        &self,
        inner: &dyn CallStore,
        batch: &[NewPacket],
        now: DateTime<Utc>,
    ) -> Result<Vec<PacketOutcome>, StoreError>;
}

/// `inner` with `around` hooked into every append; the hook's own methods are
/// reachable through `Deref`.
pub struct WrappedStore<A> {
    inner: Arc<dyn CallStore>,
    around: A,
}

impl<A> WrappedStore<A> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CallStore>, around: A) -> Self {
        Self { inner, around }
    }
}

impl<A> std::ops::Deref for WrappedStore<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.around
    }
}

#[async_trait]
impl<A: AroundAppend> CallStore for WrappedStore<A> {
    async fn append(&self, batch: &[NewPacket], now: DateTime<Utc>) -> Result<Vec<PacketOutcome>, StoreError> {
        self.around.append(&*self.inner, batch, now).await
    }
    async fn complete(&self, id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        self.inner.complete(id, now).await
    }
    async fn get(&self, id: &CallId, max: usize) -> Result<CallSnapshot, StoreError> {
        self.inner.get(id, max).await
    }
    async fn list(&self, q: &ListQuery) -> Result<CallPage, StoreError> {
        self.inner.list(q).await
    }
    async fn open(&self, id: &CallId, f: MediaFormat, now: DateTime<Utc>) -> Result<Opened, StoreError> {
        self.inner.open(id, f, now).await
    }
    async fn packets(&self, id: &CallId) -> Result<Vec<StoredPacket>, StoreError> {
        self.inner.packets(id).await
    }
    async fn packet_page(&self, id: &CallId, c: u8, after: u64, n: usize) -> Result<Vec<StoredPacket>, StoreError> {
        self.inner.packet_page(id, c, after, n).await
    }
    async fn claim(&self, w: &WorkerId, l: Duration, n: usize, now: DateTime<Utc>) -> Result<Vec<Claim>, StoreError> {
        self.inner.claim(w, l, n, now).await
    }
    async fn heartbeat(&self, a: &AttemptRef, l: Duration, now: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        self.inner.heartbeat(a, l, now).await
    }
    async fn record_success(&self, a: &AttemptRef, r: &AiResult, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.record_success(a, r, now).await
    }
    async fn record_failure(
        &self,
        a: &AttemptRef,
        f: &AttemptFailure,
        now: DateTime<Utc>,
    ) -> Result<CallState, StoreError> {
        self.inner.record_failure(a, f, now).await
    }
    async fn release(&self, a: &AttemptRef, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.release(a, now).await
    }
    async fn complete_idle(&self, s: DateTime<Utc>, n: usize, now: DateTime<Utc>) -> Result<Vec<CallId>, StoreError> {
        self.inner.complete_idle(s, n, now).await
    }
    async fn redrive(&self, id: &CallId, now: DateTime<Utc>) -> Result<Transition, StoreError> {
        self.inner.redrive(id, now).await
    }
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_due_at().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn events(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        self.inner.events(after, limit).await
    }
    async fn record_event(&self, id: &CallId, e: &EventBody, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.record_event(id, e, now).await
    }
    async fn note_stream(&self, id: &CallId, n: &StreamNote, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.note_stream(id, n, now).await
    }
    fn event_signal(&self) -> Option<watch::Receiver<EventId>> {
        self.inner.event_signal()
    }
    fn prefers_group_commit(&self) -> bool {
        self.inner.prefers_group_commit()
    }
}
