//! [`Settings`]: every knob of the server, from flags and `PBX_*` environment variables.

// The fields' doc comments are also their `--help` text, written for a terminal: a
// placeholder such as <host>, KEY[:SECRET] or a bare URL means what it says there.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use pbx_core::PacketLimits;
use pbx_core::ai::SimulatedAiConfig;
use pbx_core::gateway::{
    DEFAULT_MAX_GROUP_BATCH, DEFAULT_MAX_REQUEST_BATCH, DEFAULT_MAX_WRITERS, GatewayConfig, GroupCommit,
    ProcessorConfig, Writers,
};
use pbx_core::media::MediaFormat;
use pbx_core::packet::DEFAULT_MAX_DATA_BYTES;
use pbx_core::retry::{Jitter, RetryPolicy};
use pbx_core::{WorkerId, ordering::DEFAULT_MAX_MISSING_RANGES};

use crate::ai::{AiKind, SentimentKind};
use crate::api::{AppOptions, DEFAULT_BODY_LIMIT};
use crate::auth::{ApiKey, ApiKeys};

/// Where calls are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// PostgreSQL when a database URL is set, memory otherwise.
    Auto,
    /// In memory: fast, lost on exit.
    Memory,
    /// PostgreSQL at the database URL (migrations run at start).
    Postgres,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether single-packet requests are coalesced into batch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupCommitKind {
    /// As the store prefers: on for PostgreSQL, off for the memory store.
    Auto,
    /// Always coalesce.
    On,
    /// Never: each packet is its own write.
    Off,
}

/// Backoff randomisation of AI retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JitterKind {
    /// Uniform in [0, delay] (spreads retries best).
    Full,
    /// delay/2 plus uniform in [0, delay/2].
    Equal,
    /// The exact exponential delay.
    None,
}

