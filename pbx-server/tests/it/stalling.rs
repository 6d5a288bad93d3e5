//! A memory store whose appends wait at a gate until the test opens it: storage that
//! has fallen behind, for the streams' back-pressure tests.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pbx_core::prelude::*;
use pbx_core::store::*;
use pbx_core::testkit::wrap::{AroundAppend, WrappedStore};
use pbx_store_memory::MemoryCallStore;
use tokio::sync::watch;

/// Appends wait while the gate is shut; everything else goes straight through.
pub(crate) type StallingStore = WrappedStore<Gate>;

/// The gate appends wait at.
pub(crate) struct Gate(watch::Sender<bool>);

/// A memory store whose gate is shut.
pub(crate) fn shut() -> StallingStore {
    WrappedStore::new(Arc::new(MemoryCallStore::new()), Gate(watch::channel(false).0))
}

impl Gate {
    /// Lets every waiting and later append through.
    pub(crate) fn open_gate(&self) {
        self.0.send_replace(true);
    }
}

#[async_trait]
impl AroundAppend for Gate {
    async fn append(
        &self,
        inner: &dyn CallStore,
        batch: &[NewPacket],
        now: DateTime<Utc>,
    ) -> Result<Vec<PacketOutcome>, StoreError> {
        let _ = self.0.subscribe().wait_for(|open| *open).await;
        inner.append(batch, now).await
    }
}
