//! The AI worker: claims due calls, runs the AI under the retry policy with bounded
//! concurrency, heartbeats its leases, records outcomes, and shuts down gracefully.
//!
//! # How it runs
//! One loop claims work and spawns one task per claimed call, never more than
//! `concurrency` at once. Between claims it sleeps until the first of: a hang-up or
//! re-drive in this process ([`Gateway::complete`], [`Gateway::redrive`]), the store's
//! own wake-up ([`CallStore::wait_for_work`], PostgreSQL's NOTIFY), the next scheduled
//! retry ([`CallStore::next_due_at`]), a free slot when it was saturated, or the
//! fallback poll.
//!
//! Each attempt reads the call's packets, transcribes them, analyses the transcript's
//! sentiment, and records the result, all fenced by the attempt number of its claim. A
//! heartbeat extends the lease while the AI runs; if the lease was lost (another worker
//! rescued the call), the attempt stops and records nothing. Failures go through the [`RetryPolicy`](crate::retry::RetryPolicy): a
//! retryable error schedules the next attempt, a permanent one (or unusable audio, or
//! the last allowed attempt) fails the call.
//!
//! Every retry lives in the store (`next_attempt_at`, `failures`), so a crash loses
//! nothing: the lease expires and any processor picks the call up again.
//!
//! # Layout
//! This file holds the loop (claims, idle hang-up, sleeping and waking, shutdown);
//! `attempt.rs` one attempt from claim to recorded outcome; `cache.rs` the transcripts
//! kept for a retry whose sentiment step failed; `config.rs` the settings.
//!
//! # What it uses of the gateway
//! The processor is built from a [`Gateway`] and uses only its API, never its
//! internals:
//! - the public reads: [`Gateway::store`] (claims, heartbeats and the fenced outcome
//!   writes go to the store directly), [`Gateway::now`] (the one clock) and
//!   [`Gateway::audio`] (a call's assembled audio, with the gateway's typed errors);
//! - three crate-private methods for what the public API does not offer: waiting for
//!   and raising the gateway's local work signal (`work_notified`, `notify_work`), and
//!   the idle hang-up typed as what it can fail with, a [`StoreError`]
//!   (`hang_up_idle`, which [`Gateway::complete_idle`] wraps).
//!
//! Methods rather than a struct of handles handed over at construction: the gateway
//! keeps sole ownership of its state (the work signal also serves its own hang-ups and
//! re-drives), and the processor's needs are listed in one place in the gateway.
//! Errors cross this boundary typed: store failures stay [`StoreError`], unusable audio
//! stays the [`GatewayError`] it was, and neither becomes the other through a string.
//!
//! [`CallStore::wait_for_work`]: crate::store::CallStore::wait_for_work
//! [`CallStore::next_due_at`]: crate::store::CallStore::next_due_at
//! [`GatewayError`]: crate::gateway::GatewayError

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::ai::AiClient;
use crate::gateway::Gateway;
use crate::id::WorkerId;
use crate::store::StoreError;

mod attempt;
mod cache;
mod config;

pub use config::{InvalidProcessorConfig, ProcessorConfig};

use cache::TranscriptCache;

/// Most idle calls hung up per store call.
const IDLE_SWEEP_LIMIT: usize = 1000;
/// Most calls claimed per store call.
const CLAIM_BATCH: usize = 256;

/// The background AI worker. See the module docs.
///
/// ```no_run
/// # async fn demo(gateway: pbx_core::gateway::Gateway) -> Result<(), Box<dyn std::error::Error>> {
/// use std::{sync::Arc, time::Duration};
/// use pbx_core::prelude::*;
///
/// let ai = Arc::new(SimulatedAi::new(SimulatedAiConfig::default())?);
/// let processor = Processor::new(&gateway, ai, ProcessorConfig::default())?.spawn();
/// // ... serve ...
/// processor.shutdown(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Processor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gateway: Gateway,
    ai: Arc<dyn AiClient>,
    /// The AI's name, the `provider` label of the metrics.
    provider: metrics::SharedString,
    config: ProcessorConfig,
    rng: Mutex<StdRng>,
    /// Transcripts of calls whose sentiment step failed, for their retries.
    transcripts: TranscriptCache,
    slots: Arc<Semaphore>,
    /// AI requests (transcription or sentiment) awaiting an answer.
    ai_gauge: Gauge,
    /// Times the background loop went to sleep ([`Processor::watch_sleeps`]).
    sleeps: watch::Sender<u64>,
    /// Becomes `true` when running attempts must give their leases back.
    abort: watch::Receiver<bool>,
    abort_tx: watch::Sender<bool>,
}

