//! Following the event log live: [`Gateway::feed`](super::Gateway::feed).
//!
//! One tailer per gateway reads the store's log in order, woken by the store's
//! [`event_signal`](CallStore::event_signal), and broadcasts each event once to every
//! [`Feed`] of this process (one bounded ring shared by all of them). A feed tracks its
//! own cursor: it replays from the store up to the live edge, then takes the broadcast,
//! skipping what it already delivered. Whenever the broadcast cannot continue its
//! cursor (it fell behind the ring, or an id is missing), it reads the gap from the
//! store, so what a feed delivers is exactly the log, in order, without gap or
//! duplicate. A slow feed costs the ring's memory, never more, and never slows ingest:
//! the broadcast overwrites what the slowest feed has not read yet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{GatewayError, Shared};
use crate::events::{EventId, EventPage, MAX_EVENT_PAGE, StoredEvent};
use crate::store::CallStore;

/// Events read from the store per page, by replays and by the tailer.
const PAGE: usize = 256;

/// [`Hub::origin`] before the tailer starts.
const NO_TAILER: u64 = u64::MAX;

/// The broadcast side shared by a gateway's feeds.
#[derive(Debug)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<StoredEvent>>,
    /// Where the tailer started: it broadcasts every event after this id, none before.
    /// A feed whose cursor is behind it reads from the store until it is not.
    origin: Arc<AtomicU64>,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity).0, origin: Arc::new(AtomicU64::new(NO_TAILER)) }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// The id after which the tailer broadcasts; 0 while none runs (a store without a
/// signal never broadcasts, so nothing is to be gained by reading on).
fn origin(origin: &AtomicU64) -> EventId {
    match origin.load(Ordering::SeqCst) {
        NO_TAILER => 0,
        origin => origin,
    }
}

/// What a [`Feed`] yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FeedItem {
    /// The next event of the log.
    Event(Arc<StoredEvent>),
    /// The cursor asked for cannot be continued: reload a snapshot of the calls, then
    /// carry on from `id` (the events that follow are live).
    Resync {
        /// The cursor the feed continues from.
        id: EventId,
        /// Why.
        reason: ResyncReason,
    },
    /// This feed fell behind live by `missed` events; it now reads them from the log,
    /// so nothing is lost. Informational.
    Lagged {
        /// The last id delivered before falling behind.
        id: EventId,
        /// How far behind it fell.
        missed: u64,
    },
}

/// Why a feed had to [`FeedItem::Resync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncReason {
    /// Events after the cursor were dropped by retention.
    Pruned,
    /// The cursor is ahead of the log: it belongs to another store, or to a memory
    /// store before a restart.
    Unknown,
}

impl ResyncReason {
    /// `pruned` or `unknown_cursor`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Pruned => "pruned",
            ResyncReason::Unknown => "unknown_cursor",
        }
    }
}

/// A live, resumable view of the event log ([`Gateway::feed`](super::Gateway::feed)).
#[derive(Debug)]
pub struct Feed {
    store: Arc<dyn CallStore>,
    /// The hub's origin (not the hub: a feed must not keep the gateway alive).
    origin: Arc<AtomicU64>,
    rx: broadcast::Receiver<Arc<StoredEvent>>,
    /// The cursor asked for, until the first read checks it against the log.
    start: Option<EventId>,
    cursor: EventId,
    replaying: bool,
    pending: VecDeque<Arc<StoredEvent>>,
}

impl Feed {
    /// A feed from `since`, or from the log's end.
    ///
    /// The order matters for "no gap": the broadcast is subscribed first, so every
    /// event the tailer sends after the log's end is read here reaches this feed; and
    /// the tailer, started by the first feed, starts at an end read before any feed
    /// exists, so no feed ever waits live for an event the tailer will never send.
    pub(crate) async fn open(shared: &Arc<Shared>, since: Option<EventId>) -> Result<Self, GatewayError> {
        let rx = shared.hub.tx.subscribe();
        let latest = shared.store.events(0, 1).await?.latest;
        if let Some(signal) = shared.store.event_signal()
            && shared.hub.origin.compare_exchange(NO_TAILER, latest, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            tokio::spawn(tail(Arc::downgrade(shared), signal, latest));
        }
        let since = since.unwrap_or(latest);
        Ok(Self {
            store: shared.store.clone(),
            origin: shared.hub.origin.clone(),
            rx,
            start: Some(since),
            cursor: since,
            replaying: false,
            pending: VecDeque::new(),
        })
    }

