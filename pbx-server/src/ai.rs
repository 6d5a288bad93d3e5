//! The AI the processor uses, built from the settings: the simulated flaky service by
//! default, or real providers from `pbx-ai`.

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use pbx_ai::{
    ApiKey, DeepgramAi, DeepgramConfig, OpenAiSentiment, OpenAiSentimentConfig, OpenAiTranscriber,
    OpenAiTranscriberConfig, ResponseFormat, VaderSentiment,
};
use pbx_core::ai::{AiClient, ComposedAi, SentimentAnalyzer, SimulatedAi, Transcriber};

use crate::settings::{InvalidSetting, Settings, invalid};

/// Which AI service transcribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AiKind {
    /// The in-process flaky simulation (the seed's): needs nothing.
    Simulated,
    /// An OpenAI-compatible `POST /v1/audio/transcriptions`: OpenAI, Groq, Azure
    /// OpenAI, whisper.cpp server, speaches / faster-whisper-server, LocalAI, vLLM.
    Openai,
    /// Deepgram's `POST /v1/listen`, transcript and sentiment in one request.
    Deepgram,
}

/// Which analyser rates the transcript's sentiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SentimentKind {
    /// The transcription provider's own where it has one (Deepgram), else VADER.
    Auto,
    /// VADER, local and rule-based: no network, no key.
    Vader,
    /// An OpenAI-compatible chat model (`--sentiment-model`) with a strict JSON schema.
    Openai,
}

/// The API key from `--ai-api-key` or the file `--ai-api-key-file` (trailing newline
/// dropped). Never printed.
fn api_key(settings: &Settings) -> Result<Option<ApiKey>, InvalidSetting> {
    if let Some(path) = &settings.ai_api_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("--ai-api-key-file", format!("cannot read {}: {e}", path.display())))?;
        let key = ApiKey::from_setting(Some(text.trim_end_matches(['\n', '\r'])));
        return key.map(Some).ok_or_else(|| invalid("--ai-api-key-file", format!("{} is empty", path.display())));
    }
    Ok(ApiKey::from_setting(settings.ai_api_key.as_deref()))
}

fn config_error(setting: &'static str) -> impl FnOnce(pbx_ai::ConfigError) -> InvalidSetting {
    move |e| invalid(setting, e)
}

/// The AI client the settings describe, checked: a bad combination is an
/// [`InvalidSetting`] naming the flag, before anything starts.
pub fn build_ai(settings: &Settings) -> Result<Arc<dyn AiClient>, InvalidSetting> {
    let key = api_key(settings)?;
    let timeout = settings.ai_timeout;
    let transcriber: Arc<dyn Transcriber> = match settings.ai {
        AiKind::Simulated => {
            if settings.sentiment != SentimentKind::Auto {
                return Err(invalid(
                    "--sentiment",
                    "the simulated AI rates its own sentiment; use --ai openai or deepgram",
                ));
            }
            let ai = SimulatedAi::new(settings.simulated_ai_config()).map_err(|e| invalid("--ai-failure-rate", e))?;
            return Ok(Arc::new(ai));
        }
        AiKind::Openai => {
            let base_url = settings.ai_base_url.clone().unwrap_or_else(|| pbx_ai::OPENAI_BASE_URL.to_owned());
            if key.is_none() && base_url == pbx_ai::OPENAI_BASE_URL {
                return Err(invalid(
                    "--ai-api-key",
                    "OpenAI needs an API key (--ai-api-key, PBX_AI_API_KEY or --ai-api-key-file); a self-hosted server needs --ai-base-url",
                ));
            }
            let response_format = match &settings.ai_response_format {
                None => None,
                Some(f) => Some(f.parse::<ResponseFormat>().map_err(|e| invalid("--ai-response-format", e))?),
            };
            Arc::new(
                OpenAiTranscriber::new(OpenAiTranscriberConfig {
                    base_url,
                    model: settings.ai_model.clone().unwrap_or_else(|| "whisper-1".to_owned()),
                    api_key: key.clone(),
                    language: settings.ai_language.clone(),
                    response_format,
                    timeout,
                    max_upload_bytes: settings.ai_max_upload_bytes,
                    ..OpenAiTranscriberConfig::default()
                })
                .map_err(config_error("--ai-base-url"))?,
            )
        }
        AiKind::Deepgram => Arc::new(
            DeepgramAi::new(DeepgramConfig {
                base_url: settings.ai_base_url.clone().unwrap_or_else(|| pbx_ai::DEEPGRAM_BASE_URL.to_owned()),
                model: settings.ai_model.clone().unwrap_or_else(|| pbx_ai::DEEPGRAM_DEFAULT_MODEL.to_owned()),
                api_key: key.clone(),
                language: settings.ai_language.clone(),
                sentiment: settings.sentiment == SentimentKind::Auto,
                timeout,
            })
            .map_err(config_error("--ai-api-key"))?,
        ),
    };
    let sentiment: Arc<dyn SentimentAnalyzer> = match settings.sentiment {
        SentimentKind::Auto | SentimentKind::Vader => Arc::new(VaderSentiment::new()),
        SentimentKind::Openai => {
            let base_url = settings
                .sentiment_base_url
                .clone()
                .or_else(|| settings.ai_base_url.clone().filter(|_| settings.ai == AiKind::Openai))
                .unwrap_or_else(|| pbx_ai::OPENAI_BASE_URL.to_owned());
            Arc::new(
                OpenAiSentiment::new(OpenAiSentimentConfig {
                    base_url,
                    model: settings.sentiment_model.clone(),
                    api_key: key,
                    timeout,
                })
                .map_err(config_error("--sentiment-base-url"))?,
            )
        }
    };
    let ai =
        ComposedAi::new(transcriber, sentiment).prefer_transcriber_sentiment(settings.sentiment == SentimentKind::Auto);
    tracing::info!(ai = %ai.describe(), "AI providers");
    Ok(Arc::new(ai))
}

/// The default `--ai-timeout`.
pub const DEFAULT_AI_TIMEOUT: Duration = Duration::from_secs(120);
