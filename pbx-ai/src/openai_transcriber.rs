//! [`OpenAiTranscriber`]: OpenAI's `/v1/audio/transcriptions` and the servers that
//! speak it (a local Whisper, vLLM, LocalAI, ...).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use pbx_core::ai::{AiError, Segment, Transcriber, Transcript, TranscriptionRequest};
use reqwest::Url;
use reqwest::header::HeaderValue;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;

use crate::client::{ConfigError, auth_header, endpoint, http_client};
use crate::http_error::{self, ErrorShape, Provider};
use crate::secret::ApiKey;
use crate::upload::{self, Piece};

/// OpenAI's API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com";

/// OpenAI's upload limit for transcriptions: 25 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;

/// The smallest `max_upload_bytes` accepted: room for the form and some audio.
pub const MIN_MAX_UPLOAD_BYTES: usize = 4096;

/// Bytes kept for the multipart envelope (boundaries, part headers, the form's
/// fixed fields) when sizing a WAV upload; the variable fields are added to it.
const FORM_RESERVE: usize = 2048;

const NAME: &str = "openai";

/// What the transcription endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFormat {
    /// `verbose_json`: text and timed segments (`whisper-1` and Whisper servers).
    VerboseJson,
    /// `json`: text only (all `gpt-4o*-transcribe` models offer). Each upload becomes
    /// one untimed segment spanning its audio.
    Json,
}

impl ResponseFormat {
    /// The default for a model: `json` for models starting with `gpt-4o`, which offer
    /// nothing else with JSON, `verbose_json` for `whisper-1` and every other (often
    /// self-hosted Whisper) model.
    pub fn for_model(model: &str) -> Self {
        if model.starts_with("gpt-4o") { ResponseFormat::Json } else { ResponseFormat::VerboseJson }
    }

    /// `verbose_json` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::VerboseJson => "verbose_json",
            ResponseFormat::Json => "json",
        }
    }
}

impl fmt::Display for ResponseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResponseFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "verbose_json" => Ok(ResponseFormat::VerboseJson),
            "json" => Ok(ResponseFormat::Json),
            other => Err(format!("unknown response format {other:?}: expected verbose_json or json")),
        }
    }
}

/// Settings of an [`OpenAiTranscriber`]. Start from `Default` (OpenAI, `whisper-1`).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiTranscriberConfig {
    /// Scheme, host and optional path prefix, without `/v1`: `https://api.openai.com`,
    /// `http://127.0.0.1:9000`.
    pub base_url: String,
    /// `whisper-1`, `gpt-4o-transcribe`, or whatever a self-hosted server loads.
    pub model: String,
    /// Sent as `Authorization: Bearer`; optional for self-hosted servers.
    pub api_key: Option<ApiKey>,
    /// ISO-639-1 code of the spoken language; the model detects it when unset.
    pub language: Option<String>,
    /// Text to steer the model (vocabulary, spelling of names).
    pub prompt: Option<String>,
    /// Sampling temperature in `[0, 1]`; the server's default when unset.
    pub temperature: Option<f32>,
    /// `verbose_json` or `json`; `None` picks [`ResponseFormat::for_model`].
    pub response_format: Option<ResponseFormat>,
    /// The longest one request may take, upload and answer included.
    pub timeout: Duration,
    /// The largest request body to send. Longer calls are split at frame boundaries
    /// into uploads that fit, each transcribed on its own.
    pub max_upload_bytes: usize,
}

impl Default for OpenAiTranscriberConfig {
    fn default() -> Self {
        Self {
            base_url: OPENAI_BASE_URL.to_owned(),
            model: "whisper-1".to_owned(),
            api_key: None,
            language: None,
            prompt: None,
            temperature: None,
            response_format: None,
            timeout: Duration::from_secs(120),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

/// Speech to text over OpenAI's transcription API.
///
/// Each request uploads a WAV (`<call id>.wav`, `audio/wav`) built from the call's
/// PCM, with `model`, `response_format` and the optional `language`, `prompt` and
/// `temperature`, an `Idempotency-Key` and, with a key, `Authorization: Bearer`.
///
/// - Calls whose WAV would exceed `max_upload_bytes` are cut at frame boundaries;
///   each piece is sent on its own, its segments shifted by where it starts, and the
///   texts joined with spaces.
/// - 2-channel calls are sent one channel at a time (both at once); the segments are
///   tagged with their channel and merged by start time, and the text is the merged
///   segments' text.
/// - When one call needs several requests, each gets its own idempotency key, the
///   attempt's key suffixed with `:ch<c>` and/or `:part<i>`, so a server that honours
///   keys does not answer every piece with the first piece's transcript.
/// - Audio with no samples is not sent: its transcript is empty.
pub struct OpenAiTranscriber {
    config: OpenAiTranscriberConfig,
    response_format: ResponseFormat,
    url: Url,
    auth: Option<HeaderValue>,
    http: reqwest::Client,
}

impl fmt::Debug for OpenAiTranscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiTranscriber")
            .field("url", &self.url.as_str())
            .field("config", &self.config)
            .field("response_format", &self.response_format)
            .finish_non_exhaustive()
    }
}

impl OpenAiTranscriber {
    /// Checks the settings and builds the client.
    pub fn new(config: OpenAiTranscriberConfig) -> Result<Self, ConfigError> {
        let invalid =
            |setting, reason: &str| ConfigError::Invalid { provider: NAME, setting, reason: reason.to_owned() };
        if config.model.trim().is_empty() {
            return Err(invalid("model", "must not be empty"));
        }
        if let Some(t) = config.temperature
            && !(0.0..=1.0).contains(&t)
        {
            return Err(invalid("temperature", &format!("{t} is not within [0, 1]")));
        }
        if config.max_upload_bytes < MIN_MAX_UPLOAD_BYTES {
            return Err(invalid("max_upload_bytes", &format!("must be at least {MIN_MAX_UPLOAD_BYTES}")));
        }
        let url = endpoint(NAME, &config.base_url, "/v1/audio/transcriptions")?;
        let auth = config.api_key.as_ref().map(|k| auth_header(NAME, "Bearer", k)).transpose()?;
        let http = http_client(NAME, config.timeout)?;
        let response_format = config.response_format.unwrap_or_else(|| ResponseFormat::for_model(&config.model));
        Ok(Self { config, response_format, url, auth, http })
    }

