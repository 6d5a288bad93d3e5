//! [`SimulatedAi`]: the seed's flaky external AI service, in process.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{AiClient, AiError, Sentiment, SentimentAnalysis, SentimentLabel, Transcript, TranscriptionRequest};
use crate::id::CallId;
use crate::media::{MediaFormat, PcmAudio, assemble};
use crate::packet::{Payload, StoredPacket};

/// Settings of a [`SimulatedAi`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedAiConfig {
    /// Share of requests that fail with a retryable error, in `[0, 1]`. Default 0.25.
    pub failure_rate: f64,
    /// Latency of each request, drawn uniformly from this range. Default 1 s ..= 3 s.
    pub latency: RangeInclusive<Duration>,
    /// Seed for a deterministic RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for SimulatedAiConfig {
    fn default() -> Self {
        Self { failure_rate: 0.25, latency: Duration::from_secs(1)..=Duration::from_secs(3), seed: None }
    }
}

/// An invalid [`SimulatedAiConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSimulatedAi {
    /// The failure rate is outside `[0, 1]`.
    #[error("failure rate {0} must be between 0 and 1")]
    FailureRate(f64),
    /// The latency range is empty.
    #[error("latency range {min:?}..={max:?} is empty")]
    Latency {
        /// Lower bound given.
        min: Duration,
        /// Upper bound given.
        max: Duration,
    },
}

/// A simulated, unreliable AI service: the seed's "external AI" with ~25 % failures and
/// 1-3 s latency.
///
/// Its transcript is derived from the call's assembled audio (one word per frame,
/// picked from a small vocabulary by a hash of the frame's samples; silence, such as a
/// gap or a text payload, always gives the same word), and its sentiment from the
/// transcript's words through a small lexicon, so results differ per call and tests can
/// check them ([`SimulatedAi::expected_transcript`], [`SimulatedAi::sentiment_of`]).
#[derive(Debug)]
pub struct SimulatedAi {
    config: SimulatedAiConfig,
    rng: Mutex<StdRng>,
}

const WORDS: [&str; 24] = [
    "hello",
    "thanks",
    "great",
    "order",
    "account",
    "problem",
    "refund",
    "please",
    "help",
    "angry",
    "happy",
    "delay",
    "broken",
    "perfect",
    "billing",
    "support",
    "wait",
    "excellent",
    "cancel",
    "issue",
    "resolved",
    "terrible",
    "good",
    "today",
];
const POSITIVE: [&str; 8] = ["thanks", "great", "happy", "perfect", "excellent", "resolved", "good", "help"];
const NEGATIVE: [&str; 8] = ["problem", "refund", "angry", "delay", "broken", "cancel", "issue", "terrible"];

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl SimulatedAi {
    /// Builds the service, refusing settings that make no sense.
    pub fn new(config: SimulatedAiConfig) -> Result<Self, InvalidSimulatedAi> {
        if !(0.0..=1.0).contains(&config.failure_rate) {
            return Err(InvalidSimulatedAi::FailureRate(config.failure_rate));
        }
        if config.latency.start() > config.latency.end() {
            return Err(InvalidSimulatedAi::Latency { min: *config.latency.start(), max: *config.latency.end() });
        }
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Self { config, rng: Mutex::new(rng) })
    }

    /// A service that never fails and answers at once (examples and tests).
    pub fn reliable() -> Self {
        Self::new(SimulatedAiConfig { failure_rate: 0.0, latency: Duration::ZERO..=Duration::ZERO, seed: Some(0) })
            .expect("valid settings")
    }

    /// The settings in force.
    pub fn config(&self) -> &SimulatedAiConfig {
        &self.config
    }

    /// The transcript this service produces for a mono telephony call (`mulaw/8000/1`)
    /// whose packets 1, 2, .. carry `packet_data` (the JSON APIs' `data` strings).
    pub fn expected_transcript<'a>(packet_data: impl IntoIterator<Item = &'a str>) -> String {
        let packets: Vec<StoredPacket> = packet_data
            .into_iter()
            .zip(1..)
            .map(|(data, sequence)| StoredPacket {
                channel: 0,
                sequence,
                data: Payload::from_base64_or_text(data),
                timestamp: 0.0,
                received_at: chrono::DateTime::UNIX_EPOCH,
            })
            .collect();
        let audio = assemble(MediaFormat::TELEPHONY, &packets).expect("a short call assembles");
        Self::transcript_of(&audio)
    }

    /// The transcript this service produces for `audio`: one word per frame.
    pub fn transcript_of(audio: &PcmAudio) -> String {
        let width = (audio.frame_samples * usize::from(audio.channels)).max(1);
        let words: Vec<&str> = audio
            .samples
            .chunks(width)
            .map(|frame| {
                let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
                WORDS[(fnv1a(&bytes) % WORDS.len() as u64) as usize]
            })
            .collect();
        words.join(" ")
    }

    /// The sentiment this service gives a transcript: (positive - negative) / words
    /// counted, labelled POSITIVE above 0.2, NEGATIVE below -0.2.
    pub fn sentiment_of(transcript: &str) -> Sentiment {
        let (mut pos, mut neg) = (0i64, 0i64);
        for word in transcript.split_whitespace() {
            let word = word.trim_matches(|c: char| !c.is_alphanumeric()).to_ascii_lowercase();
            pos += i64::from(POSITIVE.contains(&word.as_str()));
            neg += i64::from(NEGATIVE.contains(&word.as_str()));
        }
        let score = if pos + neg == 0 { 0.0 } else { (pos - neg) as f64 / (pos + neg) as f64 };
        let label = if score > 0.2 {
            SentimentLabel::Positive
        } else if score < -0.2 {
            SentimentLabel::Negative
        } else {
            SentimentLabel::Neutral
        };
        Sentiment { label, score }
    }

    /// Draws this request's latency and fate.
    fn roll(&self) -> (Duration, bool) {
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (min, max) = (*self.config.latency.start(), *self.config.latency.end());
        let latency = if min == max { min } else { rng.random_range(min..=max) };
        let fail = rng.random_bool(self.config.failure_rate);
        (latency, fail)
    }

    async fn simulate(&self, what: &str, key: &str) -> Result<(), AiError> {
        let (latency, fail) = self.roll();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if fail {
            tracing::debug!(key, what, "simulated AI failure");
            return Err(AiError::unavailable(format!("simulated {what} failure ({key})")));
        }
        Ok(())
    }
}