    /// The id of the last event delivered (or of the start).
    pub fn cursor(&self) -> EventId {
        self.cursor
    }

    /// The next item. A store error leaves the feed where it was: calling again
    /// retries. [`GatewayError::ShuttingDown`] when the gateway is gone.
    pub async fn next(&mut self) -> Result<FeedItem, GatewayError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(FeedItem::Event(event));
            }
            if let Some(after) = self.start {
                let page = self.store.events(after, PAGE).await?;
                self.start = None;
                if !page.continues(after) {
                    return Ok(self.resync(after, &page));
                }
                self.fill(page);
                continue;
            }
            if self.replaying {
                let page = self.store.events(self.cursor, PAGE).await?;
                if !page.continues(self.cursor) {
                    return Ok(self.resync(self.cursor, &page));
                }
                self.fill(page);
                continue;
            }
            match self.rx.recv().await {
                Ok(event) if event.id <= self.cursor => {}
                Ok(event) if event.id == self.cursor + 1 => {
                    self.cursor = event.id;
                    return Ok(FeedItem::Event(event));
                }
                // A gap: the tailer read past it from the store, so the store has it.
                Ok(_) => self.replaying = true,
                Err(RecvError::Lagged(missed)) => {
                    self.replaying = true;
                    return Ok(FeedItem::Lagged { id: self.cursor, missed });
                }
                Err(RecvError::Closed) => return Err(GatewayError::ShuttingDown),
            }
        }
    }

    /// Queues a page read from the store. Replaying goes on while pages come full, or
    /// while the cursor is behind where the tailer started broadcasting.
    fn fill(&mut self, page: EventPage) {
        let full = page.events.len() == PAGE;
        for event in page.events {
            if event.id > self.cursor {
                self.cursor = event.id;
                self.pending.push_back(Arc::new(event));
            }
        }
        if !full {
            // Everything up to the log's end was in the page (an event this version
            // cannot read is skipped by the store, and so by the tailer).
            self.cursor = self.cursor.max(page.latest);
        }
        self.replaying = full || self.cursor < origin(&self.origin);
    }

    /// Gives up on cursor `after`: the feed carries on from the log's end.
    fn resync(&mut self, after: EventId, page: &EventPage) -> FeedItem {
        let reason = if after > page.latest { ResyncReason::Unknown } else { ResyncReason::Pruned };
        self.cursor = page.latest;
        // Whatever was written after `latest` comes from the store, then live.
        self.replaying = true;
        self.pending.clear();
        FeedItem::Resync { id: self.cursor, reason }
    }
}

/// The tailer: reads the log in order after `cursor` and broadcasts it, until the
/// gateway is gone.
async fn tail(shared: Weak<Shared>, mut signal: tokio::sync::watch::Receiver<EventId>, mut cursor: EventId) {
    let mut backoff = Duration::from_millis(50);
    loop {
        signal.borrow_and_update();
        let Some(shared) = shared.upgrade() else { return };
        let store = shared.store.clone();
        match drain(&*store, &shared, &mut cursor).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(error) => {
                tracing::warn!(%error, "event feed: reading the log failed; retrying");
                drop(shared);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        drop(shared);
        if signal.changed().await.is_err() {
            return;
        }
    }
}

/// Broadcasts every event after `cursor`.
async fn drain(store: &dyn CallStore, shared: &Shared, cursor: &mut EventId) -> Result<(), crate::store::StoreError> {
    const TAIL_PAGE: usize = if MAX_EVENT_PAGE < PAGE * 4 { MAX_EVENT_PAGE } else { PAGE * 4 };
    loop {
        let page = store.events(*cursor, TAIL_PAGE).await?;
        if !page.continues(*cursor) {
            // Pruned under the tailer's feet (or the store was reset): jump to the end;
            // each feed notices the gap and resyncs or replays on its own.
            *cursor = page.latest;
            continue;
        }
        let full = page.events.len() == TAIL_PAGE;
        for event in page.events {
            *cursor = event.id;
            // No receiver is fine: nobody to tell.
            let _ = shared.hub.tx.send(Arc::new(event));
        }
        if !full {
            *cursor = (*cursor).max(page.latest);
            return Ok(());
        }
    }
}
