//! Group commit: single-packet ingests coalesced into batch appends.
//!
//! One queue feeds one dispatcher, which forms a batch from the first queued packet and
//! everything else already queued (up to the batch bound) and appends it in one store
//! call. Nothing waits on a timer: at low load every packet is its own batch; under
//! load, batches grow to whatever queued while the previous appends were in flight.
//!
//! Up to `k` batches are in flight at once ([`Writers`]: fixed, or tuned while running
//! by [`super::tuner`]). Batches in flight never share a call: a packet whose call is
//! in a batch being appended is held back for a later batch, together with every later
//! packet of that call. So each call's packets are appended in arrival order, and
//! concurrent transactions never wait for each other's row locks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use super::tuner::{self, Tuner, Window};
use super::{GatewayConfig, GatewayError, Shared, Writers};
use crate::id::CallId;
use crate::packet::NewPacket;
use crate::store::{PacketOutcome, StoreError};

type Reply = oneshot::Sender<Result<PacketOutcome, StoreError>>;
type Item = (NewPacket, Reply);

/// The sending side of the ingest queue; the dispatcher stops when every clone is
/// dropped (after appending what was queued).
#[derive(Debug, Clone)]
pub(super) struct Queue {
    tx: mpsc::Sender<Item>,
}

impl Queue {
    pub(super) fn spawn(shared: Arc<Shared>, config: &GatewayConfig) -> Self {
        // Bounded: when the store falls behind, callers wait here (back-pressure)
        // instead of growing memory without limit.
        let (tx, rx) = mpsc::channel(config.max_group_batch * 4);
        tokio::spawn(Dispatcher::new(shared, rx, config).run());
        Self { tx }
    }

    /// Queues packets in order and waits for their outcomes (packets of one call keep
    /// their order). Not all-or-nothing: an error says some packet's fate is unknown;
    /// those answered before it were stored.
    pub(super) async fn submit_many(&self, packets: Vec<NewPacket>) -> Result<Vec<PacketOutcome>, GatewayError> {
        let mut answers = Vec::with_capacity(packets.len());
        for packet in packets {
            let (reply, answer) = oneshot::channel();
            self.tx.send((packet, reply)).await.map_err(|_| GatewayError::ShuttingDown)?;
            answers.push(answer);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answered(answer.await)?);
        }
        Ok(outcomes)
    }

    /// Queues one packet and waits for its own outcome.
    pub(super) async fn submit(&self, packet: NewPacket) -> Result<PacketOutcome, GatewayError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((packet, reply)).await.map_err(|_| GatewayError::ShuttingDown)?;
        answered(answer.await)
    }
}

/// A dropped reply means the append died mid-batch (a panicking store): the packet's
/// fate is unknown, so say so rather than claim success.
fn answered(
    answer: Result<Result<PacketOutcome, StoreError>, oneshot::error::RecvError>,
) -> Result<PacketOutcome, GatewayError> {
    match answer {
        Ok(outcome) => Ok(outcome?),
        Err(_) => Err(GatewayError::Store(StoreError::backend("group-commit append stopped before answering"))),
    }
}

/// Forms batches and keeps up to `k` of them in flight.
struct Dispatcher {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Item>,
    closed: bool,
    max_batch: usize,
    /// Batches in flight; each answers the packets it committed.
    in_flight: JoinSet<u64>,
    /// Whether batches can overlap (more than one allowed in flight), so calls in
    /// flight must be tracked.
    overlap: bool,
    /// The calls of each batch in flight (only of those launched while more than one
    /// could be in flight: see `launch`).
    calls_of: HashMap<Id, Vec<CallId>>,
    busy: HashSet<CallId>,
    /// Packets held back because their call was in flight, in arrival order, and how
    /// many each call has there.
    held: VecDeque<Item>,
    held_calls: HashMap<CallId, usize>,
    k: usize,
    tuner: Option<Tuner>,
    meter: Meter,
}