/// The pbx server: ingests PBX audio packets, tracks calls and runs their AI work.
///
/// Every setting is a flag and a `PBX_*` environment variable (flags win). Durations
/// take a unit: `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
#[derive(Debug, Clone, Parser)]
#[command(name = "pbx-server", version)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PBX_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,

    /// API key as ROLE:KEY, ROLE one of ingest, supervisor, admin (admin may do
    /// everything). Repeat the flag, or separate keys with commas in PBX_API_KEYS.
    /// Clients send `Authorization: Bearer KEY`. Without keys the API is open.
    #[arg(
        long = "api-key",
        env = "PBX_API_KEYS",
        value_delimiter = ',',
        value_name = "ROLE:KEY",
        hide_env_values = true
    )]
    pub api_keys: Vec<ApiKey>,

    /// Serve without API keys on a non-loopback address (refused otherwise).
    #[arg(long, env = "PBX_ALLOW_OPEN")]
    pub allow_open: bool,

    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/pbx. DATABASE_URL is read
    /// when this is not set.
    #[arg(long, env = "PBX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where calls are stored.
    #[arg(long, env = "PBX_STORE", value_enum, default_value_t = StoreKind::Auto)]
    pub store: StoreKind,

    /// Most PostgreSQL connections in the pool (at least 2: one listens for wake-ups).
    #[arg(long, env = "PBX_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Largest request body accepted, in bytes; larger ones get a 413.
    #[arg(long, env = "PBX_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,

    /// Most packets accepted in one batch request; larger batches get a 413.
    #[arg(long, env = "PBX_MAX_BATCH", default_value_t = DEFAULT_MAX_REQUEST_BATCH)]
    pub max_batch: usize,

    /// Largest packet `data` accepted, in bytes; larger packets get a 400.
    #[arg(long, env = "PBX_MAX_DATA_BYTES", default_value_t = DEFAULT_MAX_DATA_BYTES)]
    pub max_data_bytes: usize,

    /// Media format of calls that do not declare one: ENCODING/RATE/CHANNELS, with
    /// encoding mulaw, alaw or l16 (signed 16-bit little-endian), rate 8000, 12000,
    /// 16000, 24000, 32000, 44100 or 48000, and 1 or 2 channels.
    #[arg(long, env = "PBX_MEDIA_FORMAT", default_value = "mulaw/8000/1", value_parser = parse_media_format)]
    pub media_format: MediaFormat,

    /// Group commit: coalesce concurrent single-packet requests into batch writes.
    /// Auto: on for PostgreSQL (one transaction for many packets), off for the memory
    /// store (its write is cheaper than the hand-off to a writer).
    #[arg(long, env = "PBX_GROUP_COMMIT", value_enum, default_value_t = GroupCommitKind::Auto)]
    pub group_commit: GroupCommitKind,

    /// Group commit: most single-packet requests coalesced into one store write.
    #[arg(long, env = "PBX_GROUP_BATCH", default_value_t = DEFAULT_MAX_GROUP_BATCH)]
    pub group_batch: usize,

    /// Group commit: batches appended at once. `auto` (the default) starts at one and
    /// keeps a number between 1 and 4 that measures more packets per second (`auto:8`
    /// for up to 8); a number fixes it. Each batch in flight holds a database
    /// connection.
    #[arg(long, env = "PBX_WRITERS", default_value = "auto", value_parser = parse_writers)]
    pub writers: Writers,

    /// A second listener for GET /metrics only, open (no API key), so a scraper on a
    /// private network need not share the public port. /metrics on --bind stays, and
    /// needs the supervisor role when API keys are set.
    #[arg(long, env = "PBX_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Asterisk AudioSocket: listen for TCP streams here (off when unset), e.g.
    /// 0.0.0.0:9092; the dialplan's AudioSocket(<uuid>,<host>:<port>) points at it.
    #[arg(long, env = "PBX_AUDIOSOCKET_BIND")]
    pub audiosocket_bind: Option<SocketAddr>,

    /// Genesys AudioHook API keys, KEY[:BASE64_SECRET] (repeatable; comma-separated in
    /// the env var). With a secret, the upgrade's HTTP message signature is verified.
    /// Without any key, /v1/media/audiohook is open (a warning is logged).
    #[arg(
        long = "audiohook-api-key",
        env = "PBX_AUDIOHOOK_API_KEYS",
        value_delimiter = ',',
        value_name = "KEY[:BASE64_SECRET]",
        hide_env_values = true
    )]
    pub audiohook_api_keys: Vec<crate::streams::audiohook::ApiKey>,

    /// Twilio's auth token: when set, X-Twilio-Signature is verified on the upgrade of
    /// /v1/media/twilio and a missing or wrong one is refused with 403.
    #[arg(long, env = "PBX_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// The public base URL PBXs connect to (wss://pbx.example.com), for the Twilio
    /// signature behind a proxy: it replaces the scheme and host the request shows.
    #[arg(long, env = "PBX_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A media stream that drops without its end marker completes its call after this
    /// long, unless the call reconnects first.
    #[arg(long, env = "PBX_STREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,

    /// How long the event log keeps events (what `since` can replay); older ones are
    /// pruned every `--sweep-interval`, and a feed asking for them gets `resync`. 0
    /// keeps them (the memory store keeps its newest 100,000 whatever this says).
    #[arg(long, env = "PBX_EVENT_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub event_retention: Duration,

    /// Delete the packets of calls ARCHIVED longer ago than this (e.g. `30d`), keeping
    /// the call, its counters, missing ranges, transcript and a record of the packets;
    /// its recording then answers 410. FAILED calls keep theirs for a re-drive. Unset
    /// (the default) keeps packets forever.
    #[arg(long, env = "PBX_RETAIN_PACKETS", value_parser = parse_duration)]
    pub retain_packets: Option<Duration>,

    /// Delete calls ARCHIVED or FAILED longer ago than this (e.g. `365d`), with
    /// everything they hold; at least `--retain-packets`. Unset (the default) keeps
    /// calls forever.
    #[arg(long, env = "PBX_RETAIN_CALLS", value_parser = parse_duration)]
    pub retain_calls: Option<Duration>,

    /// Delete webhook deliveries delivered or dead longer ago than this (pending ones
    /// are never deleted). 0 keeps them (the memory store keeps its newest 100,000).
    #[arg(long, env = "PBX_RETAIN_DELIVERIES", default_value = "7d", value_parser = parse_duration)]
    pub retain_deliveries: Duration,

    /// How often the housekeeping runs: event pruning and the retention sweeps, each in
    /// small batches.
    #[arg(long, env = "PBX_SWEEP_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// POST a signed webhook (Standard Webhooks) here when a call is ARCHIVED or FAILED
    /// (repeatable, or comma-separated in PBX_WEBHOOK_URLS). Off when unset.
    #[arg(long = "webhook-url", env = "PBX_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,

    /// The signing secret, `whsec_<base64>` (repeatable: during a rotation every
    /// delivery carries one signature per secret). Prefer PBX_WEBHOOK_SECRET or
    /// --webhook-secret-file: a flag is visible in the process list.
    #[arg(long = "webhook-secret", env = "PBX_WEBHOOK_SECRET", value_delimiter = ',', hide_env_values = true)]
    pub webhook_secrets: Vec<String>,

    /// A file of signing secrets, one per line (added to --webhook-secret).
    #[arg(long, env = "PBX_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<std::path::PathBuf>,

    /// Further event types sent as webhooks `call.<type>` (comma-separated feed
    /// types: call_created, state_changed, transcript_ready, ...).
    #[arg(long, env = "PBX_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<String>,

    /// Longest one webhook POST may take.
    #[arg(long, env = "PBX_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Attempts per webhook delivery, the first included; then it is dead (re-drive it
    /// with POST /v1/webhooks/deliveries/{id}/retry). The default retries for about
    /// ten hours (5 s doubling to --webhook-max-interval).
    #[arg(long, env = "PBX_WEBHOOK_MAX_ATTEMPTS", default_value_t = 24)]
    pub webhook_max_attempts: u32,

    /// Cap on one webhook retry delay.
    #[arg(long, env = "PBX_WEBHOOK_MAX_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub webhook_max_interval: Duration,

    /// Webhook deliveries this process sends at once.
    #[arg(long, env = "PBX_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,

    /// Frames a media stream may queue ahead of its store writes; beyond it, frames are
    /// dropped and counted (they show as gaps).
    #[arg(long, env = "PBX_STREAM_BUFFER_FRAMES", default_value_t = 500)]
    pub stream_buffer_frames: usize,

    /// The AI that transcribes: simulated (needs nothing), openai (any
    /// OpenAI-compatible transcription server) or deepgram.
    #[arg(long, env = "PBX_AI", value_enum, default_value_t = AiKind::Simulated)]
    pub ai: AiKind,

    /// The provider's base URL, without /v1: https://api.openai.com (the openai
    /// default), http://127.0.0.1:9000 for a self-hosted Whisper server,
    /// https://api.deepgram.com (the deepgram default).
    #[arg(long, env = "PBX_AI_BASE_URL")]
    pub ai_base_url: Option<String>,

    /// The transcription model: whisper-1 (openai default), gpt-4o-transcribe, a
    /// self-hosted server's model name, nova-3 (deepgram default).
    #[arg(long, env = "PBX_AI_MODEL")]
    pub ai_model: Option<String>,

    /// The spoken language (ISO 639-1 such as en, de); the model detects it when unset.
    #[arg(long, env = "PBX_AI_LANGUAGE")]
    pub ai_language: Option<String>,

    /// The provider's API key. Prefer PBX_AI_API_KEY or --ai-api-key-file: a flag is
    /// visible in the process list. Never logged or shown.
    #[arg(long, env = "PBX_AI_API_KEY", hide_env_values = true)]
    pub ai_api_key: Option<String>,

    /// A file holding the provider's API key (wins over --ai-api-key).
    #[arg(long, env = "PBX_AI_API_KEY_FILE")]
    pub ai_api_key_file: Option<std::path::PathBuf>,

    /// Longest single AI HTTP request (--attempt-timeout still bounds a whole attempt).
    #[arg(long, env = "PBX_AI_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub ai_timeout: Duration,

    /// openai: verbose_json (timed segments; whisper-1 and self-hosted servers) or json
    /// (gpt-4o transcribe models); default by model.
    #[arg(long, env = "PBX_AI_RESPONSE_FORMAT")]
    pub ai_response_format: Option<String>,

    /// openai: the largest upload; longer calls are split at frame boundaries.
    #[arg(long, env = "PBX_AI_MAX_UPLOAD_BYTES", default_value_t = pbx_ai::DEFAULT_MAX_UPLOAD_BYTES)]
    pub ai_max_upload_bytes: usize,

    /// Sentiment: auto (the provider's own where it has one, else VADER), vader (local)
    /// or openai (a chat model, --sentiment-model).
    #[arg(long, env = "PBX_SENTIMENT", value_enum, default_value_t = SentimentKind::Auto)]
    pub sentiment: SentimentKind,

    /// --sentiment openai: the chat model.
    #[arg(long, env = "PBX_SENTIMENT_MODEL", default_value = "gpt-4o-mini")]
    pub sentiment_model: String,

    /// --sentiment openai: its base URL (default: --ai-base-url with --ai openai, else
    /// https://api.openai.com). The key is --ai-api-key's.
    #[arg(long, env = "PBX_SENTIMENT_BASE_URL")]
    pub sentiment_base_url: Option<String>,

    /// Share of simulated AI requests that fail (retryably), from 0 to 1.
    #[arg(long, env = "PBX_AI_FAILURE_RATE", default_value_t = 0.25)]
    pub ai_failure_rate: f64,

    /// Shortest simulated AI latency.
    #[arg(long, env = "PBX_AI_LATENCY_MIN", default_value = "1s", value_parser = parse_duration)]
    pub ai_latency_min: Duration,

    /// Longest simulated AI latency.
    #[arg(long, env = "PBX_AI_LATENCY_MAX", default_value = "3s", value_parser = parse_duration)]
    pub ai_latency_max: Duration,

    /// Seed of the simulated AI and of the retry jitter, for reproducible runs.
    #[arg(long, env = "PBX_SEED")]
    pub seed: Option<u64>,

    /// Run no AI processor in this process (ingest-only instance).
    #[arg(long, env = "PBX_NO_PROCESSOR")]
    pub no_processor: bool,

    /// Most AI runs in flight at once.
    #[arg(long, env = "PBX_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Lease on a call's AI work: a crashed worker's calls are taken over this long
    /// after its last heartbeat.
    #[arg(long, env = "PBX_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,

    /// How often a running AI attempt extends its lease (default: a third of the lease).
    #[arg(long, env = "PBX_HEARTBEAT", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,

    /// Fallback poll for due AI work when no wake-up arrives.
    #[arg(long, env = "PBX_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Longest one AI attempt may take before it fails as a (retryable) time-out.
    #[arg(long, env = "PBX_ATTEMPT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub attempt_timeout: Duration,

    /// Hang up calls silent for this long; 0 never does.
    #[arg(long, env = "PBX_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Delay before the first AI retry.
    #[arg(long, env = "PBX_RETRY_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub retry_initial: Duration,

    /// Cap on any one retry delay.
    #[arg(long, env = "PBX_RETRY_MAX", default_value = "60s", value_parser = parse_duration)]
    pub retry_max: Duration,

    /// Multiplier of the retry delay per further attempt (at least 1).
    #[arg(long, env = "PBX_RETRY_COEFFICIENT", default_value_t = 2.0)]
    pub retry_coefficient: f64,

    /// AI attempts in all, the first included; then the call is FAILED.
    #[arg(long, env = "PBX_RETRY_MAX_ATTEMPTS", default_value_t = 5)]
    pub retry_max_attempts: u32,

    /// Randomisation of retry delays.
    #[arg(long, env = "PBX_RETRY_JITTER", value_enum, default_value_t = JitterKind::Full)]
    pub retry_jitter: JitterKind,

    /// Name of this worker on its leases (default: pbx-<pid>-<random>).
    #[arg(long, env = "PBX_WORKER_ID")]
    pub worker_id: Option<String>,

    /// On SIGTERM or Ctrl-C: how long in-flight requests and AI attempts may take to
    /// finish before they are cut off (AI leases are released).
    #[arg(long, env = "PBX_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "PBX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct InvalidSetting {
    /// The setting (its flag).
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

