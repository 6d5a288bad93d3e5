//! Carrying out a session's actions for one stream: the transport-independent half of
//! every stream endpoint (see the module docs of [`super`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use pbx_core::media::session::{Action, ProtocolError};
use pbx_core::packet::{NewPacket, Packet};
use pbx_core::{CallId, MediaFormat};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use pbx_core::events::EventBody;
use pbx_core::media::notes::{SignalKind, StreamInfo, StreamNote, StreamSignal};

use super::{StreamStats, Streams};

/// A frame waiting for its stream's storing task, with when it was read off the wire.
pub(crate) type Queued = (Packet, Instant);

/// Seconds from a stream frame read off the wire to its being durable, by protocol.
pub const FRAME_DURABLE_SECONDS: &str = "pbx_stream_frame_durable_seconds";

/// What the transport does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// The stream ended normally: close it.
    Close,
}

/// The stream cannot go on for a reason of ours (the call could not be opened).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

struct Open {
    call_id: CallId,
    /// The protocol's id of the stream, for the stream events.
    stream_id: String,
    tx: Option<mpsc::Sender<Queued>>,
    storer: Option<JoinHandle<()>>,
}

/// One stream's state on the server side.
pub(crate) struct StreamDriver {
    streams: Streams,
    id: u64,
    protocol: &'static str,
    peer: String,
    open: Option<Open>,
    dropped: u64,
    hung_up: bool,
}

impl StreamDriver {
    pub(crate) fn new(streams: Streams, protocol: &'static str, peer: String) -> Self {
        let id = streams.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let c = &streams.inner.stats.0;
        StreamStats::add(&c.streams_open, 1);
        StreamStats::add(&c.streams_total, 1);
        tracing::debug!(stream = id, protocol, peer = %peer, "media stream connected");
        Self { streams, id, protocol, peer, open: None, dropped: 0, hung_up: false }
    }

    pub(crate) fn call_id(&self) -> Option<&CallId> {
        self.open.as_ref().map(|o| &o.call_id)
    }

    /// Carries out a session's actions in order.
    pub(crate) async fn apply(&mut self, actions: Vec<Action>) -> Result<Flow, Refused> {
        let mut flow = Flow::Continue;
        for action in actions {
            match action {
                Action::Open { call_id, format, metadata } => {
                    tracing::info!(
                        stream = self.id,
                        call_id = %call_id,
                        protocol = %metadata.protocol,
                        format = %format,
                        stream_id = metadata.stream_id.as_deref().unwrap_or(""),
                        account = metadata.account.as_deref().unwrap_or(""),
                        tracks = ?metadata.tracks,
                        custom_parameters = ?metadata.custom_parameters,
                        "media stream started"
                    );
                    let stream_id = metadata.stream_id.clone().unwrap_or_else(|| format!("pbx-{}", self.id));
                    self.open(call_id.clone(), format, stream_id).await?;
                    let info = StreamInfo::from_session(&metadata, self.streams.inner.gateway.now());
                    note(&self.streams, &call_id, StreamNote::Started(Box::new(info))).await;
                }
                Action::Store(packets) => self.enqueue(packets),
                Action::Dtmf { digit, offset_ms } => {
                    tracing::info!(stream = self.id, call_id = ?self.call_id(), %digit, offset_ms, "dtmf");
                    self.signal(SignalKind::Dtmf, digit.to_string(), offset_ms).await;
                }
                Action::Mark { name, offset_ms } => {
                    tracing::info!(stream = self.id, call_id = ?self.call_id(), name, offset_ms, "mark");
                    self.signal(SignalKind::Mark, name, offset_ms).await;
                }
                Action::PeerError { detail } => {
                    tracing::warn!(stream = self.id, call_id = ?self.call_id(), protocol = self.protocol, detail, "the peer reported an error");
                }
                Action::HangUp => self.hang_up().await,
                Action::Close { .. } => flow = Flow::Close,
                other => tracing::debug!(stream = self.id, action = ?other, "action not handled by this transport"),
            }
        }
        Ok(flow)
    }