    /// The settings.
    pub fn config(&self) -> &OpenAiTranscriberConfig {
        &self.config
    }

    /// The response format in use (the setting, or the model's default).
    pub fn response_format(&self) -> ResponseFormat {
        self.response_format
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn provider(&self) -> Provider<'_> {
        Provider { name: NAME, shape: ErrorShape::OpenAi, key: self.config.api_key.as_ref() }
    }

    /// The most WAV bytes one upload of `request` may carry.
    fn max_wav_bytes(&self, request: &TranscriptionRequest) -> usize {
        let c = &self.config;
        let variable = c.model.len()
            + c.language.as_ref().map_or(0, String::len)
            + c.prompt.as_ref().map_or(0, String::len)
            + request.call_id.as_str().len();
        c.max_upload_bytes.saturating_sub(FORM_RESERVE + variable)
    }

    /// One track (the call, or one channel of it): split, sent piece by piece.
    async fn transcribe_track(
        &self,
        request: &TranscriptionRequest,
        samples: &[i16],
        channel: Option<u8>,
    ) -> Result<Track, AiError> {
        let audio = &request.audio;
        let mono = if channel.is_some() { 1 } else { audio.channels };
        let pieces =
            upload::split(NAME, samples, mono, audio.sample_rate, audio.frame_samples, self.max_wav_bytes(request))?;
        let key = request.idempotency_key();
        let mut track = Track::default();
        for piece in &pieces {
            let mut piece_key = key.clone();
            if let Some(c) = channel {
                piece_key.push_str(&format!(":ch{c}"));
            }
            if pieces.len() > 1 {
                piece_key.push_str(&format!(":part{}", piece.index));
            }
            let (text, segments) = self.send_piece(request, piece, &piece_key).await?;
            if !text.is_empty() {
                track.texts.push(text);
            }
            track.segments.extend(segments.into_iter().map(|s| Segment { channel, ..s }));
        }
        Ok(track)
    }

    async fn send_piece(
        &self,
        request: &TranscriptionRequest,
        piece: &Piece<'_>,
        key: &str,
    ) -> Result<(String, Vec<Segment>), AiError> {
        let c = &self.config;
        let file = Part::bytes(piece.wav())
            .file_name(format!("{}.wav", request.call_id))
            .mime_str("audio/wav")
            .map_err(|e| AiError::permanent(format!("{NAME}: {e}")))?;
        let mut form = Form::new()
            .part("file", file)
            .text("model", c.model.clone())
            .text("response_format", self.response_format.as_str());
        if let Some(language) = &c.language {
            form = form.text("language", language.clone());
        }
        if let Some(prompt) = &c.prompt {
            form = form.text("prompt", prompt.clone());
        }
        if let Some(t) = c.temperature {
            form = form.text("temperature", t.to_string());
        }
        let mut http = self.http.post(self.url.clone()).header("Idempotency-Key", key).multipart(form);
        if let Some(auth) = &self.auth {
            http = http.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        tracing::debug!(key, offset = piece.offset, duration = piece.duration, "uploading audio for transcription");
        let body = http_error::send(self.provider(), http).await?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| http_error::unparsable(self.provider(), &body, "transcription", &e.to_string()))?;
        answer
            .into_piece(self.response_format, piece)
            .map_err(|why| http_error::unparsable(self.provider(), &body, "transcription", &why))
    }
}

#[async_trait]
impl Transcriber for OpenAiTranscriber {
    fn name(&self) -> &str {
        NAME
    }