impl Dispatcher {
    fn new(shared: Arc<Shared>, rx: mpsc::Receiver<Item>, config: &GatewayConfig) -> Self {
        let (k, tuner, max) = match config.writers {
            Writers::Fixed(n) => (n.max(1), None, n.max(1)),
            Writers::Adaptive { max } => (1, (max > 1).then(|| Tuner::new(max)), max),
        };
        metrics::gauge!(crate::metrics::GROUP_COMMIT_WRITERS).set(k as f64);
        Self {
            shared,
            rx,
            closed: false,
            max_batch: config.max_group_batch,
            in_flight: JoinSet::new(),
            overlap: max > 1,
            calls_of: HashMap::new(),
            busy: HashSet::new(),
            held: VecDeque::new(),
            held_calls: HashMap::new(),
            k,
            tuner,
            meter: Meter::new(Instant::now()),
        }
    }

    /// The most packets held back before the dispatcher stops taking from the queue
    /// (and callers wait on it again).
    fn held_limit(&self) -> usize {
        self.max_batch * 4
    }

    async fn run(mut self) {
        loop {
            while self.in_flight.len() < self.k {
                let (packets, replies) = self.form();
                if packets.is_empty() {
                    break;
                }
                self.launch(packets, replies);
            }
            self.meter.occupancy(Instant::now(), self.in_flight.len() >= self.k);
            if self.closed && self.in_flight.is_empty() && self.held.is_empty() {
                return;
            }
            let may_take = !self.closed && self.in_flight.len() < self.k && self.held.len() < self.held_limit();
            tokio::select! {
                biased;
                done = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    if let Some(done) = done {
                        self.finished(done);
                    }
                }
                item = self.rx.recv(), if may_take => match item {
                    Some(item) => self.hold(item),
                    None => self.closed = true,
                },
                // Unreachable by construction (a batch forms whenever nothing is in
                // flight); should it happen, stop rather than spin: what is held is
                // answered as a stopped append.
                else => return,
            }
        }
    }

    /// Appends `item` to the held packets (it joins the next batch its call allows).
    fn hold(&mut self, item: Item) {
        if self.overlap {
            *self.held_calls.entry(item.0.call_id.clone()).or_default() += 1;
        }
        self.held.push_back(item);
    }

    /// The next batch: held packets whose call is not in flight, then queued ones.
    fn form(&mut self) -> (Vec<NewPacket>, Vec<Reply>) {
        let mut packets = Vec::new();
        let mut replies = Vec::new();
        if !self.held.is_empty() {
            let mut kept = VecDeque::new();
            while let Some(item) = self.held.pop_front() {
                if packets.len() < self.max_batch && !self.busy.contains(&item.0.call_id) {
                    if self.overlap {
                        unhold(&mut self.held_calls, &item.0.call_id);
                    }
                    packets.push(item.0);
                    replies.push(item.1);
                } else {
                    kept.push_back(item);
                }
            }
            self.held = kept;
        }
        while packets.len() < self.max_batch && self.held.len() < self.held_limit() {
            match self.rx.try_recv() {
                Ok(item) => {
                    let call = &item.0.call_id;
                    if self.overlap && (self.busy.contains(call) || self.held_calls.contains_key(call)) {
                        self.hold(item);
                    } else {
                        packets.push(item.0);
                        replies.push(item.1);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
        (packets, replies)
    }

    fn launch(&mut self, packets: Vec<NewPacket>, replies: Vec<Reply>) {
        // At one in flight a batch launches only onto an empty set, and `k` changes
        // only when a batch finishes (this one, the only one): it stays alone, so its
        // calls need no tracking. That spares the common case on small machines a
        // clone and two hash operations per packet.
        let track = self.overlap && self.k > 1;
        let calls = if track {
            let mut calls: Vec<CallId> = Vec::new();
            for packet in &packets {
                if self.busy.insert(packet.call_id.clone()) {
                    calls.push(packet.call_id.clone());
                }
            }
            calls
        } else {
            Vec::new()
        };
        let handle = self.in_flight.spawn(append(self.shared.clone(), packets, replies));
        if track {
            self.calls_of.insert(handle.id(), calls);
        }
    }

    fn finished(&mut self, done: Result<(Id, u64), JoinError>) {
        let (id, committed) = match done {
            Ok(done) => done,
            Err(error) => {
                // A panicking store: the batch's callers were answered by their
                // dropped replies; the dispatcher carries on with the next batch.
                tracing::error!(%error, "group-commit append panicked");
                (error.id(), 0)
            }
        };
        if let Some(calls) = self.calls_of.remove(&id) {
            for call in calls {
                self.busy.remove(&call);
            }
        }
        let now = Instant::now();
        self.meter.occupancy(now, self.in_flight.len() >= self.k);
        let Some(tuner) = &mut self.tuner else { return };
        if let Some(window) = self.meter.committed(now, committed) {
            let setting = tuner.setting();
            let k = tuner.window(window);
            if tuner.setting() != setting {
                tracing::info!(from = setting, to = tuner.setting(), "group commit: batches in flight retuned");
            }
            if k != self.k {
                self.k = k;
                metrics::gauge!(crate::metrics::GROUP_COMMIT_WRITERS).set(k as f64);
            }
            self.meter = Meter::new(now);
        }
    }
}

fn unhold(held_calls: &mut HashMap<CallId, usize>, call: &CallId) {
    if let Some(n) = held_calls.get_mut(call) {
        *n -= 1;
        if *n == 0 {
            held_calls.remove(call);
        }
    }
}

/// One tuning window's measurements: packets committed, batches finished, and how long
/// every slot was busy.
#[derive(Debug)]
struct Meter {
    start: Instant,
    packets: u64,
    batches: u32,
    full_for: std::time::Duration,
    /// Since when every slot has been busy, if it is.
    full_since: Option<Instant>,
}

impl Meter {
    fn new(now: Instant) -> Self {
        Self { start: now, packets: 0, batches: 0, full_for: std::time::Duration::ZERO, full_since: None }
    }

    /// Notes whether every slot is busy from `now` on.
    fn occupancy(&mut self, now: Instant, full: bool) {
        match (self.full_since, full) {
            (None, true) => self.full_since = Some(now),
            (Some(since), false) => {
                self.full_for += now - since;
                self.full_since = None;
            }
            _ => {}
        }
    }

    /// Counts a finished batch; answers the window once it is long enough.
    fn committed(&mut self, now: Instant, packets: u64) -> Option<Window> {
        self.packets += packets;
        self.batches += 1;
        let elapsed = now - self.start;
        let long_enough = elapsed >= tuner::WINDOW && self.batches >= tuner::MIN_BATCHES;
        if !long_enough && elapsed < tuner::MAX_WINDOW {
            return None;
        }
        let full = self.full_for + self.full_since.map_or(std::time::Duration::ZERO, |since| now - since);
        let saturated = full.as_secs_f64() >= tuner::SATURATED * elapsed.as_secs_f64();
        Some(Window { packets: self.packets, elapsed, saturated })
    }
}

/// Appends one batch and answers each of its packets; answers the packets committed.
async fn append(shared: Arc<Shared>, packets: Vec<NewPacket>, replies: Vec<Reply>) -> u64 {
    let now = shared.clock.now();
    metrics::histogram!(crate::metrics::GROUP_COMMIT_BATCH).record(packets.len() as f64);
    let result = shared.store.append(&packets, now).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(crate::metrics::GROUP_COMMITS, "outcome" => outcome).increment(1);
    let result = result.and_then(|outcomes| check_len(&packets, &outcomes).map(|()| outcomes));
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
            packets.len() as u64
        }
        Err(error) => {
            tracing::warn!(%error, packets = packets.len(), "group-commit append failed");
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(share(&error)));
            }
            0
        }
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