    async fn open(&mut self, call_id: CallId, format: MediaFormat, stream_id: String) -> Result<(), Refused> {
        let inner = &self.streams.inner;
        if let Err(e) = inner.gateway.open(&call_id, format).await {
            tracing::warn!(stream = self.id, call_id = %call_id, error = %e, "media stream refused: the call cannot be opened");
            return Err(Refused(format!("call {call_id} cannot be opened: {e}")));
        }
        inner.live.lock().unwrap_or_else(|p| p.into_inner()).insert(call_id.clone(), self.id);
        let (tx, rx) = mpsc::channel(inner.config.buffer_frames);
        let max_batch = inner.gateway.config().max_request_batch.min(inner.config.buffer_frames).max(1);
        let storer = tokio::spawn(store_loop(self.streams.clone(), self.protocol, call_id.clone(), rx, max_batch));
        let started = EventBody::StreamStarted { protocol: self.protocol.to_owned(), stream_id: stream_id.clone() };
        record(&self.streams, &call_id, &started).await;
        self.open = Some(Open { call_id, stream_id, tx: Some(tx), storer: Some(storer) });
        Ok(())
    }

    /// Notes a DTMF digit or a mark on the open call.
    async fn signal(&self, kind: SignalKind, value: String, offset_ms: u64) {
        let Some(open) = &self.open else { return };
        let at = self.streams.inner.gateway.now();
        let signal = StreamSignal { kind, value, offset_ms, stream_id: Some(open.stream_id.clone()), at };
        note(&self.streams, &open.call_id, StreamNote::Signal(signal)).await;
    }

    fn enqueue(&mut self, packets: Vec<Packet>) {
        let Some(open) = &self.open else { return };
        let Some(tx) = &open.tx else { return };
        let received = Instant::now();
        for packet in packets {
            if tx.try_send((packet, received)).is_err() {
                self.dropped += 1;
                StreamStats::add(&self.streams.inner.stats.0.frames_dropped, 1);
                if self.dropped.is_power_of_two() {
                    tracing::warn!(
                        stream = self.id,
                        call_id = %open.call_id,
                        dropped = self.dropped,
                        buffer_frames = self.streams.inner.config.buffer_frames,
                        "storage is behind: frames of this stream are dropped (counted as gaps)"
                    );
                }
            }
        }
    }

    /// Waits until every queued frame was stored (or given up on).
    async fn drain(&mut self) {
        if let Some(open) = &mut self.open {
            open.tx = None;
            if let Some(storer) = open.storer.take() {
                let _ = storer.await;
            }
        }
    }

    async fn hang_up(&mut self) {
        self.drain().await;
        let Some(open) = &self.open else { return };
        self.hung_up = true;
        complete_now(&self.streams, &open.call_id, self.id).await;
    }

    /// Logs and counts a protocol error; the transport closes the stream.
    pub(crate) fn protocol_error(&self, error: &ProtocolError) {
        StreamStats::add(&self.streams.inner.stats.0.protocol_errors, 1);
        tracing::warn!(
            stream = self.id,
            protocol = self.protocol,
            peer = %self.peer,
            call_id = ?self.call_id(),
            error = %error,
            "media stream closed: protocol error"
        );
    }

    /// The stream is over (ended, failed or dropped): drains its queue and, unless it
    /// hung up, completes its call after the idle timeout unless it reconnects.
    pub(crate) async fn finish(mut self) {
        self.drain().await;
        if self.dropped > 0 {
            tracing::warn!(stream = self.id, call_id = ?self.call_id(), dropped = self.dropped, "media stream closed with dropped frames");
        }
        let Some(open) = &self.open else { return };
        let reason = if self.hung_up { "end" } else { "disconnected" };
        let ended = EventBody::StreamEnded {
            protocol: self.protocol.to_owned(),
            stream_id: open.stream_id.clone(),
            reason: reason.to_owned(),
        };
        record(&self.streams, &open.call_id, &ended).await;
        if self.hung_up {
            return;
        }
        let (streams, call_id, id) = (self.streams.clone(), open.call_id.clone(), self.id);
        let timeout = streams.inner.config.stream_idle_timeout;
        tracing::info!(stream = id, call_id = %call_id, ?timeout, "media stream dropped without its end; the call completes after the idle timeout unless it reconnects");
        complete_after_idle(streams, call_id, id);
    }
}

/// Notes a stream's metadata or signal with its call; a failure (the call's notes are
/// full, the store is down) is logged and counted, and the stream goes on.
pub(super) async fn note(streams: &Streams, call_id: &CallId, note: StreamNote) {
    if let Err(error) = streams.inner.gateway.note_stream(call_id, &note).await {
        metrics::counter!(super::NOTES_FAILED, "kind" => note.kind()).increment(1);
        tracing::warn!(call_id = %call_id, %error, kind = note.kind(), "cannot note the stream's metadata or signal");
    }
}

