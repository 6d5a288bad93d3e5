//! A store wrapper that watches group-commit appends run at once: which calls each
//! holds, whether two in flight ever share a call, and a gate that keeps the first
//! append waiting until a second one has started (so overlap is forced, not hoped for).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::wrap::{AroundAppend, WrappedStore};
use crate::id::CallId;
use crate::packet::NewPacket;
use crate::store::{CallStore, PacketOutcome, StoreError};

#[derive(Debug, Default)]
struct Seen {
    /// The calls of each append in flight.
    in_flight: Vec<(u64, HashSet<CallId>)>,
    next: u64,
    most_at_once: usize,
    /// Calls found in two appends at once.
    shared: Vec<CallId>,
    /// Every packet appended, in the order appends started: (call, sequence).
    appended: Vec<(CallId, u64)>,
}

/// A store that records what its appends see ([`Overlap`]'s methods).
pub type OverlapStore = WrappedStore<Overlap>;

/// Records what [`CallStore::append`] sees.
pub struct Overlap {
    seen: Mutex<Seen>,
    started: watch::Sender<u64>,
    /// Whether the first append waits for a second to start.
    hold_first: bool,
}

/// Watches `inner`'s appends; with `hold_first`, the first waits until a second has
/// started.
pub fn watch(inner: Arc<dyn CallStore>, hold_first: bool) -> OverlapStore {
    WrappedStore::new(inner, Overlap { seen: Mutex::new(Seen::default()), started: watch::channel(0).0, hold_first })
}

impl Overlap {
    /// Resolves once `n` appends have started.
    pub async fn started(&self, n: u64) {
        let _ = self.started.subscribe().wait_for(|started| *started >= n).await;
    }

    /// The most appends seen in flight at once.
    pub fn most_at_once(&self) -> usize {
        self.seen.lock().expect("not poisoned").most_at_once
    }

    /// Calls that were in two appends at once (empty when batches never share a call).
    pub fn shared_calls(&self) -> Vec<CallId> {
        self.seen.lock().expect("not poisoned").shared.clone()
    }

    /// The sequences appended for `call`, in the order their appends started.
    pub fn appended(&self, call: &CallId) -> Vec<u64> {
        let seen = self.seen.lock().expect("not poisoned");
        seen.appended.iter().filter(|(c, _)| c == call).map(|(_, seq)| *seq).collect()
    }
}

#[async_trait]
impl AroundAppend for Overlap {
    async fn append(
        &self,
        inner: &dyn CallStore,
        batch: &[NewPacket],
        now: DateTime<Utc>,
    ) -> Result<Vec<PacketOutcome>, StoreError> {
        let calls: HashSet<CallId> = batch.iter().map(|p| p.call_id.clone()).collect();
        let number = {
            let mut seen = self.seen.lock().expect("not poisoned");
            let clash: Vec<CallId> =
                seen.in_flight.iter().flat_map(|(_, other)| other.intersection(&calls).cloned()).collect();
            seen.shared.extend(clash);
            seen.appended.extend(batch.iter().map(|p| (p.call_id.clone(), p.packet.sequence())));
            let number = seen.next;
            seen.next += 1;
            seen.in_flight.push((number, calls));
            seen.most_at_once = seen.most_at_once.max(seen.in_flight.len());
            number
        };
        self.started.send_modify(|started| *started += 1);
        if self.hold_first && number == 0 {
            self.started(2).await;
        }
        let result = inner.append(batch, now).await;
        self.seen.lock().expect("not poisoned").in_flight.retain(|(n, _)| *n != number);
        result
    }
}
