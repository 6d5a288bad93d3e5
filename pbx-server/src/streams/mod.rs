//! Media streams from PBXs: Twilio and Telnyx Media Streams (WebSocket) and Asterisk
//! AudioSocket (TCP).
//!
//! The protocols themselves are pure sessions in [`pbx_core::media`]; this module only
//! moves bytes between a socket and a session and carries out the session's actions
//! through the [`Gateway`], like every other ingest:
//!
//! - `Open` -> [`Gateway::open`] (the call and its media format), awaited before any
//!   frame of the stream is stored.
//! - `Store` -> a **bounded** per-stream queue ([`StreamConfig::buffer_frames`]) between
//!   the socket reader and that stream's storing task, which stores what queued in
//!   batches with [`Gateway::ingest_batch`] (a frame counts once it is durable). When
//!   the store falls behind and the queue is full, further frames of that stream are
//!   dropped and counted ([`StreamStats`], a warning per stream, and a summary when the
//!   stream closes); their sequences stay missing, so the call's ordering report counts
//!   them as gaps. A stream never blocks another one and never grows without bound.
//!   A failing store is retried (its retryable errors, with backoff, for up to
//!   [`StreamConfig::stream_idle_timeout`] per batch) while the queue absorbs new frames.
//! - `HangUp` -> the queue is drained, then [`Gateway::complete`].
//! - A protocol error closes that one stream with the error as its reason (WebSocket
//!   close code 1008, 1003 for a binary frame or an unsupported format, 1009 for a frame
//!   too large) and is logged; other streams are unaffected.
//! - A stream that drops without its end marker: its queue is drained, and the call is
//!   completed after [`StreamConfig::stream_idle_timeout`] unless a newer stream of the
//!   same call opened meanwhile (a reconnect). On a process exit before that, the
//!   server's `--idle-timeout` sweep completes the call later.
//!
//! Wiring: build one [`Streams`] per server, nest [`Streams::routes`] under `/v1/media`
//! (`GET /v1/media/twilio`, `GET /v1/media/telnyx`), and run
//! [`audiosocket::serve`] on a TCP listener for AudioSocket.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pbx_core::CallId;
use pbx_core::gateway::Gateway;

pub mod audiohook;
pub mod audiosocket;
mod driver;

pub use driver::FRAME_DURABLE_SECONDS;

/// Each media socket's read buffer. The library's default, 128 KiB, is zeroed on
/// every read: with 600 Twilio streams (each message ~400 bytes) that memset was 29 %
/// of the server's CPU (perf). Larger messages still arrive whole; the buffer only
/// sizes each read.
pub(crate) const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Stream notes (metadata, DTMF, marks) that could not be kept, by kind (`stream`, `signal`).
pub const NOTES_FAILED: &str = "pbx_stream_notes_failed_total";

mod signature;
pub mod twilio;

pub use signature::{expected_url, twilio_signature};

/// Settings of the media stream endpoints.
#[derive(Clone)]
pub struct StreamConfig {
    /// How long after a stream dropped without its end marker its call is completed,
    /// unless the call reconnects first. Default 30 s.
    pub stream_idle_timeout: Duration,
    /// Frames a stream may queue ahead of its store writes (per stream). Default 500
    /// (10 s of 20 ms frames, about 100 KiB of mu-law).
    pub buffer_frames: usize,
    /// The Twilio auth token: when set, `X-Twilio-Signature` is verified on the
    /// upgrade of `/twilio` and a missing or wrong one is answered 403.
    pub twilio_auth_token: Option<Secret>,
    /// The public base URL Twilio connects to (`wss://pbx.example.com`), for the
    /// signature: it replaces the scheme and host the request shows (see
    /// [`expected_url`]).
    pub public_url: Option<String>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            stream_idle_timeout: Duration::from_secs(30),
            buffer_frames: 500,
            twilio_auth_token: None,
            public_url: None,
        }
    }
}

impl fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConfig")
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("buffer_frames", &self.buffer_frames)
            .field("twilio_auth_token", &self.twilio_auth_token)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// A secret whose `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Counters of the media stream endpoints, shared by every stream. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StreamStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    streams_open: AtomicU64,
    streams_total: AtomicU64,
    frames_stored: AtomicU64,
    frames_dropped: AtomicU64,
    frames_rejected: AtomicU64,
    protocol_errors: AtomicU64,
    resumed: AtomicU64,
}

/// A reading of [`StreamStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStatsSnapshot {
    /// Streams connected now.
    pub streams_open: u64,
    /// Streams accepted since start.
    pub streams_total: u64,
    /// Frames durably stored (duplicates included).
    pub frames_stored: u64,
    /// Frames dropped because a stream's queue was full or its store writes failed.
    pub frames_dropped: u64,
    /// Frames the store refused (a sequence stored before with other data).
    pub frames_rejected: u64,
    /// Streams closed for breaking their protocol.
    pub protocol_errors: u64,
    /// Dropped streams whose call did not complete at the idle timeout because a newer
    /// stream of the same call had connected (a reconnect).
    pub resumed: u64,
}

impl StreamStats {
    /// The counters now.
    pub fn snapshot(&self) -> StreamStatsSnapshot {
        let c = &self.0;
        StreamStatsSnapshot {
            streams_open: c.streams_open.load(Ordering::Relaxed),
            streams_total: c.streams_total.load(Ordering::Relaxed),
            frames_stored: c.frames_stored.load(Ordering::Relaxed),
            frames_dropped: c.frames_dropped.load(Ordering::Relaxed),
            frames_rejected: c.frames_rejected.load(Ordering::Relaxed),
            protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
            resumed: c.resumed.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The media stream endpoints over one gateway: configuration, counters and the
/// registry of live streams (for reconnects). Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: Gateway,
    config: StreamConfig,
    stats: StreamStats,
    /// The newest stream of each call with a stream open or a pending idle completion.
    live: Mutex<HashMap<CallId, u64>>,
    next_stream: AtomicU64,
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streams").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Streams {
    /// The endpoints over `gateway`.
    pub fn new(gateway: Gateway, config: StreamConfig) -> Self {
        let config = StreamConfig { buffer_frames: config.buffer_frames.max(1), ..config };
        Self {
            inner: Arc::new(Inner {
                gateway,
                config,
                stats: StreamStats::default(),
                live: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
            }),
        }
    }

    /// `GET /twilio` and `GET /telnyx` (WebSocket upgrades); nest under `/v1/media`.
    pub fn routes(&self) -> poem::Route {
        twilio::routes(self.clone())
    }

    /// The counters.
    pub fn stats(&self) -> StreamStats {
        self.inner.stats.clone()
    }

    /// The settings in force.
    pub fn config(&self) -> &StreamConfig {
        &self.inner.config
    }

    /// The gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }
}
