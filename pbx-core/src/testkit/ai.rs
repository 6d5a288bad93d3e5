//! [`ScriptedAi`]: an [`AiClient`] whose outcomes a test scripts, call by call.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::ai::{AiClient, AiError, SentimentAnalysis, SimulatedAi, Transcript, TranscriptionRequest};
use crate::id::CallId;

/// What one transcription attempt does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Succeeds with [`SimulatedAi`]'s transcript and sentiment for the call's packets.
    Succeed,
    /// Fails with this error.
    Fail(AiError),
    /// Waits until [`ScriptedAi::open_gate`] is called, then succeeds.
    Gate,
    /// Transcription succeeds, then sentiment analysis fails with this error.
    FailSentiment(AiError),
}

/// An [`AiClient`] that follows a script.
///
/// Each call has a queue of [`Step`]s, consumed one per transcription attempt; once
/// a call's queue is empty, the default step applies ([`Step::Succeed`] unless
/// [`ScriptedAi::set_default`] says otherwise). Sentiment analysis succeeds unless the
/// call's last transcription step was [`Step::FailSentiment`].
///
/// It also records which attempts ran and how many ran at once, and lets a test wait,
/// without sleeping, until a number of attempts are in flight.
#[derive(Debug)]
pub struct ScriptedAi {
    state: Mutex<State>,
    in_flight: watch::Sender<usize>,
    gate: watch::Sender<bool>,
}

#[derive(Debug)]
struct State {
    scripts: HashMap<CallId, VecDeque<Step>>,
    default: Step,
    attempts: HashMap<CallId, Vec<u32>>,
    sentiment_failures: HashMap<CallId, AiError>,
    sentiment_calls: HashMap<CallId, usize>,
    max_in_flight: usize,
}

impl Default for ScriptedAi {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedAi {
    /// A service where every attempt succeeds until scripted otherwise.
    pub fn new() -> Self {
        let state = State {
            scripts: HashMap::new(),
            default: Step::Succeed,
            attempts: HashMap::new(),
            sentiment_failures: HashMap::new(),
            sentiment_calls: HashMap::new(),
            max_in_flight: 0,
        };
        Self { state: Mutex::new(state), in_flight: watch::channel(0).0, gate: watch::channel(false).0 }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends steps to `call_id`'s script.
    pub fn script(&self, call_id: &CallId, steps: impl IntoIterator<Item = Step>) {
        self.state().scripts.entry(call_id.clone()).or_default().extend(steps);
    }

    /// The step for calls whose script is used up.
    pub fn set_default(&self, step: Step) {
        self.state().default = step;
    }

    /// Lets every [`Step::Gate`] attempt, waiting or future, go on.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// The attempt numbers transcription saw for `call_id`, in order.
    pub fn attempts(&self, call_id: &CallId) -> Vec<u32> {
        self.state().attempts.get(call_id).cloned().unwrap_or_default()
    }

    /// Sentiment analyses requested for `call_id`.
    pub fn sentiment_calls(&self, call_id: &CallId) -> usize {
        self.state().sentiment_calls.get(call_id).copied().unwrap_or(0)
    }

    /// Transcription attempts started over all calls.
    pub fn total_attempts(&self) -> usize {
        self.state().attempts.values().map(Vec::len).sum()
    }

    /// Attempts running right now.
    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// The most attempts that ever ran at once.
    pub fn max_in_flight(&self) -> usize {
        self.state().max_in_flight
    }

    /// Resolves once at least `n` attempts are running at the same time.
    pub async fn wait_in_flight(&self, n: usize) {
        let mut rx = self.in_flight.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|running| *running >= n).await;
    }
}

/// Decrements the in-flight count when an attempt ends, however it ends.
struct Running<'a>(&'a watch::Sender<usize>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[async_trait]
impl AiClient for ScriptedAi {
    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError> {
        let step = {
            let mut state = self.state();
            state.attempts.entry(request.call_id.clone()).or_default().push(request.attempt);
            let default = state.default.clone();
            let step = state.scripts.get_mut(&request.call_id).and_then(VecDeque::pop_front).unwrap_or(default);
            let mut running = 0;
            self.in_flight.send_modify(|n| {
                *n += 1;
                running = *n;
            });
            state.max_in_flight = state.max_in_flight.max(running);
            step
        };
        let _running = Running(&self.in_flight);
        match step {
            Step::Succeed => {}
            Step::Fail(error) => return Err(error),
            Step::FailSentiment(error) => {
                self.state().sentiment_failures.insert(request.call_id.clone(), error);
            }
            Step::Gate => {
                let mut open = self.gate.subscribe();
                let _ = open.wait_for(|open| *open).await;
            }
        }
        Ok(Transcript::text(SimulatedAi::transcript_of(&request.audio)))
    }

    async fn analyze_sentiment(
        &self,
        call_id: &CallId,
        _idempotency_key: &str,
        transcript: &Transcript,
    ) -> Result<SentimentAnalysis, AiError> {
        {
            let mut state = self.state();
            *state.sentiment_calls.entry(call_id.clone()).or_default() += 1;
            if let Some(error) = state.sentiment_failures.remove(call_id) {
                return Err(error);
            }
        }
        Ok(SimulatedAi::sentiment_of(&transcript.text).into())
    }
}
