//! [`OpenAiSentiment`]: sentiment from a chat model with a strict JSON schema.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use pbx_core::CallId;
use pbx_core::ai::{AiError, Sentiment, SentimentAnalyzer, SentimentLabel};
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{ConfigError, auth_header, endpoint, http_client};
use crate::http_error::{self, ErrorShape, Provider};
use crate::openai_transcriber::OPENAI_BASE_URL;
use crate::secret::ApiKey;

/// The instructions sent with every transcript.
pub const SYSTEM_PROMPT: &str = "You rate the sentiment of call-centre call transcripts. \
Answer with the overall sentiment of the caller and agent together: label POSITIVE, NEUTRAL or NEGATIVE, \
and score from -1 (most negative) to 1 (most positive), 0 being neutral.";

/// The JSON schema's name in the request.
pub const SCHEMA_NAME: &str = "call_sentiment";

const NAME: &str = "openai";

/// Settings of an [`OpenAiSentiment`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiSentimentConfig {
    /// Scheme, host and optional path prefix, without `/v1`.
    pub base_url: String,
    /// A chat model with structured outputs: `gpt-4o-mini`, `gpt-4.1-mini`, ...
    pub model: String,
    /// Sent as `Authorization: Bearer`; optional for self-hosted servers.
    pub api_key: Option<ApiKey>,
    /// The longest one request may take.
    pub timeout: Duration,
}

impl Default for OpenAiSentimentConfig {
    fn default() -> Self {
        Self {
            base_url: OPENAI_BASE_URL.to_owned(),
            model: "gpt-4o-mini".to_owned(),
            api_key: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Sentiment over OpenAI's `POST /v1/chat/completions`, constrained by
/// `response_format: json_schema` (strict) to `{"label": POSITIVE|NEUTRAL|NEGATIVE,
/// "score": number}`, at temperature 0.
///
/// The answer's `choices[0].message.content` must parse into that object with a score
/// in `[-1, 1]`; anything else is an unparsable answer (retryable, like every
/// provider's). A refusal (`message.refusal`) is permanent. Empty text is `NEUTRAL` 0
/// and is not sent.
pub struct OpenAiSentiment {
    config: OpenAiSentimentConfig,
    url: Url,
    auth: Option<HeaderValue>,
    http: reqwest::Client,
}

impl fmt::Debug for OpenAiSentiment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSentiment")
            .field("url", &self.url.as_str())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiSentiment {
    /// Checks the settings and builds the client.
    pub fn new(config: OpenAiSentimentConfig) -> Result<Self, ConfigError> {
        if config.model.trim().is_empty() {
            return Err(ConfigError::Invalid { provider: NAME, setting: "model", reason: "must not be empty".into() });
        }
        let url = endpoint(NAME, &config.base_url, "/v1/chat/completions")?;
        let auth = config.api_key.as_ref().map(|k| auth_header(NAME, "Bearer", k)).transpose()?;
        let http = http_client(NAME, config.timeout)?;
        Ok(Self { config, url, auth, http })
    }

    /// The settings.
    pub fn config(&self) -> &OpenAiSentimentConfig {
        &self.config
    }

    fn provider(&self) -> Provider<'_> {
        Provider { name: NAME, shape: ErrorShape::OpenAi, key: self.config.api_key.as_ref() }
    }

    /// The request body for `text`.
    pub fn request_body(&self, text: &str) -> Value {
        json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": SCHEMA_NAME,
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "label": {"type": "string", "enum": ["POSITIVE", "NEUTRAL", "NEGATIVE"]},
                            "score": {"type": "number", "description": "-1 most negative .. 1 most positive"},
                        },
                        "required": ["label", "score"],
                        "additionalProperties": false,
                    },
                },
            },
        })
    }
}

#[derive(Debug, Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Rating {
    label: String,
    score: f64,
}

enum Outcome {
    Rated(Sentiment),
    Refused(String),
}

fn read(body: &[u8]) -> Result<Outcome, String> {
    let completion: Completion = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let message = completion.choices.into_iter().next().ok_or("no choice")?.message;
    if let Some(refusal) = message.refusal.filter(|r| !r.trim().is_empty()) {
        return Ok(Outcome::Refused(refusal));
    }
    let content = message.content.ok_or("no message content")?;
    let rating: Rating = serde_json::from_str(content.trim()).map_err(|e| format!("content: {e}"))?;
    let label: SentimentLabel = rating.label.parse()?;
    Ok(Outcome::Rated(Sentiment::checked(label, rating.score)?))
}

#[async_trait]
impl SentimentAnalyzer for OpenAiSentiment {
    fn name(&self) -> &str {
        NAME
    }

    #[tracing::instrument(name = "openai.sentiment", skip_all, fields(call_id = %call_id, key = idempotency_key), err)]
    async fn analyze(&self, call_id: &CallId, idempotency_key: &str, text: &str) -> Result<Sentiment, AiError> {
        if text.trim().is_empty() {
            return Ok(Sentiment { label: SentimentLabel::Neutral, score: 0.0 });
        }
        let mut http =
            self.http.post(self.url.clone()).header("Idempotency-Key", idempotency_key).json(&self.request_body(text));
        if let Some(auth) = &self.auth {
            http = http.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let body = http_error::send(self.provider(), http).await?;
        match read(&body) {
            Ok(Outcome::Rated(sentiment)) => Ok(sentiment),
            Ok(Outcome::Refused(why)) => Err(AiError::permanent(format!(
                "{NAME}: the model refused to rate the transcript: {}",
                http_error::truncate(&why)
            ))),
            Err(why) => Err(http_error::unparsable(self.provider(), &body, "sentiment rating", &why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(content: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"choices": [{"message": {"role": "assistant", "content": content}}]})).unwrap()
    }

    #[test]
    fn reads_ratings() {
        let Ok(Outcome::Rated(s)) = read(&body(r#"{"label":"NEGATIVE","score":-0.75}"#)) else { panic!() };
        assert_eq!((s.label, s.score), (SentimentLabel::Negative, -0.75));
        assert!(read(&body(r#"{"label":"ANGRY","score":-0.75}"#)).is_err());
        assert!(read(&body(r#"{"label":"NEGATIVE","score":-7}"#)).is_err());
        assert!(read(&body(r#"{"label":"NEGATIVE"}"#)).is_err());
        assert!(read(&body("not json")).is_err());
        assert!(read(br#"{"choices":[]}"#).is_err());
        let refused = br#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that."}}]}"#;
        assert!(matches!(read(refused), Ok(Outcome::Refused(_))));
    }
}
