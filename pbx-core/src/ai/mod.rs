//! The AI service boundary: [`AiClient`], its errors, and a simulated flaky service.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::CallId;
use crate::media::{AudioStats, MediaFormat, PcmAudio};

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

/// Everything a transcription needs: the call, its assembled audio, and an
/// idempotency key (`<call id>:<attempt>`) the service can use to drop repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionRequest {
    /// The call being transcribed.
    pub call_id: CallId,
    /// The attempt number (fencing token) of this run.
    pub attempt: u32,
    /// The format the call's audio arrived in (the PCM below is decoded from it).
    pub source_format: MediaFormat,
    /// The call's audio, assembled: frames in sequence order, silence for what was
    /// missing or undecodable. Shared, so a provider that splits or resends it does
    /// not copy it.
    pub audio: Arc<PcmAudio>,
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

/// One timed piece of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, in seconds from the start of the call's audio.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// What was said.
    pub text: String,
    /// The channel it was said on, for 2-channel calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
}

/// A transcript of a call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Transcript {
    /// The transcribed text.
    pub text: String,
    /// Timed segments, ascending by start; empty where the provider gives none.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// The provider's own sentiment, where one request gives both (Deepgram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<SentimentAnalysis>,
}

impl Transcript {
    /// A transcript of plain text, with no segments.
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into(), ..Self::default() }
    }

    /// The channels that segments name, ascending.
    pub fn channels(&self) -> Vec<u8> {
        let mut channels: Vec<u8> = self.segments.iter().filter_map(|s| s.channel).collect();
        channels.sort_unstable();
        channels.dedup();
        channels
    }

    /// The text said on one channel: its segments' texts joined in time order.
    pub fn channel_text(&self, channel: u8) -> String {
        let parts: Vec<&str> =
            self.segments.iter().filter(|s| s.channel == Some(channel)).map(|s| s.text.trim()).collect();
        parts.join(" ")
    }
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

impl Sentiment {
    /// Checks a provider's answer: the score is finite and within `[-1, 1]`.
    pub fn checked(label: SentimentLabel, score: f64) -> Result<Self, String> {
        if score.is_finite() && (-1.0..=1.0).contains(&score) {
            Ok(Self { label, score })
        } else {
            Err(format!("sentiment score {score} is not within [-1, 1]"))
        }
    }
}

/// One channel's sentiment, for 2-channel calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelSentiment {
    /// The channel.
    pub channel: u8,
    /// Its sentiment.
    pub sentiment: Sentiment,
}

/// The sentiment of a whole call, and of each channel where there are two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentAnalysis {
    /// The whole transcript's sentiment.
    pub overall: Sentiment,
    /// Per channel, for 2-channel calls; empty otherwise.
    #[serde(default)]
    pub channels: Vec<ChannelSentiment>,
}

impl From<Sentiment> for SentimentAnalysis {
    fn from(overall: Sentiment) -> Self {
        Self { overall, channels: Vec::new() }
    }
}

/// The outcome of a call's AI work, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiResult {
    /// The transcript.
    pub transcript: String,
    /// The sentiment of the transcript.
    pub sentiment: Sentiment,
    /// The transcript's timed segments (may be empty).
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Per-channel sentiment of 2-channel calls (empty otherwise).
    #[serde(default)]
    pub channel_sentiment: Vec<ChannelSentiment>,
    /// What assembling the call's audio found (gaps, undecodable frames), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioStats>,
}

impl AiResult {
    /// A result with only a transcript and its sentiment.
    pub fn new(transcript: impl Into<String>, sentiment: Sentiment) -> Self {
        Self {
            transcript: transcript.into(),
            sentiment,
            segments: Vec::new(),
            channel_sentiment: Vec::new(),
            audio: None,
        }
    }
}

