//! [`DeepgramAi`]: Deepgram's pre-recorded `/v1/listen`, transcript and sentiment in
//! one request.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use pbx_core::ai::{
    AiError, ChannelSentiment, Segment, Sentiment, SentimentAnalysis, SentimentLabel, Transcriber, Transcript,
    TranscriptionRequest,
};
use pbx_core::media::wav_bytes;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use crate::client::{ConfigError, auth_header, endpoint, http_client};
use crate::http_error::{self, ErrorShape, Provider};
use crate::secret::ApiKey;
use crate::upload;

/// Deepgram's API.
pub const DEEPGRAM_BASE_URL: &str = "https://api.deepgram.com";

/// The model used when none is set.
pub const DEEPGRAM_DEFAULT_MODEL: &str = "nova-3";

/// Where Deepgram's `sentiment_score` turns positive (and, negated, negative), as its
/// documentation states; used to label per-channel averages the same way.
pub const DEEPGRAM_SENTIMENT_BREAK: f64 = 1.0 / 3.0;

const NAME: &str = "deepgram";

/// Settings of a [`DeepgramAi`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeepgramConfig {
    /// Scheme, host and optional path prefix, without `/v1`.
    pub base_url: String,
    /// `nova-3`, `nova-2`, ...
    pub model: String,
    /// Required; sent as `Authorization: Token <key>`.
    pub api_key: Option<ApiKey>,
    /// BCP-47 language (`en`, `en-US`, `de`); Deepgram's default when unset.
    pub language: Option<String>,
    /// Ask for Deepgram's sentiment (`sentiment=true`). Deepgram documents it for
    /// English only, so it is asked for only when `language` is unset or English.
    pub sentiment: bool,
    /// The longest one request may take, upload and answer included.
    pub timeout: Duration,
}

impl Default for DeepgramConfig {
    fn default() -> Self {
        Self {
            base_url: DEEPGRAM_BASE_URL.to_owned(),
            model: DEEPGRAM_DEFAULT_MODEL.to_owned(),
            api_key: None,
            language: None,
            sentiment: true,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Speech to text, with sentiment, over Deepgram.
///
/// One `POST /v1/listen?model=..&punctuate=true&utterances=true[&sentiment=true]
/// [&multichannel=true][&language=..]` per call, the body the call's WAV. Segments are
/// Deepgram's utterances (one segment per channel when it sends none), tagged with
/// their channel for 2-channel calls; the text is channel 0's transcript for mono and
/// the time-ordered utterances for stereo. [`Transcript::sentiment`] is
/// `results.sentiments.average`; for 2-channel calls each channel's sentiment is the
/// duration-weighted mean of its utterances' `sentiment_score`, labelled with
/// Deepgram's own break point ([`DEEPGRAM_SENTIMENT_BREAK`]). Without sentiment in
/// the answer (a language Deepgram does not analyse) it is `None`, and
/// [`pbx_core::ai::ComposedAi`] falls back to its analyser.
pub struct DeepgramAi {
    config: DeepgramConfig,
    url: Url,
    auth: HeaderValue,
    http: reqwest::Client,
}

impl fmt::Debug for DeepgramAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepgramAi")
            .field("url", &self.url.as_str())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DeepgramAi {
    /// Checks the settings (a key is required) and builds the client.
    pub fn new(config: DeepgramConfig) -> Result<Self, ConfigError> {
        let key =
            config.api_key.as_ref().filter(|k| !k.is_empty()).ok_or(ConfigError::MissingApiKey { provider: NAME })?;
        if config.model.trim().is_empty() {
            return Err(ConfigError::Invalid { provider: NAME, setting: "model", reason: "must not be empty".into() });
        }
        let auth = auth_header(NAME, "Token", key)?;
        let url = endpoint(NAME, &config.base_url, "/v1/listen")?;
        let http = http_client(NAME, config.timeout)?;
        Ok(Self { config, url, auth, http })
    }

    /// The settings.
    pub fn config(&self) -> &DeepgramConfig {
        &self.config
    }

    /// Whether requests ask for sentiment: the setting, for English or an unset
    /// language.
    pub fn asks_sentiment(&self) -> bool {
        self.config.sentiment
            && self.config.language.as_deref().is_none_or(|l| {
                let l = l.to_ascii_lowercase();
                l == "en" || l.starts_with("en-") || l.starts_with("en_")
            })
    }

    fn provider(&self) -> Provider<'_> {
        Provider { name: NAME, shape: ErrorShape::Deepgram, key: self.config.api_key.as_ref() }
    }

    fn query(&self, channels: u8) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("model", self.config.model.clone()),
            ("punctuate", "true".to_owned()),
            ("utterances", "true".to_owned()),
        ];
        if self.asks_sentiment() {
            q.push(("sentiment", "true".to_owned()));
        }
        if channels == 2 {
            q.push(("multichannel", "true".to_owned()));
        }
        if let Some(language) = &self.config.language {
            q.push(("language", language.clone()));
        }
        q
    }
}

