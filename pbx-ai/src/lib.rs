//! # pbx-ai
//!
//! The AI providers behind [`pbx_core::ai`]'s boundary: each implements
//! [`Transcriber`](pbx_core::ai::Transcriber) or
//! [`SentimentAnalyzer`](pbx_core::ai::SentimentAnalyzer), and
//! [`ComposedAi`](pbx_core::ai::ComposedAi) joins one of each into the processor's
//! [`AiClient`](pbx_core::ai::AiClient).
//!
//! | type | does | over |
//! | --- | --- | --- |
//! | [`OpenAiTranscriber`] | speech to text, timed segments, 2-channel calls, long calls split | `POST /v1/audio/transcriptions` (OpenAI, or any Whisper server that speaks it) |
//! | [`DeepgramAi`] | speech to text with Deepgram's sentiment in one request | `POST /v1/listen` |
//! | [`VaderSentiment`] | sentiment, local and rule-based | nothing: no network |
//! | [`OpenAiSentiment`] | sentiment from a chat model with a strict JSON schema | `POST /v1/chat/completions` |
//!
//! Every HTTP answer becomes an [`AiError`](pbx_core::ai::AiError) in one place
//! ([`http_error`], whose docs hold the whole mapping): 5xx and lost connections are
//! retryable, 429 carries the provider's `Retry-After`, 4xx are permanent, and 401/403
//! name the key setting. Keys live in [`ApiKey`], which prints `***`; no message,
//! log or `Debug` output holds one. Requests are rebuilt for every send, time-outs are
//! settings, and TLS is rustls (no system OpenSSL).
//!
//! ## Composing a client
//!
//! A local (or OpenAI's) Whisper for the transcript, VADER for the sentiment:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use pbx_ai::{ApiKey, OpenAiTranscriber, OpenAiTranscriberConfig, VaderSentiment};
//! use pbx_core::ai::{AiClient, ComposedAi};
//!
//! # fn main() -> Result<(), pbx_ai::ConfigError> {
//! let transcriber = OpenAiTranscriber::new(OpenAiTranscriberConfig {
//!     base_url: "http://127.0.0.1:9000".into(),
//!     model: "whisper-1".into(),
//!     api_key: ApiKey::from_setting(None), // e.g. the PBX_AI_API_KEY setting
//!     language: Some("en".into()),
//!     timeout: Duration::from_secs(60),
//!     ..OpenAiTranscriberConfig::default()
//! })?;
//! let ai: Arc<dyn AiClient> = Arc::new(ComposedAi::new(Arc::new(transcriber), Arc::new(VaderSentiment::new())));
//! # let _ = ai;
//! # Ok(())
//! # }
//! ```
//!
//! With Deepgram, let its own sentiment stand and VADER cover what it does not rate:
//!
//! ```
//! use std::sync::Arc;
//!
//! use pbx_ai::{ApiKey, DeepgramAi, DeepgramConfig, VaderSentiment};
//! use pbx_core::ai::ComposedAi;
//!
//! # fn main() -> Result<(), pbx_ai::ConfigError> {
//! let deepgram = DeepgramAi::new(DeepgramConfig { api_key: Some(ApiKey::new("dg-...")), ..Default::default() })?;
//! let ai = ComposedAi::new(Arc::new(deepgram), Arc::new(VaderSentiment::new())).prefer_transcriber_sentiment(true);
//! assert_eq!(ai.describe(), "deepgram+vader");
//! # Ok(())
//! # }
//! ```
//!
//! Libraries only emit `tracing` events; nothing here reads the environment.

mod client;
mod deepgram;
pub mod http_error;
mod openai_sentiment;
mod openai_transcriber;
mod secret;
mod upload;
mod vader;

pub use client::{CONNECT_TIMEOUT, ConfigError};
pub use deepgram::{DEEPGRAM_BASE_URL, DEEPGRAM_DEFAULT_MODEL, DEEPGRAM_SENTIMENT_BREAK, DeepgramAi, DeepgramConfig};
pub use http_error::{API_KEY_SETTING, MAX_DETAIL_CHARS};
pub use openai_sentiment::{OpenAiSentiment, OpenAiSentimentConfig, SCHEMA_NAME, SYSTEM_PROMPT};
pub use openai_transcriber::{
    DEFAULT_MAX_UPLOAD_BYTES, MIN_MAX_UPLOAD_BYTES, OPENAI_BASE_URL, OpenAiTranscriber, OpenAiTranscriberConfig,
    ResponseFormat,
};
pub use secret::ApiKey;
pub use vader::{VADER_THRESHOLD, VaderSentiment};