/// Writes a stream event to the call's log; a failure is logged (the stream goes on:
/// its frames matter more than its events).
pub(super) async fn record(streams: &Streams, call_id: &CallId, event: &EventBody) {
    if let Err(error) = streams.inner.gateway.record_event(call_id, event).await {
        tracing::warn!(call_id = %call_id, %error, event = event.event_type().as_str(), "cannot record the stream event");
    }
}

/// Completes an ended stream's call at once, and forgets the stream (if it is still
/// the call's newest). Every protocol's streams use it.
pub(super) async fn complete_now(streams: &Streams, call_id: &CallId, id: u64) {
    {
        let mut live = streams.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.get(call_id) == Some(&id) {
            live.remove(call_id);
        }
    }
    match streams.inner.gateway.complete(call_id).await {
        Ok(_) => tracing::info!(stream = id, call_id = %call_id, "media stream ended; call completed"),
        Err(e) => tracing::warn!(stream = id, call_id = %call_id, error = %e, "cannot complete the call"),
    }
}

/// Completes a dropped stream's call after the idle timeout, unless a newer stream of
/// the same call registered meanwhile (a reconnect). Every protocol's streams use it.
pub(super) fn complete_after_idle(streams: Streams, call_id: CallId, id: u64) {
    let timeout = streams.inner.config.stream_idle_timeout;
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let newest = {
            let mut live = streams.inner.live.lock().unwrap_or_else(|p| p.into_inner());
            let newest = live.get(&call_id) == Some(&id);
            if newest {
                live.remove(&call_id);
            }
            newest
        };
        if newest {
            match streams.inner.gateway.complete(&call_id).await {
                Ok(_) => tracing::info!(call_id = %call_id, "media stream idle: call completed"),
                Err(e) => tracing::warn!(call_id = %call_id, error = %e, "media stream idle: cannot complete the call"),
            }
        } else {
            StreamStats::add(&streams.inner.stats.0.resumed, 1);
            tracing::info!(call_id = %call_id, "media stream idle timeout passed; the call reconnected, so it goes on");
        }
    });
}

impl Drop for StreamDriver {
    fn drop(&mut self) {
        self.streams.inner.stats.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stores a stream's queued frames in batches until the queue closes. Retryable store
/// errors are retried with backoff for up to the idle timeout per batch; frames given
/// up on are counted as dropped. Every protocol's streams store through it.
pub(super) async fn store_loop(
    streams: Streams,
    protocol: &'static str,
    call_id: CallId,
    mut rx: mpsc::Receiver<Queued>,
    max_batch: usize,
) {
    let inner = &streams.inner;
    let counters = &inner.stats.0;
    let mut buf = Vec::with_capacity(max_batch);
    let mut received = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut buf, max_batch).await > 0 {
        received.clear();
        let batch: Vec<NewPacket> = buf
            .drain(..)
            .map(|(p, at)| {
                received.push(at);
                NewPacket::new(call_id.clone(), p)
            })
            .collect();
        let n = batch.len() as u64;
        let deadline = Instant::now() + inner.config.stream_idle_timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            match inner.gateway.ingest_frames(batch.clone()).await {
                Ok(outcomes) => {
                    crate::metrics::record_outcomes(protocol, &outcomes);
                    let durable = metrics::histogram!(FRAME_DURABLE_SECONDS, "protocol" => protocol);
                    for at in &received {
                        durable.record(at.elapsed().as_secs_f64());
                    }
                    let rejected = outcomes.iter().filter(|o| o.is_err()).count() as u64;
                    StreamStats::add(&counters.frames_stored, n - rejected);
                    if rejected > 0 {
                        StreamStats::add(&counters.frames_rejected, rejected);
                        tracing::warn!(call_id = %call_id, rejected, "the store refused frames of a media stream (resent with other data)");
                    }
                    break;
                }
                Err(e) if e.is_retryable() && Instant::now() + delay < deadline => {
                    tracing::warn!(call_id = %call_id, protocol, error = %e, frames = n, retry_in = ?delay, "storing media frames failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    StreamStats::add(&counters.frames_dropped, n);
                    crate::metrics::record_refused(protocol, n);
                    tracing::error!(call_id = %call_id, protocol, error = %e, frames = n, "storing media frames failed; they are dropped (counted as gaps)");
                    break;
                }
            }
        }
    }
}