#[async_trait]
impl Transcriber for DeepgramAi {
    fn name(&self) -> &str {
        NAME
    }

    #[tracing::instrument(name = "deepgram.transcribe", skip_all, fields(call_id = %request.call_id, attempt = request.attempt), err)]
    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError> {
        let audio = &request.audio;
        upload::check(NAME, audio)?;
        if audio.is_empty() {
            return Ok(Transcript::default());
        }
        let wav = wav_bytes(audio).map_err(|e| AiError::permanent(format!("{NAME}: {e}")))?;
        let http = self
            .http
            .post(self.url.clone())
            .query(&self.query(audio.channels))
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "audio/wav")
            .header("Idempotency-Key", request.idempotency_key())
            .body(wav);
        let body = http_error::send(self.provider(), http).await?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| http_error::unparsable(self.provider(), &body, "transcription", &e.to_string()))?;
        answer
            .into_transcript(audio.channels, audio.duration().as_secs_f64())
            .map_err(|why| http_error::unparsable(self.provider(), &body, "transcription", &why))
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    results: Results,
}

#[derive(Debug, Deserialize)]
struct Results {
    channels: Vec<Channel>,
    #[serde(default)]
    utterances: Option<Vec<Utterance>>,
    #[serde(default)]
    sentiments: Option<Sentiments>,
}

#[derive(Debug, Deserialize)]
struct Channel {
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Deserialize)]
struct Alternative {
    transcript: String,
}