#[async_trait]
impl AiClient for SimulatedAi {
    fn name(&self) -> String {
        "simulated".to_owned()
    }

    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError> {
        self.simulate("transcription", &request.idempotency_key()).await?;
        Ok(Transcript::text(Self::transcript_of(&request.audio)))
    }

    async fn analyze_sentiment(
        &self,
        _call_id: &CallId,
        idempotency_key: &str,
        transcript: &Transcript,
    ) -> Result<SentimentAnalysis, AiError> {
        self.simulate("sentiment", idempotency_key).await?;
        Ok(Self::sentiment_of(&transcript.text).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_settings() {
        let bad = SimulatedAiConfig { failure_rate: 1.5, ..Default::default() };
        assert!(matches!(SimulatedAi::new(bad), Err(InvalidSimulatedAi::FailureRate(_))));
        let bad = SimulatedAiConfig { latency: Duration::from_secs(3)..=Duration::from_secs(1), ..Default::default() };
        assert!(matches!(SimulatedAi::new(bad), Err(InvalidSimulatedAi::Latency { .. })));
    }

    #[test]
    fn sentiment_follows_the_lexicon() {
        assert_eq!(SimulatedAi::sentiment_of("thanks great help").label, SentimentLabel::Positive);
        assert_eq!(SimulatedAi::sentiment_of("angry broken refund thanks").label, SentimentLabel::Negative);
        assert_eq!(SimulatedAi::sentiment_of("hello today").label, SentimentLabel::Neutral);
        assert_eq!(SimulatedAi::sentiment_of("").score, 0.0);
    }

    #[test]
    fn transcripts_differ_per_call() {
        // Three 20 ms mu-law frames of different audio, base64.
        let frame = |b: u8| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [b; 160]);
        let (f1, f2, f3) = (frame(1), frame(2), frame(3));
        let a = SimulatedAi::expected_transcript([f1.as_str(), f2.as_str(), f3.as_str()]);
        let b = SimulatedAi::expected_transcript([f3.as_str(), f1.as_str(), f2.as_str()]);
        assert_eq!(a.split(' ').count(), 3);
        assert_ne!(a, b);
        // Text payloads are silence: one word per frame, all the same.
        let text = SimulatedAi::expected_transcript(["audio_chunk_1", "audio_chunk_2"]);
        assert_eq!(text.split(' ').count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_about_as_often_as_configured() {
        let ai = SimulatedAi::new(SimulatedAiConfig { seed: Some(42), ..Default::default() }).unwrap();
        let req = TranscriptionRequest {
            call_id: CallId::new("c").unwrap(),
            attempt: 1,
            source_format: MediaFormat::TELEPHONY,
            audio: Default::default(),
        };
        let mut failures = 0;
        for _ in 0..2000 {
            if ai.transcribe(&req).await.is_err() {
                failures += 1;
            }
        }
        // 25 % of 2000 = 500; a seeded RNG makes this exact run repeatable.
        assert!((400..600).contains(&failures), "{failures} failures");
    }
}