pub(crate) fn invalid(setting: &'static str, reason: impl std::fmt::Display) -> InvalidSetting {
    InvalidSetting { setting, reason: reason.to_string() }
}

impl Settings {
    /// Settings from the command line and the `PBX_*` environment, with `DATABASE_URL`
    /// as the fallback database URL. Exits with usage on bad flags (what binaries want).
    pub fn load() -> Self {
        let mut settings = Self::parse();
        if settings.database_url.is_none() {
            settings.database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
        }
        settings
    }

    /// Settings from these arguments (the first is the program name) and the `PBX_*`
    /// environment; no `DATABASE_URL` fallback.
    pub fn parse_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }

    /// The store to use, with the database URL when it is PostgreSQL.
    pub fn store_choice(&self) -> Result<Option<&str>, InvalidSetting> {
        match (self.store, self.database_url.as_deref()) {
            (StoreKind::Memory, _) | (StoreKind::Auto, None) => Ok(None),
            (StoreKind::Auto | StoreKind::Postgres, Some(url)) => Ok(Some(url)),
            (StoreKind::Postgres, None) => Err(invalid("--store", "postgres needs --database-url or DATABASE_URL")),
        }
    }

    /// The API keys.
    pub fn keys(&self) -> ApiKeys {
        ApiKeys::new(self.api_keys.iter().cloned())
    }

    /// Refuses to serve an open API on a non-loopback address unless `--allow-open`.
    pub fn check_exposure(&self) -> Result<(), InvalidSetting> {
        if self.api_keys.is_empty() && !self.bind.ip().is_loopback() && !self.allow_open {
            return Err(invalid(
                "--bind",
                format!(
                    "{} is not a loopback address and no API keys are configured; add --api-key ROLE:KEY or pass --allow-open",
                    self.bind
                ),
            ));
        }
        Ok(())
    }

    /// The housekeeping's rules (`--event-retention`, `--retain-*`, `--sweep-interval`).
    pub fn housekeeping_config(&self) -> Result<crate::housekeeping::HousekeepingConfig, InvalidSetting> {
        let retention = pbx_core::retention::Retention { packets: self.retain_packets, calls: self.retain_calls };
        retention.validate().map_err(|e| {
            let flag = if retention.packets.is_some_and(|d| d < Duration::from_secs(1)) {
                "--retain-packets"
            } else {
                "--retain-calls"
            };
            invalid(flag, e.0)
        })?;
        if self.sweep_interval < Duration::from_millis(10) {
            return Err(invalid("--sweep-interval", "must be at least 10ms"));
        }
        Ok(crate::housekeeping::HousekeepingConfig {
            events: self.event_retention,
            retention,
            deliveries: Some(self.retain_deliveries).filter(|d| !d.is_zero()),
            interval: self.sweep_interval,
        })
    }

    /// The HTTP app's options.
    pub fn app_options(&self) -> AppOptions {
        AppOptions { keys: self.keys(), body_limit: self.body_limit, ..AppOptions::default() }
    }

    /// The webhooks' settings; `None` when no `--webhook-url` is set.
    pub fn webhook_config(&self) -> Result<Option<crate::webhooks::WebhookConfig>, InvalidSetting> {
        use crate::webhooks::{WebhookConfig, WebhookSecret};
        let urls: Vec<String> =
            self.webhook_urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
        let mut texts: Vec<String> = self.webhook_secrets.clone();
        if let Some(path) = &self.webhook_secret_file {
            let file = std::fs::read_to_string(path)
                .map_err(|e| invalid("--webhook-secret-file", format!("cannot read {}: {e}", path.display())))?;
            texts.extend(file.lines().map(str::to_owned));
        }
        let mut secrets = Vec::new();
        for text in texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            secrets.push(WebhookSecret::parse(text).map_err(|e| invalid("--webhook-secret", e))?);
        }
        if urls.is_empty() {
            if !secrets.is_empty() || !self.webhook_events.is_empty() {
                return Err(invalid("--webhook-url", "webhook settings are given but no --webhook-url"));
            }
            return Ok(None);
        }
        let mut extra = Vec::new();
        for name in self.webhook_events.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let kind = pbx_core::events::EventType::ALL.into_iter().find(|t| t.as_str() == name).ok_or_else(|| {
                let known: Vec<_> = pbx_core::events::EventType::ALL.iter().map(|t| t.as_str()).collect();
                invalid("--webhook-events", format!("unknown event type {name:?}; known: {}", known.join(", ")))
            })?;
            extra.push(kind);
        }
        let config = WebhookConfig {
            endpoints: urls,
            secrets,
            events: pbx_core::webhooks::WebhookEvents { extra },
            policy: RetryPolicy {
                initial_interval: Duration::from_secs(5).min(self.webhook_max_interval),
                backoff_coefficient: 2.0,
                maximum_interval: self.webhook_max_interval,
                maximum_attempts: self.webhook_max_attempts,
                jitter: pbx_core::retry::Jitter::Equal,
            },
            timeout: self.webhook_timeout,
            concurrency: self.webhook_concurrency,
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// The media streams' settings.
    pub fn stream_config(&self) -> crate::streams::StreamConfig {
        crate::streams::StreamConfig {
            stream_idle_timeout: self.stream_idle_timeout,
            buffer_frames: self.stream_buffer_frames,
            twilio_auth_token: self
                .twilio_auth_token
                .clone()
                .filter(|t| !t.is_empty())
                .map(crate::streams::Secret::new),
            public_url: self.public_url.clone(),
        }
    }

    /// The gateway's settings.
    pub fn gateway_config(&self) -> GatewayConfig {
        GatewayConfig {
            limits: PacketLimits { max_data_bytes: self.max_data_bytes },
            group_commit: match self.group_commit {
                GroupCommitKind::Auto => GroupCommit::Auto,
                GroupCommitKind::On => GroupCommit::On,
                GroupCommitKind::Off => GroupCommit::Off,
            },
            max_group_batch: self.group_batch,
            writers: self.writers,
            max_request_batch: self.max_batch,
            max_missing_ranges: DEFAULT_MAX_MISSING_RANGES,
            default_media_format: self.media_format,
            ..GatewayConfig::default()
        }
    }

    /// The simulated AI's settings.
    pub fn simulated_ai_config(&self) -> SimulatedAiConfig {
        SimulatedAiConfig {
            failure_rate: self.ai_failure_rate,
            latency: self.ai_latency_min..=self.ai_latency_max,
            seed: self.seed,
        }
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_interval: self.retry_initial,
            backoff_coefficient: self.retry_coefficient,
            maximum_interval: self.retry_max,
            maximum_attempts: self.retry_max_attempts,
            jitter: match self.retry_jitter {
                JitterKind::Full => Jitter::Full,
                JitterKind::Equal => Jitter::Equal,
                JitterKind::None => Jitter::None,
            },
        }
    }

    /// The processor's settings.
    pub fn processor_config(&self) -> ProcessorConfig {
        let defaults = ProcessorConfig::default();
        ProcessorConfig {
            worker_id: self.worker_id.clone().map(WorkerId::new).unwrap_or(defaults.worker_id),
            concurrency: self.concurrency,
            lease: self.lease,
            heartbeat_interval: self.heartbeat.unwrap_or(self.lease / 3),
            poll_interval: self.poll_interval,
            attempt_timeout: self.attempt_timeout,
            retry: self.retry_policy(),
            idle_timeout: Some(self.idle_timeout).filter(|t| !t.is_zero()),
            seed: self.seed,
        }
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`, `7d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 500ms, 30s, 5m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}; use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// `auto`, `auto:<max>` or a fixed count, each at least 1.
pub fn parse_writers(s: &str) -> Result<Writers, String> {
    let count = |n: &str| match n.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{s:?}: expected auto, auto:<max> or a number of writers, at least 1")),
        Ok(n) => Ok(n),
    };
    match s.trim() {
        "auto" => Ok(Writers::Adaptive { max: DEFAULT_MAX_WRITERS }),
        other => match other.strip_prefix("auto:") {
            Some(max) => Ok(Writers::Adaptive { max: count(max)? }),
            None => Ok(Writers::Fixed(count(other)?)),
        },
    }
}

