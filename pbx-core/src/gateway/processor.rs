//! The AI worker: claims due calls, runs the AI under the retry policy with bounded
//! concurrency, heartbeats its leases, records outcomes, and shuts down gracefully.
//!
//! # How it runs
//! One loop claims work and spawns one task per claimed call, never more than
//! `concurrency` at once. Between claims it sleeps until the first of: a hang-up or
//! re-drive in this process ([`Gateway::complete`]), the store's own wake-up
//! ([`CallStore::wait_for_work`](crate::store::CallStore::wait_for_work), PostgreSQL's
//! NOTIFY), the next scheduled retry ([`CallStore::next_due_at`]
//! (crate::store::CallStore::next_due_at)), a free slot when it was saturated, or the
//! fallback poll.
//!
//! Each attempt reads the call's packets, transcribes them, analyses the transcript's
//! sentiment, and records the result, all fenced by the attempt number of its claim. A
//! heartbeat extends the lease while the AI runs; if the lease was lost (another worker
//! rescued the call), the attempt stops and records nothing. Failures go through the
//! [`RetryPolicy`]: a retryable error schedules the next attempt, a permanent one or
//! the last allowed attempt fails the call.
//!
//! Every retry lives in the store (`next_attempt_at`, `failures`), so a crash loses
//! nothing: the lease expires and any processor picks the call up again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{Gateway, GatewayError, Shared};
use crate::ai::{AiClient, AiError, AiResult, Transcript, TranscriptionRequest};
use crate::id::WorkerId;
use crate::media::AudioStats;
use crate::retry::{InvalidRetryPolicy, RetryPolicy};
use crate::state::CallState;
use crate::store::{AttemptFailure, AttemptRef, Claim, StoreError};

/// Most idle calls hung up per store call.
const IDLE_SWEEP_LIMIT: usize = 1000;
/// Most calls claimed per store call.
const CLAIM_BATCH: usize = 256;
/// Retries of an outcome write while the store is unavailable.
const RECORD_RETRIES: u32 = 5;

/// Settings of a [`Processor`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Names this worker's leases. Default `pbx-<pid>-<random>`.
    pub worker_id: WorkerId,
    /// Most AI runs in flight at once. Default 64.
    pub concurrency: usize,
    /// Lease length; a crashed worker's calls are rescued this long after its last
    /// heartbeat. Default 30 s.
    pub lease: Duration,
    /// How often a running attempt extends its lease; less than `lease`. Default 10 s.
    pub heartbeat_interval: Duration,
    /// Fallback poll when no wake-up arrives. Default 5 s.
    pub poll_interval: Duration,
    /// Longest one attempt's AI calls may take before the attempt fails as a
    /// (retryable) time-out. Default 5 minutes.
    pub attempt_timeout: Duration,
    /// Retry policy for failed attempts.
    pub retry: RetryPolicy,
    /// Hang up calls silent for this long; `None` never does. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Seed for the jitter RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            worker_id: WorkerId::new(format!("pbx-{}-{:08x}", std::process::id(), rand::random::<u32>())),
            concurrency: 64,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            idle_timeout: Some(Duration::from_secs(300)),
            seed: None,
        }
    }
}

/// An invalid [`ProcessorConfig`] setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProcessorConfig {
    /// A setting out of range.
    #[error("invalid processor setting {setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The retry policy is invalid.
    #[error("invalid retry policy: {0}")]
    Retry(#[from] InvalidRetryPolicy),
}