/// An AI service: transcription and sentiment analysis, the processor's one boundary.
///
/// Implementations must be safe to call concurrently. Errors say whether retrying can
/// help ([`AiError::is_retryable`]); the processor owns the retry loop. Most services
/// are built from a [`Transcriber`] and a [`SentimentAnalyzer`] with [`ComposedAi`], so
/// that providers mix (Whisper with local VADER, or Deepgram for both).
#[async_trait]
pub trait AiClient: Send + Sync + 'static {
    /// A short name for logs and metrics labels (`simulated`, `openai+vader`): one per
    /// deployment, never per call.
    fn name(&self) -> String {
        "custom".to_owned()
    }

    /// Transcribes a call's audio.
    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError>;

    /// Analyses the sentiment of a transcript. `idempotency_key` is the attempt's key.
    async fn analyze_sentiment(
        &self,
        call_id: &CallId,
        idempotency_key: &str,
        transcript: &Transcript,
    ) -> Result<SentimentAnalysis, AiError>;
}

/// Speech to text: assembled audio in, a transcript with timed segments out (and, for
/// 2-channel calls, a channel per segment).
#[async_trait]
pub trait Transcriber: Send + Sync + 'static {
    /// The provider's name, for logs and errors (`openai`, `deepgram`).
    fn name(&self) -> &str;

    /// Transcribes a call's audio.
    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError>;
}

/// Text to sentiment: a label and a score in `[-1, 1]`.
#[async_trait]
pub trait SentimentAnalyzer: Send + Sync + 'static {
    /// The analyser's name, for logs and errors (`vader`, `openai`).
    fn name(&self) -> &str;

    /// The sentiment of `text`. `idempotency_key` is the attempt's key (suffixed per
    /// channel when a call's channels are analysed separately).
    async fn analyze(&self, call_id: &CallId, idempotency_key: &str, text: &str) -> Result<Sentiment, AiError>;
}

/// An [`AiClient`] made of a [`Transcriber`] and a [`SentimentAnalyzer`].
///
/// With [`ComposedAi::prefer_transcriber_sentiment`], a transcript that already
/// carries the provider's sentiment (Deepgram's `sentiment=true`) is used as it is and
/// the analyser is not called. For a transcript whose segments name two channels, each
/// channel's text is analysed too.
#[derive(Clone)]
pub struct ComposedAi {
    transcriber: Arc<dyn Transcriber>,
    sentiment: Arc<dyn SentimentAnalyzer>,
    prefer_transcriber_sentiment: bool,
}

impl ComposedAi {
    /// Transcribes with `transcriber`, analyses with `sentiment`.
    pub fn new(transcriber: Arc<dyn Transcriber>, sentiment: Arc<dyn SentimentAnalyzer>) -> Self {
        Self { transcriber, sentiment, prefer_transcriber_sentiment: false }
    }

    /// Uses the transcriber's own sentiment where it gives one.
    pub fn prefer_transcriber_sentiment(mut self, prefer: bool) -> Self {
        self.prefer_transcriber_sentiment = prefer;
        self
    }

    /// `transcriber+analyser`, e.g. `openai+vader`.
    pub fn describe(&self) -> String {
        format!("{}+{}", self.transcriber.name(), self.sentiment.name())
    }
}

impl fmt::Debug for ComposedAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComposedAi")
            .field("transcriber", &self.transcriber.name())
            .field("sentiment", &self.sentiment.name())
            .field("prefer_transcriber_sentiment", &self.prefer_transcriber_sentiment)
            .finish()
    }
}

#[async_trait]
impl AiClient for ComposedAi {
    fn name(&self) -> String {
        self.describe()
    }

    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError> {
        self.transcriber.transcribe(request).await
    }

    async fn analyze_sentiment(
        &self,
        call_id: &CallId,
        idempotency_key: &str,
        transcript: &Transcript,
    ) -> Result<SentimentAnalysis, AiError> {
        if self.prefer_transcriber_sentiment
            && let Some(analysis) = &transcript.sentiment
        {
            return Ok(analysis.clone());
        }
        let overall = self.sentiment.analyze(call_id, idempotency_key, &transcript.text).await?;
        let mut channels = Vec::new();
        let named = transcript.channels();
        if named.len() > 1 {
            for channel in named {
                let key = format!("{idempotency_key}:ch{channel}");
                let text = transcript.channel_text(channel);
                let sentiment = self.sentiment.analyze(call_id, &key, &text).await?;
                channels.push(ChannelSentiment { channel, sentiment });
            }
        }
        Ok(SentimentAnalysis { overall, channels })
    }
}