fn parse_media_format(s: &str) -> Result<MediaFormat, String> {
    s.parse().map_err(|e: pbx_core::media::MediaFormatError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn parses_writers() {
        assert_eq!(parse_writers("auto"), Ok(Writers::Adaptive { max: DEFAULT_MAX_WRITERS }));
        assert_eq!(parse_writers("auto:8"), Ok(Writers::Adaptive { max: 8 }));
        assert_eq!(parse_writers("2"), Ok(Writers::Fixed(2)));
        for bad in ["0", "auto:0", "many", "auto:", "-1", "auto:x"] {
            assert!(parse_writers(bad).is_err(), "{bad}");
        }
        let s = Settings::parse_from_args(["pbx-server"]).unwrap();
        assert_eq!(s.gateway_config().writers, Writers::default());
    }

    #[test]
    fn defaults_match_the_issue() {
        let s = Settings::parse_from_args(["pbx-server"]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(s.store_choice(), Ok(None));
        assert_eq!(s.ai_failure_rate, 0.25);
        assert_eq!(s.simulated_ai_config().latency, Duration::from_secs(1)..=Duration::from_secs(3));
        assert!(s.processor_config().validate().is_ok());
        assert!(s.gateway_config().validate().is_ok());
    }

    #[test]
    fn group_commit_follows_the_store_unless_told() {
        let config = |args: &[&str]| {
            Settings::parse_from_args(["pbx-server"].iter().chain(args)).unwrap().gateway_config().group_commit
        };
        assert_eq!(config(&[]), GroupCommit::Auto);
        assert_eq!(config(&["--group-commit", "on"]), GroupCommit::On);
        assert_eq!(config(&["--group-commit", "off"]), GroupCommit::Off);
        assert!(Settings::parse_from_args(["pbx-server", "--group-commit", "sometimes"]).is_err());
    }

    #[test]
    fn api_keys_repeat_and_split_on_commas() {
        let s = Settings::parse_from_args(["pbx-server", "--api-key", "ingest:a,supervisor:b", "--api-key", "admin:c"])
            .unwrap();
        assert_eq!(s.api_keys.len(), 3);
        assert!(Settings::parse_from_args(["pbx-server", "--api-key", "root:x"]).is_err());
    }

    #[test]
    fn refuses_an_open_public_bind() {
        let open = Settings::parse_from_args(["pbx-server", "--bind", "0.0.0.0:8000"]).unwrap();
        assert!(open.check_exposure().is_err());
        let allowed = Settings::parse_from_args(["pbx-server", "--bind", "0.0.0.0:8000", "--allow-open"]).unwrap();
        assert!(allowed.check_exposure().is_ok());
        let keyed =
            Settings::parse_from_args(["pbx-server", "--bind", "0.0.0.0:8000", "--api-key", "admin:k"]).unwrap();
        assert!(keyed.check_exposure().is_ok());
        let loopback = Settings::parse_from_args(["pbx-server", "--bind", "[::1]:0"]).unwrap();
        assert!(loopback.check_exposure().is_ok());
    }

    #[test]
    fn media_format_is_checked() {
        let s = Settings::parse_from_args(["pbx-server"]).unwrap();
        assert_eq!(s.gateway_config().default_media_format, MediaFormat::TELEPHONY);
        let s = Settings::parse_from_args(["pbx-server", "--media-format", "l16/16000/2"]).unwrap();
        assert_eq!(s.gateway_config().default_media_format.to_string(), "l16/16000/2");
        for bad in ["opus/48000/1", "mulaw/11025/1", "mulaw/8000/3", "x"] {
            assert!(Settings::parse_from_args(["pbx-server", "--media-format", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn postgres_needs_a_url_and_idle_zero_disables() {
        let s = Settings::parse_from_args(["pbx-server", "--store", "postgres", "--idle-timeout", "0"]).unwrap();
        assert!(s.store_choice().is_err());
        assert_eq!(s.processor_config().idle_timeout, None);
        let s = Settings::parse_from_args(["pbx-server", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(s.store_choice(), Ok(Some("postgres://x/y")));
    }
}