impl ProcessorConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidProcessorConfig> {
        let bad = |setting, reason| Err(InvalidProcessorConfig::Setting { setting, reason });
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.lease < Duration::from_millis(1) {
            return bad("lease", "must be at least 1 ms");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.lease {
            return bad("heartbeat_interval", "must be more than zero and less than the lease");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval", "must be more than zero");
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout", "must be more than zero");
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return bad("idle_timeout", "must be more than zero (or disabled)");
        }
        self.retry.validate()?;
        Ok(())
    }
}

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
        }
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
        let shared = inner.gateway.shared().clone();
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
                Ok(_) => self.time_to_next_due(&shared).await,
                Err(error) => {
                    tracing::warn!(%error, "claim failed; trying again shortly");
                    inner.config.poll_interval.min(Duration::from_secs(1))
                }
            };
            tokio::select! {
                biased;
                _ = stopped.changed() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {
                    // A slot freed: loop to claim (drain every finished task first).
                    while attempts.try_join_next().is_some() {}
                }
                _ = shared.work.notified(), if !saturated => {}
                _ = shared.store.wait_for_work(), if !saturated => {}
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
    async fn time_to_next_due(&self, shared: &Shared) -> Duration {
        let poll = self.inner.config.poll_interval;
        match shared.store.next_due_at().await {
            Ok(Some(due)) => {
                let now = shared.clock.now();
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
            let ids = self.inner.gateway.complete_idle(idle_for, IDLE_SWEEP_LIMIT).await.map_err(|e| match e {
                super::GatewayError::Store(e) => e,
                other => StoreError::backend(other.to_string()),
            })?;
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
        let shared = inner.gateway.shared();
        let now = shared.clock.now();
        let claims = shared.store.claim(&inner.config.worker_id, inner.config.lease, free, now).await?;
        let claimed = claims.len();
        for claim in claims {
            // Cannot fail: at most `free` claims, and only this loop takes slots.
            let Ok(slot) = inner.slots.clone().try_acquire_owned() else {
                tracing::error!(call_id = %claim.call_id, "no free slot for a claimed call; releasing it");
                let _ = shared.store.release(&claim.attempt_ref(), now).await;
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

    #[tracing::instrument(level = "debug", skip_all, fields(call_id = %claim.call_id, attempt = claim.attempt))]
    async fn attempt(&self, claim: Claim) {
        let inner = &self.inner;
        let gateway = &inner.gateway;
        let shared = gateway.shared();
        if claim.rescued {
            tracing::info!("rescued a call whose lease expired");
        }
        let attempt = claim.attempt_ref();
        let outcome = match self.run_ai_with_heartbeat(&attempt).await {
            Ok(outcome) => outcome,
            Err(stop) => {
                let outcome = match stop {
                    Stop::LeaseLost => "lease_lost",
                    Stop::Abort => "released",
                    Stop::Store(_) => "store_error",
                };
                metrics::counter!(crate::metrics::AI_ATTEMPTS, "provider" => self.inner.provider.clone(), "outcome" => outcome)
                    .increment(1);
                match stop {
                    Stop::LeaseLost => tracing::warn!("lease lost to another worker; dropping this attempt"),
                    Stop::Abort => {
                        let now = shared.clock.now();
                        match shared.store.release(&attempt, now).await {
                            Ok(()) => tracing::info!("lease released on shutdown"),
                            Err(error) => tracing::warn!(%error, "could not release the lease; it will expire"),
                        }
                    }
                    Stop::Store(error) => {
                        tracing::warn!(%error, "could not read the call; its lease will expire and it will run again")
                    }
                }
                return;
            }
        };
        match outcome {
            Ok(result) => self.record_success(&attempt, &result).await,
            Err(error) => self.record_failure(&claim, &attempt, &error).await,
        }
    }

    /// Reads the packets and runs both AI steps, extending the lease meanwhile.
    async fn run_ai_with_heartbeat(&self, attempt: &AttemptRef) -> Result<Result<AiResult, AiError>, Stop> {
        let inner = &self.inner;
        let shared = inner.gateway.shared();
        let cached = inner.transcripts.take(&attempt.call_id);
        let input = match cached {
            Some(cached) => Ok(cached),
            None => match inner.gateway.audio(&attempt.call_id).await {
                Ok(audio) => Err(audio),
                Err(GatewayError::Store(error)) => return Err(Stop::Store(error)),
                // The call's audio is unusable (none at all, or too long): no retry
                // can help, so the call ends FAILED with the reason.
                Err(error) => return Ok(Err(AiError::permanent(format!("call audio unusable: {error}")))),
            },
        };
        let ai = inner.ai.clone();
        let this = self.clone();
        let call_id = attempt.call_id.clone();
        let key = crate::ai::idempotency_key(&attempt.call_id, attempt.attempt);
        let attempt_number = attempt.attempt;
        let work = async move {
            let gauge = &this.inner.ai_gauge;
            // A transcript kept from an earlier attempt, or the audio to transcribe.
            let (transcript, stats) = match input {
                Ok(cached) => cached,
                Err((source_format, audio)) => {
                    let stats = audio.stats;
                    let request = TranscriptionRequest {
                        call_id: call_id.clone(),
                        attempt: attempt_number,
                        source_format,
                        audio: Arc::new(audio),
                    };
                    let started = tokio::time::Instant::now();
                    let transcript = gauge.track(ai.transcribe(&request)).await;
                    this.observe("transcribe", started, transcript.is_ok());
                    (transcript?, stats)
                }
            };
            let started = tokio::time::Instant::now();
            let analysis = gauge.track(ai.analyze_sentiment(&call_id, &key, &transcript)).await;
            this.observe("sentiment", started, analysis.is_ok());
            match analysis {
                Ok(analysis) => Ok(AiResult {
                    transcript: transcript.text,
                    sentiment: analysis.overall,
                    segments: transcript.segments,
                    channel_sentiment: analysis.channels,
                    audio: Some(stats),
                }),
                Err(error) => {
                    // A call's packets never change after hang-up, so its transcript
                    // stays valid: the retry skips the (costly) transcription.
                    if error.is_retryable() {
                        this.inner.transcripts.put(&call_id, (transcript, stats));
                    }
                    Err(error)
                }
            }
        };
        let timeout = inner.config.attempt_timeout;
        let work = async move {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| Err(AiError::timeout(format!("AI attempt took longer than {timeout:?}"))))
        };
        tokio::pin!(work);
        let mut heartbeat = tokio::time::interval(inner.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await; // The first tick is immediate; the claim just set the lease.
        let mut abort = inner.abort.clone();
        loop {
            tokio::select! {
                result = &mut work => return Ok(result),
                () = aborted(&mut abort) => return Err(Stop::Abort),
                _ = heartbeat.tick() => {
                    match shared.store.heartbeat(attempt, inner.config.lease, shared.clock.now()).await {
                        Ok(_) => {}
                        Err(StoreError::Fenced { .. } | StoreError::NotFound { .. }) => return Err(Stop::LeaseLost),
                        // Keep working: the next heartbeat may get through before the
                        // lease runs out; if not, the fenced write below is refused.
                        Err(error) => tracing::warn!(%error, "heartbeat failed"),
                    }
                }
            }
        }
    }

    /// Records one AI request's latency and outcome.
    fn observe(&self, step: &'static str, started: tokio::time::Instant, ok: bool) {
        let provider = self.inner.provider.clone();
        metrics::histogram!(crate::metrics::AI_REQUEST_SECONDS, "provider" => provider.clone(), "step" => step)
            .record(started.elapsed().as_secs_f64());
        let outcome = if ok { "ok" } else { "error" };
        metrics::counter!(crate::metrics::AI_REQUESTS, "provider" => provider, "step" => step, "outcome" => outcome)
            .increment(1);
    }

    async fn record_success(&self, attempt: &AttemptRef, result: &AiResult) {
        let gateway = &self.inner.gateway;
        let shared = gateway.shared();
        let recorded = self.with_store_retries(|now| shared.store.record_success(attempt, result, now)).await;
        match recorded {
            Ok((_, ())) => {
                tracing::info!(sentiment = result.sentiment.label.as_str(), "call archived");
                metrics::counter!(crate::metrics::AI_ATTEMPTS, "provider" => self.inner.provider.clone(), "outcome" => "archived")
                    .increment(1);
            }
            Err(error) => tracing::warn!(%error, "could not record the result; the call will run again"),
        }
    }

    async fn record_failure(&self, claim: &Claim, attempt: &AttemptRef, error: &AiError) {
        let inner = &self.inner;
        let gateway = &inner.gateway;
        let shared = gateway.shared();
        let failures = claim.failures.saturating_add(1);
        let delay = {
            let mut rng = inner.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            inner.config.retry.next_delay(failures, error, &mut *rng)
        };
        let message = error.to_string();
        let recorded = self
            .with_store_retries(|now| {
                let retry_at = delay.map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
                let failure = AttemptFailure { error: message.clone(), retry_at };
                async move { shared.store.record_failure(attempt, &failure, now).await.map(|state| (state, failure)) }
            })
            .await;
        match recorded {
            Ok((_, (state, failure))) => {
                tracing::info!(%error, failures, ?state, retry_at = ?failure.retry_at, "AI attempt failed");
                let outcome = if state == CallState::Failed { "failed" } else { "retry" };
                metrics::counter!(crate::metrics::AI_ATTEMPTS, "provider" => self.inner.provider.clone(), "outcome" => outcome)
                    .increment(1);
                if state == CallState::Failed {
                    metrics::counter!(crate::metrics::CALLS_FAILED).increment(1);
                } else if failure.retry_at.is_some() {
                    metrics::counter!(crate::metrics::RETRIES_SCHEDULED).increment(1);
                }
                if state != CallState::Failed && failure.retry_at.is_some() {
                    // Wake this process's loop so it schedules the retry's due time.
                    shared.work.notify_one();
                }
            }
            Err(store_error) => {
                tracing::warn!(%store_error, ai_error = %error, "could not record the failure; the call will run again")
            }
        }
    }

    /// Runs a fenced outcome write, retrying a few times while the store is
    /// unavailable (the lease usually outlives a brief outage). Returns the `now` the
    /// write succeeded with.
    async fn with_store_retries<T, F, Fut>(&self, mut write: F) -> Result<(DateTime<Utc>, T), StoreError>
    where
        F: FnMut(DateTime<Utc>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let shared = self.inner.gateway.shared();
        let mut pause = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            let now = shared.clock.now();
            match write(now).await {
                Ok(value) => return Ok((now, value)),
                Err(error) if error.is_retryable() && tries < RECORD_RETRIES => {
                    tries += 1;
                    tracing::debug!(%error, tries, "store unavailable while recording; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Most transcripts kept for retries; beyond it, the oldest is dropped.
const TRANSCRIPT_CACHE_LIMIT: usize = 10_000;
/// How long a kept transcript stays: past it, a retry (long after, or of a call that
/// another process finished meanwhile) transcribes again.
const TRANSCRIPT_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

/// A kept transcript, with what assembling the call's audio found.
type CachedTranscript = (Transcript, AudioStats);

/// Transcripts kept between a failed sentiment step and the call's retry in this
/// process. An optimisation only: a retry elsewhere (another process, a restart)
/// transcribes again. Bounded by size and by age: entries expire after
/// [`TRANSCRIPT_CACHE_TTL`], and when full the oldest goes, so entries of calls that
/// finished elsewhere do not pile up and a full cache keeps caching.
#[derive(Debug, Default)]
struct TranscriptCache(Mutex<TranscriptEntries>);

#[derive(Debug, Default)]
struct TranscriptEntries {
    by_call: std::collections::HashMap<crate::id::CallId, (tokio::time::Instant, CachedTranscript)>,
    /// Insertion order; may hold ids already taken (skipped when evicting).
    order: std::collections::VecDeque<(tokio::time::Instant, crate::id::CallId)>,
}

impl TranscriptCache {
    fn take(&self, call_id: &crate::id::CallId) -> Option<CachedTranscript> {
        let now = tokio::time::Instant::now();
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (at, cached) = entries.by_call.remove(call_id)?;
        (now.duration_since(at) < TRANSCRIPT_CACHE_TTL).then_some(cached)
    }

    fn put(&self, call_id: &crate::id::CallId, transcript: CachedTranscript) {
        let now = tokio::time::Instant::now();
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let TranscriptEntries { by_call, order } = &mut *entries;
        // Drop what expired, and the oldest while full.
        while let Some((at, id)) = order.front() {
            let expired = now.duration_since(*at) >= TRANSCRIPT_CACHE_TTL;
            if !expired && by_call.len() < TRANSCRIPT_CACHE_LIMIT && order.len() < 2 * TRANSCRIPT_CACHE_LIMIT {
                break;
            }
            if by_call.get(id).is_some_and(|(inserted, _)| inserted == at) {
                by_call.remove(id);
            }
            order.pop_front();
        }
        by_call.insert(call_id.clone(), (now, transcript));
        order.push_back((now, call_id.clone()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_call.len()
    }
}

/// Resolves once shutdown asks running attempts to give their leases back.
async fn aborted(abort: &mut watch::Receiver<bool>) {
    loop {
        if *abort.borrow_and_update() {
            return;
        }
        if abort.changed().await.is_err() {
            // The processor is gone without asking: nothing will ever abort.
            std::future::pending::<()>().await;
        }
    }
}

/// Why an attempt stopped without an outcome to record.
enum Stop {
    /// Another worker holds the call now.
    LeaseLost,
    /// Shutdown after the grace period: give the lease back.
    Abort,
    /// The call's packets could not be read.
    Store(StoreError),
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

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::id::CallId;

    fn entry(text: &str) -> CachedTranscript {
        (Transcript::text(text), AudioStats::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_its_oldest_and_keeps_caching() {
        let cache = TranscriptCache::default();
        for i in 0..TRANSCRIPT_CACHE_LIMIT + 5 {
            cache.put(&CallId::new(format!("c{i}")).unwrap(), entry("t"));
        }
        assert_eq!(cache.len(), TRANSCRIPT_CACHE_LIMIT);
        assert!(cache.take(&CallId::new("c0").unwrap()).is_none(), "the oldest went");
        let newest = CallId::new(format!("c{}", TRANSCRIPT_CACHE_LIMIT + 4)).unwrap();
        assert_eq!(cache.take(&newest).map(|(t, _)| t.text), Some("t".to_owned()), "the newest is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_by_age() {
        let cache = TranscriptCache::default();
        let (old, fresh) = (CallId::new("old").unwrap(), CallId::new("fresh").unwrap());
        cache.put(&old, entry("old"));
        tokio::time::advance(TRANSCRIPT_CACHE_TTL).await;
        cache.put(&fresh, entry("fresh"));
        assert_eq!(cache.len(), 1, "putting drops what expired");
        assert!(cache.take(&old).is_none());
        assert!(cache.take(&fresh).is_some());
        cache.put(&fresh, entry("again"));
        tokio::time::advance(TRANSCRIPT_CACHE_TTL).await;
        assert!(cache.take(&fresh).is_none(), "an expired entry is not handed out");
    }
}