    #[tracing::instrument(name = "openai.transcribe", skip_all, fields(call_id = %request.call_id, attempt = request.attempt), err)]
    async fn transcribe(&self, request: &TranscriptionRequest) -> Result<Transcript, AiError> {
        let audio = &request.audio;
        upload::check(NAME, audio)?;
        if audio.is_empty() {
            return Ok(Transcript::default());
        }
        if audio.channels == 1 {
            let track = self.transcribe_track(request, &audio.samples, None).await?;
            return Ok(Transcript { text: track.texts.join(" "), segments: track.segments, sentiment: None });
        }
        let (left, right) = (audio.channel(0), audio.channel(1));
        let (left, right) = futures::future::try_join(
            self.transcribe_track(request, &left, Some(0)),
            self.transcribe_track(request, &right, Some(1)),
        )
        .await?;
        let mut segments = left.segments;
        segments.extend(right.segments);
        // Stable: at equal starts channel 0 comes first.
        segments.sort_by(|a, b| a.start.total_cmp(&b.start));
        let text = segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
        Ok(Transcript { text, segments, sentiment: None })
    }
}

/// What one track's pieces gave.
#[derive(Debug, Default)]
struct Track {
    texts: Vec<String>,
    segments: Vec<Segment>,
}

/// The answer's fields pbx reads; `verbose_json` adds `segments`.
#[derive(Debug, Deserialize)]
struct Answer {
    text: String,
    #[serde(default)]
    segments: Option<Vec<AnswerSegment>>,
}

#[derive(Debug, Deserialize)]
struct AnswerSegment {
    start: f64,
    end: f64,
    text: String,
}

impl Answer {
    /// The piece's text and its segments, in seconds from the start of the call.
    fn into_piece(self, format: ResponseFormat, piece: &Piece<'_>) -> Result<(String, Vec<Segment>), String> {
        let text = self.text.trim().to_owned();
        let timed = match (format, self.segments) {
            (ResponseFormat::VerboseJson, Some(segments)) if !segments.is_empty() => segments,
            // `json`, or a server that sent no segments: one segment for the piece.
            _ if text.is_empty() => return Ok((text, Vec::new())),
            _ => {
                let whole = Segment {
                    start: piece.offset,
                    end: piece.offset + piece.duration,
                    text: text.clone(),
                    channel: None,
                };
                return Ok((text, vec![whole]));
            }
        };
        let mut segments = Vec::with_capacity(timed.len());
        for s in timed {
            if !(s.start.is_finite() && s.end.is_finite() && s.start >= 0.0) {
                return Err(format!("segment times {} .. {} are not valid", s.start, s.end));
            }
            let said = s.text.trim();
            if said.is_empty() {
                continue;
            }
            // Whisper rounds times up (a 1.8 s clip's segment ends at 2.0): keep them
            // within the piece.
            let piece_end = piece.offset + piece.duration;
            let start = (piece.offset + s.start).min(piece_end);
            let end = (piece.offset + s.end).clamp(start, piece_end);
            segments.push(Segment { start, end, text: said.to_owned(), channel: None });
        }
        Ok((text, segments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_format_follows_the_model() {
        assert_eq!(ResponseFormat::for_model("whisper-1"), ResponseFormat::VerboseJson);
        assert_eq!(ResponseFormat::for_model("tiny.en"), ResponseFormat::VerboseJson);
        assert_eq!(ResponseFormat::for_model("gpt-4o-transcribe"), ResponseFormat::Json);
        assert_eq!(ResponseFormat::for_model("gpt-4o-mini-transcribe"), ResponseFormat::Json);
        assert_eq!("json".parse::<ResponseFormat>(), Ok(ResponseFormat::Json));
        assert!("srt".parse::<ResponseFormat>().is_err());
        let t = OpenAiTranscriber::new(OpenAiTranscriberConfig {
            model: "gpt-4o-transcribe".into(),
            response_format: Some(ResponseFormat::VerboseJson),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.response_format(), ResponseFormat::VerboseJson);
    }

    #[test]
    fn refuses_bad_settings() {
        let bad = |c: OpenAiTranscriberConfig| OpenAiTranscriber::new(c).unwrap_err().to_string();
        assert!(bad(OpenAiTranscriberConfig { temperature: Some(1.5), ..Default::default() }).contains("temperature"));
        assert!(bad(OpenAiTranscriberConfig { max_upload_bytes: 10, ..Default::default() }).contains("max_upload"));
        assert!(bad(OpenAiTranscriberConfig { model: " ".into(), ..Default::default() }).contains("model"));
        assert!(bad(OpenAiTranscriberConfig { base_url: "nope".into(), ..Default::default() }).contains("base URL"));
        assert!(bad(OpenAiTranscriberConfig { timeout: Duration::ZERO, ..Default::default() }).contains("timeout"));
    }

    #[test]
    fn debug_hides_the_key() {
        let t = OpenAiTranscriber::new(OpenAiTranscriberConfig {
            api_key: Some(ApiKey::new("sk-hidden-123")),
            ..Default::default()
        })
        .unwrap();
        let debug = format!("{t:?}");
        assert!(!debug.contains("sk-hidden-123"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }
}