/// A running processor; [`ProcessorHandle::shutdown`] stops it gracefully.
///
/// Dropping the handle without shutting down leaves the processor running until the
/// runtime stops; its leases then expire and another processor rescues the calls.
#[derive(Debug)]
pub struct ProcessorHandle {
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Processor {
    /// A processor for `gateway`'s store, publishing on its event channel.
    pub fn new(
        gateway: &Gateway,
        ai: Arc<dyn AiClient>,
        config: ProcessorConfig,
    ) -> Result<Self, InvalidProcessorConfig> {
        config.validate()?;
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let (abort_tx, abort) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(config.concurrency));
        Ok(Self {
            inner: Arc::new(Inner {
                gateway: gateway.clone(),
                provider: ai.name().into(),
                ai,
                config,
                rng: Mutex::new(rng),
                transcripts: TranscriptCache::default(),
                slots,
                ai_gauge: Gauge::default(),
                sleeps: watch::Sender::new(0),
                abort,
                abort_tx,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &ProcessorConfig {
        &self.inner.config
    }

    /// AI attempts running right now (never more than `concurrency`).
    pub fn in_flight(&self) -> usize {
        self.inner.config.concurrency - self.inner.slots.available_permits()
    }

    /// What the processor is doing: its AI requests in flight now and at most so far.
    pub fn status(&self) -> ProcessorStatus {
        ProcessorStatus {
            worker_id: self.inner.config.worker_id.clone(),
            concurrency: self.inner.config.concurrency,
            attempts_in_flight: self.in_flight(),
            ai_requests_in_flight: self.inner.ai_gauge.current.load(Ordering::Relaxed),
            ai_requests_peak: self.inner.ai_gauge.peak.load(Ordering::Relaxed),
            sleeps: *self.inner.sleeps.borrow(),
        }
    }

    /// Follows [`ProcessorStatus::sleeps`], how many times the background loop has
    /// gone to sleep. Work made due after the count was seen to rise was missed by the
    /// claim and the next-due check made before that sleep, so only a wake-up (or the
    /// fallback poll) lets the loop claim it: tests wait on this to prove a wake-up
    /// without sleeping themselves.
    pub fn watch_sleeps(&self) -> watch::Receiver<u64> {
        self.inner.sleeps.subscribe()
    }

    /// Runs in the background until shut down. Build it inside a Tokio runtime.
    pub fn spawn(self) -> ProcessorHandle {
        let (stop, stopped) = watch::channel(None);
        let task = tokio::spawn(self.run(stopped));
        ProcessorHandle { stop, task }
    }

    /// Hangs up idle calls (when `idle_timeout` is set), claims once, and runs every
    /// claimed call to its recorded outcome; the number claimed. For tests and embedders
    /// that drive the processor themselves.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        self.sweep_idle().await?;
        let mut attempts = JoinSet::new();
        let claimed = self.claim_into(&mut attempts).await?;
        while attempts.join_next().await.is_some() {}
        Ok(claimed)
    }

    async fn run(self, mut stopped: watch::Receiver<Option<Duration>>) {
        let inner = &self.inner;
        let gateway = &inner.gateway;
        let store = gateway.store();
        let mut attempts = JoinSet::new();
        let mut last_sweep: Option<tokio::time::Instant> = None;
        tracing::info!(worker = %inner.config.worker_id, concurrency = inner.config.concurrency, "processor started");
        let grace = loop {
            if let Some(grace) = *stopped.borrow() {
                break grace;
            }
            let sweep_every = inner.config.poll_interval;
            if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                if let Err(error) = self.sweep_idle().await {
                    tracing::warn!(%error, "idle sweep failed");
                }
                last_sweep = Some(tokio::time::Instant::now());
            }
            let claimed = self.claim_into(&mut attempts).await;
            let saturated = inner.slots.available_permits() == 0;
            let wait = match claimed {
                // More may be due than one claim took: claim again at once. The claim
                // that finds nothing sends the loop to sleep.
                Ok(n) if n > 0 && !saturated => continue,
                Ok(_) => self.time_to_next_due().await,
                Err(error) => {
                    tracing::warn!(%error, "claim failed; trying again shortly");
                    inner.config.poll_interval.min(Duration::from_secs(1))
                }
            };
            // Counted before the wake-ups below are first polled: work made due from
            // here on is seen by them (a work signal raised before that is kept).
            inner.sleeps.send_modify(|n| *n += 1);
            tokio::select! {
                biased;
                _ = stopped.changed() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {
                    // A slot freed: loop to claim (drain every finished task first).
                    while attempts.try_join_next().is_some() {}
                }
                _ = gateway.work_notified(), if !saturated => {}
                _ = store.wait_for_work(), if !saturated => {}
                _ = tokio::time::sleep(wait), if !saturated => {}
            }
        };
        tracing::info!(running = attempts.len(), ?grace, "processor stopping: no more claims");
        if tokio::time::timeout(grace, async { while attempts.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!(running = attempts.len(), "grace period over: releasing the leases still held");
            let _ = inner.abort_tx.send(true);
            while attempts.join_next().await.is_some() {}
        }
        tracing::info!("processor stopped");
    }

    /// How long to sleep before the next scheduled retry, at most the poll interval.
    async fn time_to_next_due(&self) -> Duration {
        let gateway = &self.inner.gateway;
        let poll = self.inner.config.poll_interval;
        match gateway.store().next_due_at().await {
            Ok(Some(due)) => {
                let now = gateway.now();
                // Due already (for instance a lease held elsewhere that just expired):
                // a short pause instead of a hot loop.
                (due - now).to_std().unwrap_or(Duration::from_millis(5)).clamp(Duration::from_millis(5), poll)
            }
            Ok(None) => poll,
            Err(error) => {
                tracing::warn!(%error, "next_due_at failed");
                poll
            }
        }
    }

    async fn sweep_idle(&self) -> Result<(), StoreError> {
        let Some(idle_for) = self.inner.config.idle_timeout else { return Ok(()) };
        loop {
            let ids = self.inner.gateway.hang_up_idle(idle_for, IDLE_SWEEP_LIMIT).await?;
            if !ids.is_empty() {
                tracing::info!(calls = ids.len(), "hung up idle calls");
            }
            if ids.len() < IDLE_SWEEP_LIMIT {
                return Ok(());
            }
        }
    }

    /// Claims as many due calls as there are free slots and spawns their attempts.
    async fn claim_into(&self, attempts: &mut JoinSet<()>) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let free = inner.slots.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            return Ok(0);
        }
        let gateway = &inner.gateway;
        let now = gateway.now();
        let claims = gateway.store().claim(&inner.config.worker_id, inner.config.lease, free, now).await?;
        let claimed = claims.len();
        for claim in claims {
            // Cannot fail: at most `free` claims, and only this loop takes slots.
            let Ok(slot) = inner.slots.clone().try_acquire_owned() else {
                tracing::error!(call_id = %claim.call_id, "no free slot for a claimed call; releasing it");
                let _ = gateway.store().release(&claim.attempt_ref(), now).await;
                continue;
            };
            let this = self.clone();
            attempts.spawn(async move {
                this.attempt(claim).await;
                drop(slot);
            });
        }
        Ok(claimed)
    }
}

impl ProcessorHandle {
    /// Stops claiming, lets running attempts finish within `grace`, releases the
    /// leases of those still running after it, and returns once all have stopped.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        if let Err(error) = self.task.await {
            tracing::error!(%error, "processor task ended abnormally");
        }
    }
}

impl std::fmt::Debug for dyn AiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn AiClient")
    }
}

/// A snapshot of a [`Processor`] ([`Processor::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessorStatus {
    /// Names this worker's leases.
    pub worker_id: WorkerId,
    /// Most attempts (and so AI requests) in flight at once.
    pub concurrency: usize,
    /// Attempts running now.
    pub attempts_in_flight: usize,
    /// AI requests awaiting an answer now.
    pub ai_requests_in_flight: usize,
    /// The most AI requests that were ever awaiting an answer at once; never more than
    /// `concurrency`, since an attempt sends one request at a time.
    pub ai_requests_peak: usize,
    /// Times the background loop has gone to sleep (after a claim round that left
    /// nothing to claim at once) until a wake-up, a due retry, a free slot or the
    /// fallback poll; 0 before it first did, and always 0 for a processor driven by
    /// [`Processor::run_once`].
    pub sleeps: u64,
}

/// Counts futures in flight and remembers the most at once.
#[derive(Debug, Default)]
struct Gauge {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    /// Runs `work`, counted from its first poll until it finishes or is dropped.
    async fn track<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let now = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        let _counted = Counted(&self.current);
        work.await
    }
}
