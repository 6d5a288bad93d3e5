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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{GatewayError, Shared};
use crate::events::{EventId, EventPage, MAX_EVENT_PAGE, StoredEvent};
use crate::store::CallStore;

/// Events read from the store per page, by replays and by the tailer.
const PAGE: usize = 256;

/// The broadcast side shared by a gateway's feeds.
#[derive(Debug)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<StoredEvent>>,
    tailing: AtomicBool,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity).0, tailing: AtomicBool::new(false) }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.tx.receiver_count()
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
    rx: broadcast::Receiver<Arc<StoredEvent>>,
    /// The cursor asked for, until the first read checks it against the log.
    start: Option<EventId>,
    cursor: EventId,
    replaying: bool,
    pending: VecDeque<Arc<StoredEvent>>,
}

impl Feed {
    pub(crate) fn new(shared: &Arc<Shared>, since: EventId) -> Self {
        let rx = shared.hub.tx.subscribe();
        if shared.store.event_signal().is_some() && !shared.hub.tailing.swap(true, Ordering::SeqCst) {
            tokio::spawn(tail(Arc::downgrade(shared)));
        }
        Self {
            store: shared.store.clone(),
            rx,
            start: Some(since),
            cursor: since,
            replaying: false,
            pending: VecDeque::new(),
        }
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
                self.fill(page.events);
                continue;
            }
            if self.replaying {
                let page = self.store.events(self.cursor, PAGE).await?;
                if !page.continues(self.cursor) {
                    return Ok(self.resync(self.cursor, &page));
                }
                self.fill(page.events);
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

    /// Queues a page read from the store; replaying goes on while pages come full.
    fn fill(&mut self, events: Vec<StoredEvent>) {
        self.replaying = events.len() == PAGE;
        for event in events {
            if event.id > self.cursor {
                self.cursor = event.id;
                self.pending.push_back(Arc::new(event));
            }
        }
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

/// The tailer: reads the log in order and broadcasts it, until the gateway is gone.
async fn tail(shared: Weak<Shared>) {
    let Some((store, mut signal)) = shared.upgrade().and_then(|s| Some((s.store.clone(), s.store.event_signal()?)))
    else {
        return;
    };
    let mut cursor = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        signal.borrow_and_update();
        let Some(shared) = shared.upgrade() else { return };
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

/// Broadcasts every event after `cursor` (the log's end the first time).
async fn drain(
    store: &dyn CallStore,
    shared: &Shared,
    cursor: &mut Option<EventId>,
) -> Result<(), crate::store::StoreError> {
    let mut at = match *cursor {
        Some(at) => at,
        None => {
            let latest = store.events(0, 1).await?.latest;
            *cursor = Some(latest);
            latest
        }
    };
    loop {
        let page = store.events(at, MAX_EVENT_PAGE.min(PAGE * 4)).await?;
        if !page.continues(at) {
            // Pruned under the tailer's feet (or the store was reset): jump to the end;
            // each feed notices the gap and resyncs or replays on its own.
            at = page.latest;
            *cursor = Some(at);
            continue;
        }
        let full = page.events.len() == MAX_EVENT_PAGE.min(PAGE * 4);
        for event in page.events {
            at = event.id;
            // No receiver is fine: nobody to tell.
            let _ = shared.hub.tx.send(Arc::new(event));
        }
        *cursor = Some(at);
        if !full {
            return Ok(());
        }
    }
}
