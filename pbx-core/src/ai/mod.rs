//! The AI service boundary: [`AiClient`], its errors, and a simulated flaky service.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::CallId;
use crate::packet::StoredPacket;

mod simulated;

pub use simulated::{SimulatedAi, SimulatedAiConfig};

/// What kind of failure an [`AiError`] is; decides whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AiErrorKind {
    /// The service is down or answered 5xx. Retryable.
    Unavailable,
    /// The call timed out. Retryable.
    Timeout,
    /// The service asked us to slow down (429). Retryable, often with `retry_after`.
    RateLimited,
    /// The request can never succeed (bad audio, unsupported language). Not retryable.
    Permanent,
}

/// A failed AI request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AiError {
    kind: AiErrorKind,
    message: String,
    retry_after: Option<Duration>,
}

impl fmt::Display for AiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            AiErrorKind::Unavailable => "AI service unavailable",
            AiErrorKind::Timeout => "AI request timed out",
            AiErrorKind::RateLimited => "AI service rate limited",
            AiErrorKind::Permanent => "AI request failed permanently",
        };
        write!(f, "{kind}: {}", self.message)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {after:?})")?;
        }
        Ok(())
    }
}

impl AiError {
    /// An error of any kind.
    pub fn new(kind: AiErrorKind, message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self { kind, message: message.into(), retry_after }
    }

    /// The service is unavailable (retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(AiErrorKind::Unavailable, message, None)
    }

    /// The request timed out (retryable).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(AiErrorKind::Timeout, message, None)
    }

    /// The service rate-limited us (retryable), possibly saying when to come back.
    pub fn rate_limited(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::new(AiErrorKind::RateLimited, message, retry_after)
    }

    /// The request can never succeed (not retryable).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(AiErrorKind::Permanent, message, None)
    }

    /// The kind of failure.
    pub fn kind(&self) -> AiErrorKind {
        self.kind
    }

    /// The service's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self.kind, AiErrorKind::Permanent)
    }

    /// The service's hint of when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Everything a transcription needs: the call, its packets in sequence order, and an
/// idempotency key (`<call id>:<attempt>`) the service can use to drop repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionRequest {
    /// The call being transcribed.
    pub call_id: CallId,
    /// The attempt number (fencing token) of this run.
    pub attempt: u32,
    /// The call's packets, ascending by sequence.
    pub packets: Vec<StoredPacket>,
}

impl TranscriptionRequest {
    /// `<call id>:<attempt>`: unique per attempt, stable across repeats of one attempt.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(&self.call_id, self.attempt)
    }
}

/// The idempotency key of an attempt: `<call id>:<attempt>`.
pub fn idempotency_key(call_id: &CallId, attempt: u32) -> String {
    format!("{call_id}:{attempt}")
}

/// A transcript of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// The transcribed text.
    pub text: String,
}

/// The polarity of a sentiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SentimentLabel {
    /// Mostly positive.
    Positive,
    /// Neither.
    Neutral,
    /// Mostly negative.
    Negative,
}

impl SentimentLabel {
    /// `POSITIVE`, `NEUTRAL` or `NEGATIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            SentimentLabel::Positive => "POSITIVE",
            SentimentLabel::Neutral => "NEUTRAL",
            SentimentLabel::Negative => "NEGATIVE",
        }
    }
}

impl std::str::FromStr for SentimentLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "POSITIVE" => Ok(SentimentLabel::Positive),
            "NEUTRAL" => Ok(SentimentLabel::Neutral),
            "NEGATIVE" => Ok(SentimentLabel::Negative),
            other => Err(format!("unknown sentiment label {other:?}")),
        }
    }
}

/// A sentiment analysis result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    /// The label.
    pub label: SentimentLabel,
    /// A score in `[-1, 1]`: -1 most negative, 1 most positive.
    pub score: f64,
}

/// The outcome of a call's AI work, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiResult {
    /// The transcript.
    pub transcript: String,
    /// The sentiment of the transcript.
    pub sentiment: Sentiment,
}

/// An AI service: transcription and sentiment analysis.
///
/// Implementations must be safe to call concurrently. Errors say whether retrying can
/// help ([`AiError::is_retryable`]); the processor owns the retry loop.
#[async_trait]
pub trait AiClient: Send + Sync + 'static {
    /// Transcribes a call's audio.
    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError>;

    /// Analyses the sentiment of a transcript. `idempotency_key` is the attempt's key.
    async fn analyze_sentiment(
        &self,
        call_id: &CallId,
        idempotency_key: &str,
        transcript: &Transcript,
    ) -> Result<Sentiment, AiError>;
}