#[derive(Debug, Deserialize)]
struct Utterance {
    start: f64,
    end: f64,
    transcript: String,
    #[serde(default)]
    channel: u8,
    #[serde(default)]
    sentiment_score: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Sentiments {
    #[serde(default)]
    average: Option<Average>,
}

#[derive(Debug, Deserialize)]
struct Average {
    sentiment: String,
    sentiment_score: f64,
}

fn label(name: &str) -> Result<SentimentLabel, String> {
    match name.to_ascii_lowercase().as_str() {
        "positive" => Ok(SentimentLabel::Positive),
        "neutral" => Ok(SentimentLabel::Neutral),
        "negative" => Ok(SentimentLabel::Negative),
        other => Err(format!("unknown sentiment {other:?}")),
    }
}

fn label_of(score: f64) -> SentimentLabel {
    if score >= DEEPGRAM_SENTIMENT_BREAK {
        SentimentLabel::Positive
    } else if score <= -DEEPGRAM_SENTIMENT_BREAK {
        SentimentLabel::Negative
    } else {
        SentimentLabel::Neutral
    }
}

impl Answer {
    fn into_transcript(self, channels: u8, duration: f64) -> Result<Transcript, String> {
        let results = self.results;
        if results.channels.is_empty() {
            return Err("no channel in results".into());
        }
        let stereo = channels == 2;
        let tag = |c: u8| if stereo { Some(c) } else { None };
        let transcripts: Vec<String> = results
            .channels
            .iter()
            .map(|c| c.alternatives.first().map(|a| a.transcript.trim().to_owned()).unwrap_or_default())
            .collect();

        let mut segments = Vec::new();
        let utterances = results.utterances.unwrap_or_default();
        for u in &utterances {
            if !(u.start.is_finite() && u.end.is_finite() && u.start >= 0.0) {
                return Err(format!("utterance times {} .. {} are not valid", u.start, u.end));
            }
            let said = u.transcript.trim();
            if !said.is_empty() {
                segments.push(Segment {
                    start: u.start,
                    end: u.end.max(u.start),
                    text: said.to_owned(),
                    channel: tag(u.channel),
                });
            }
        }
        if segments.is_empty() {
            for (c, text) in transcripts.iter().enumerate() {
                if !text.is_empty() {
                    let channel = u8::try_from(c).map_err(|_| "too many channels".to_owned())?;
                    segments.push(Segment { start: 0.0, end: duration, text: text.clone(), channel: tag(channel) });
                }
            }
        }
        segments.sort_by(|a, b| a.start.total_cmp(&b.start));

        let text = if stereo {
            segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ")
        } else {
            transcripts[0].clone()
        };

        let sentiment = match results.sentiments.and_then(|s| s.average) {
            None => None,
            Some(average) => {
                let overall = Sentiment::checked(label(&average.sentiment)?, average.sentiment_score)?;
                let channels = if stereo { channel_sentiments(&utterances)? } else { Vec::new() };
                Some(SentimentAnalysis { overall, channels })
            }
        };
        Ok(Transcript { text, segments, sentiment })
    }
}

/// Each channel's duration-weighted mean utterance score, for channels that have one.
fn channel_sentiments(utterances: &[Utterance]) -> Result<Vec<ChannelSentiment>, String> {
    let mut sums: Vec<(u8, f64, f64)> = Vec::new();
    for u in utterances {
        let Some(score) = u.sentiment_score else { continue };
        if !score.is_finite() || !(-1.0..=1.0).contains(&score) {
            return Err(format!("utterance sentiment score {score} is not within [-1, 1]"));
        }
        let weight = (u.end - u.start).max(1e-3);
        match sums.iter_mut().find(|(c, _, _)| *c == u.channel) {
            Some((_, total, weights)) => {
                *total += score * weight;
                *weights += weight;
            }
            None => sums.push((u.channel, score * weight, weight)),
        }
    }
    sums.sort_by_key(|(c, _, _)| *c);
    sums.into_iter()
        .map(|(channel, total, weights)| {
            let score = (total / weights).clamp(-1.0, 1.0);
            Ok(ChannelSentiment { channel, sentiment: Sentiment::checked(label_of(score), score)? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_key() {
        let err = DeepgramAi::new(DeepgramConfig::default()).unwrap_err();
        assert!(matches!(err, ConfigError::MissingApiKey { .. }));
        assert!(err.to_string().contains("PBX_AI_API_KEY"));
    }

    #[test]
    fn sentiment_only_for_english() {
        let dg = |language: Option<&str>| {
            DeepgramAi::new(DeepgramConfig {
                api_key: Some(ApiKey::new("dg-key")),
                language: language.map(str::to_owned),
                ..Default::default()
            })
            .unwrap()
            .asks_sentiment()
        };
        assert!(dg(None));
        assert!(dg(Some("en")));
        assert!(dg(Some("en-US")));
        assert!(!dg(Some("de")));
    }

    #[test]
    fn labels_per_channel_means() {
        let u = |channel, start: f64, end: f64, score| Utterance {
            start,
            end,
            transcript: "x".into(),
            channel,
            sentiment_score: Some(score),
        };
        let got = channel_sentiments(&[u(0, 0.0, 1.0, -0.9), u(1, 0.0, 3.0, 0.5), u(1, 3.0, 4.0, -0.5)]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].sentiment.label, SentimentLabel::Negative);
        assert_eq!(got[1].sentiment.label, SentimentLabel::Neutral);
        assert!((got[1].sentiment.score - 0.25).abs() < 1e-9);
        assert!(channel_sentiments(&[u(0, 0.0, 1.0, 2.0)]).is_err());
    }
}
