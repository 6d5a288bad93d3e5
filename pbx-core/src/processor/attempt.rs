//! One attempt at one claimed call: read its audio, run both AI steps under a
//! heartbeat and the attempt time-out, and record the outcome, all fenced by the
//! attempt number of the claim.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::Processor;
use crate::ai::{AiError, AiResult, TranscriptionRequest};
use crate::gateway::GatewayError;
use crate::state::CallState;
use crate::store::{AttemptFailure, AttemptRef, Claim, StoreError};

/// Retries of an outcome write while the store is unavailable.
const RECORD_RETRIES: u32 = 5;

/// Why an attempt failed: what is recorded as the call's failure.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// An AI step failed; the retry policy decides what happens next.
    #[error(transparent)]
    Ai(#[from] AiError),
    /// The call's audio is unusable (none at all, deleted by retention, or too long):
    /// the AI is never asked, and no retry can help.
    #[error("call audio unusable: {0}")]
    Audio(GatewayError),
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

impl Processor {
    #[tracing::instrument(level = "debug", skip_all, fields(call_id = %claim.call_id, attempt = claim.attempt))]
    pub(super) async fn attempt(&self, claim: Claim) {
        let gateway = &self.inner.gateway;
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
                    Stop::Abort => match gateway.store().release(&attempt, gateway.now()).await {
                        Ok(()) => tracing::info!("lease released on shutdown"),
                        Err(error) => tracing::warn!(%error, "could not release the lease; it will expire"),
                    },
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
    async fn run_ai_with_heartbeat(&self, attempt: &AttemptRef) -> Result<Result<AiResult, AttemptError>, Stop> {
        let inner = &self.inner;
        let gateway = &inner.gateway;
        let cached = inner.transcripts.take(&attempt.call_id);
        let input = match cached {
            Some(cached) => Ok(cached),
            None => match gateway.audio(&attempt.call_id).await {
                Ok(audio) => Err(audio),
                Err(GatewayError::Store(error)) => return Err(Stop::Store(error)),
                Err(error) => return Ok(Err(AttemptError::Audio(error))),
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
                .map_err(AttemptError::Ai)
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
                    match gateway.store().heartbeat(attempt, inner.config.lease, gateway.now()).await {
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
        let store = self.inner.gateway.store();
        let recorded = self.with_store_retries(|now| store.record_success(attempt, result, now)).await;
        match recorded {
            Ok((_, ())) => {
                tracing::info!(sentiment = result.sentiment.label.as_str(), "call archived");
                metrics::counter!(crate::metrics::AI_ATTEMPTS, "provider" => self.inner.provider.clone(), "outcome" => "archived")
                    .increment(1);
            }
            Err(error) => tracing::warn!(%error, "could not record the result; the call will run again"),
        }
    }

    async fn record_failure(&self, claim: &Claim, attempt: &AttemptRef, error: &AttemptError) {
        let inner = &self.inner;
        let gateway = &inner.gateway;
        let store = gateway.store();
        let failures = claim.failures.saturating_add(1);
        let delay = match error {
            AttemptError::Ai(error) => {
                let mut rng = inner.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                inner.config.retry.next_delay(failures, error, &mut *rng)
            }
            AttemptError::Audio(_) => None,
        };
        // The store keeps the reason as text (`last_error`), for operators.
        let message = error.to_string();
        let recorded = self
            .with_store_retries(|now| {
                let retry_at = delay.map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
                let failure = AttemptFailure { error: message.clone(), retry_at };
                async move { store.record_failure(attempt, &failure, now).await.map(|state| (state, failure)) }
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
                    gateway.notify_work();
                }
            }
            Err(store_error) => {
                tracing::warn!(%store_error, attempt_error = %error, "could not record the failure; the call will run again")
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
        let gateway = &self.inner.gateway;
        let mut pause = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            let now = gateway.now();
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
