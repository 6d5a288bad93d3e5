//! Group commit: single-packet ingests coalesced into batch appends.
//!
//! A writer takes the first queued packet, then everything else already queued (up to
//! the batch bound), and appends them in one store call. Nothing waits on a timer: at
//! low load every packet is its own batch; under load, batches grow to whatever queued
//! while the previous append was in flight. Several writers append in parallel, each
//! owning a share of the calls (by a hash of the call id), so they never contend for
//! the same call's lock.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{GatewayConfig, GatewayError, Shared};
use crate::id::CallId;
use crate::packet::NewPacket;
use crate::store::{PacketOutcome, StoreError};

type Reply = oneshot::Sender<Result<PacketOutcome, StoreError>>;

/// The sending side of the ingest queues; writers stop when every clone is dropped.
///
/// One queue per writer, and a call always goes to the same writer (by a hash of its
/// id): writers never append to the same call at once, so their transactions never wait
/// for each other's row locks and really run in parallel. A call's packets also keep
/// their arrival order within the writer.
#[derive(Debug, Clone)]
pub(super) struct Queue {
    txs: Arc<[mpsc::Sender<(NewPacket, Reply)>]>,
}

impl Queue {
    pub(super) fn spawn(shared: Arc<Shared>, config: &GatewayConfig) -> Self {
        let txs: Vec<_> = (0..config.writers)
            .map(|_| {
                // Bounded: when the store falls behind, callers wait here
                // (back-pressure) instead of growing memory without limit.
                let (tx, rx) = mpsc::channel(config.max_group_batch * 4);
                tokio::spawn(writer(shared.clone(), rx, config.max_group_batch));
                tx
            })
            .collect();
        Self { txs: txs.into() }
    }

    /// Queues packets in order and waits for their outcomes (packets of one call keep
    /// their order: they go to one writer). Not all-or-nothing: an error says some
    /// packet's fate is unknown; those answered before it were stored.
    pub(super) async fn submit_many(&self, packets: Vec<NewPacket>) -> Result<Vec<PacketOutcome>, GatewayError> {
        let mut answers = Vec::with_capacity(packets.len());
        for packet in packets {
            let (reply, answer) = oneshot::channel();
            let tx = &self.txs[writer_of(&packet.call_id, self.txs.len())];
            tx.send((packet, reply)).await.map_err(|_| GatewayError::ShuttingDown)?;
            answers.push(answer);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer.await {
                Ok(outcome) => outcomes.push(outcome?),
                Err(_) => {
                    return Err(GatewayError::Store(StoreError::backend(
                        "group-commit writer stopped before answering",
                    )));
                }
            }
        }
        Ok(outcomes)
    }

    /// Queues one packet and waits for its own outcome.
    pub(super) async fn submit(&self, packet: NewPacket) -> Result<PacketOutcome, GatewayError> {
        let (reply, answer) = oneshot::channel();
        let tx = &self.txs[writer_of(&packet.call_id, self.txs.len())];
        tx.send((packet, reply)).await.map_err(|_| GatewayError::ShuttingDown)?;
        // A dropped reply means the writer died mid-batch (a panicking store): the
        // packet's fate is unknown, so say so rather than claim success.
        match answer.await {
            Ok(outcome) => Ok(outcome?),
            Err(_) => Err(GatewayError::Store(StoreError::backend("group-commit writer stopped before answering"))),
        }
    }
}

/// The writer a call's packets go to.
fn writer_of(call_id: &CallId, writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    call_id.hash(&mut h);
    (h.finish() % writers as u64) as usize
}

async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<(NewPacket, Reply)>, max_batch: usize) {
    let mut packets = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    loop {
        {
            let Some((packet, reply)) = rx.recv().await else { return };
            packets.push(packet);
            replies.push(reply);
            while packets.len() < max_batch {
                match rx.try_recv() {
                    Ok((packet, reply)) => {
                        packets.push(packet);
                        replies.push(reply);
                    }
                    Err(_) => break,
                }
            }
        }
        let now = shared.clock.now();
        metrics::histogram!(crate::metrics::GROUP_COMMIT_BATCH).record(packets.len() as f64);
        let result = shared.store.append(&packets, now).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::metrics::GROUP_COMMITS, "outcome" => outcome).increment(1);
        let result = result.and_then(|outcomes| check_len(&packets, &outcomes).map(|()| outcomes));
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(%error, packets = packets.len(), "group-commit append failed");
                let error = Arc::new(error);
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(share(&error)));
                }
            }
        }
        packets.clear();
    }
}

/// One caller's copy of a batch's error, of the same kind (retryable stays retryable).
fn share(error: &Arc<StoreError>) -> StoreError {
    #[derive(Debug)]
    struct Shared(Arc<StoreError>);
    impl std::fmt::Display for Shared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    impl std::error::Error for Shared {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }
    match &**error {
        StoreError::Unavailable { .. } => StoreError::unavailable(Shared(error.clone())),
        StoreError::InvalidArgument(message) => StoreError::InvalidArgument(message.clone()),
        _ => StoreError::backend(Shared(error.clone())),
    }
}

/// A store must answer once per packet; anything else is a backend bug, reported as such.
pub(super) fn check_len(packets: &[NewPacket], outcomes: &[PacketOutcome]) -> Result<(), StoreError> {
    if packets.len() == outcomes.len() {
        Ok(())
    } else {
        Err(StoreError::backend(format!("store answered {} outcomes for {} packets", outcomes.len(), packets.len())))
    }
}
