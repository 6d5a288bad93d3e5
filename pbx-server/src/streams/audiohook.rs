//! `GET /v1/media/audiohook`: Genesys Cloud AudioHook (protocol version 2) over WebSocket.
//!
//! In Genesys Cloud, create an AudioHook Monitor integration with the connection URI
//! `wss://pbx.example.com/v1/media/audiohook`, an API key, and (recommended) a client
//! secret; start pbx with `--audiohook-api-key KEY:BASE64_SECRET` (repeatable). Each
//! AudioHook session becomes one call, whose id is the session id (see
//! [`pbx_core::media::audiohook`] for why, and for how the packet sequence follows the
//! audio position).
//!
//! # Authentication, on the upgrade
//! - `X-API-KEY` must be one of [`AudioHookConfig::api_keys`]. With no key configured
//!   at all, the endpoint takes every request (for local testing only).
//! - A key with a secret requires an HTTP message signature (`Signature-Input`,
//!   `Signature`) built as Genesys's reference implementation builds and checks it
//!   (`app/audiohook/src/httpsignature/`, `app/src/authenticator.ts`): hmac-sha256
//!   keyed by the base64-decoded secret, `keyid` = the API key, a `nonce` of at least
//!   22 characters never seen before (a bounded cache remembers nonces while their
//!   signatures could still be valid), `created` at most 10 s old (3 s of clock skew
//!   tolerated in the future), `expires` not passed, covering `@request-target`,
//!   `@authority`, `audiohook-organization-id`, `audiohook-session-id`,
//!   `audiohook-correlation-id` and `x-api-key`. The signature base is re-encoded from
//!   the parsed `Signature-Input` (RFC 9421 / RFC 8941), so a sloppy signer fails.
//!   `@request-target` is the request's path and query, `@authority` its `Host`.
//! - An unsigned request is accepted only for a key configured without a secret.
//! - Every refusal is answered `401` no sooner than [`AudioHookConfig::failure_delay`]
//!   (500 ms, like the reference server) after the request arrived, so timing tells
//!   nothing about which check failed.
//! - After the upgrade, `open.parameters.organizationId` must equal the
//!   `Audiohook-Organization-Id` header: otherwise the session answers `disconnect`
//!   reason `unauthorized` (after the same delay), answers the client's `close` with
//!   `closed`, and creates no call.
//!
//! # Carrying out the session
//! Like the other stream endpoints ([`super`]): `Open` -> [`Gateway::open`] before any
//! frame; frames go through a bounded per-stream queue ([`StreamConfig::buffer_frames`])
//! to a storing task that stores them in batches with [`Gateway::ingest_batch`]; a full
//! queue or a store that keeps failing drops frames *counted* (the shared
//! [`StreamStats`], a warning per stream and a summary when it
//! closes; their sequences stay missing and count as gaps). `close` drains the queue,
//! completes the call and only then answers `closed`. A protocol error answers
//! `disconnect` reason `error` (with the reason as `info`) and closes that one socket
//! with the reason (close code 1008, 1003 or 1009). A socket that drops without `close`
//! is completed after [`StreamConfig::stream_idle_timeout`] unless the session
//! reconnects first (a new socket whose `open` has the same session id).
//!
//! [`Gateway::open`]: pbx_core::gateway::Gateway::open
//! [`Gateway::ingest_batch`]: pbx_core::gateway::Gateway::ingest_batch
//! [`StreamConfig::buffer_frames`]: super::StreamConfig::buffer_frames
//! [`StreamConfig::stream_idle_timeout`]: super::StreamConfig::stream_idle_timeout

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use pbx_core::CallId;
use pbx_core::media::MediaFormat;
use pbx_core::media::audiohook::{
    AudioHookAction, AudioHookEvent, AudioHookMetadata, AudioHookSession, DisconnectReason, MAX_TEXT_BYTES,
    SessionLimits, SilenceSpan, WsFrame,
};
use pbx_core::media::session::{ProtocolError, ProtocolErrorKind};
use pbx_core::packet::Packet;
use poem::http::{HeaderMap, StatusCode};
use poem::web::Data;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{StreamStats, Streams};

/// The signature components Genesys covers and pbx requires.
pub const REQUIRED_COMPONENTS: [&str; 6] = [
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
];

/// One API key and its client secret (`KEY[:BASE64_SECRET]`). `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The `X-API-KEY` value.
    pub key: String,
    /// The client secret (decoded); `None` or empty: requests with this key need no
    /// signature.
    pub secret: Option<Vec<u8>>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey").field("key", &self.key).field("secret", &self.secret.as_ref().map(|_| "***")).finish()
    }
}

/// Why an `--audiohook-api-key` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidApiKey {
    /// Nothing before the `:`.
    #[error("the API key is empty (expected KEY[:BASE64_SECRET])")]
    EmptyKey,
    /// The key has characters Genesys does not allow (`[A-Za-z0-9+/_-]`, up to two `=`).
    #[error("the API key may hold only A-Z, a-z, 0-9, +, /, _, - and up to two trailing =")]
    BadKey,
    /// The secret is not base64.
    #[error("the client secret is not base64: {0}")]
    BadSecret(String),
}

impl FromStr for ApiKey {
    type Err = InvalidApiKey;

    /// `KEY` or `KEY:BASE64_SECRET` (the API key itself never holds `:`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, secret) = match s.split_once(':') {
            Some((k, sec)) => (k.trim(), Some(sec.trim())),
            None => (s.trim(), None),
        };
        if key.is_empty() {
            return Err(InvalidApiKey::EmptyKey);
        }
        let body = key.trim_end_matches('=');
        let ok = key.len() - body.len() <= 2
            && !body.is_empty()
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/_-".contains(&b));
        if !ok {
            return Err(InvalidApiKey::BadKey);
        }
        let secret = match secret {
            None | Some("") => None,
            Some(sec) => Some(BASE64.decode(sec).map_err(|e| InvalidApiKey::BadSecret(e.to_string()))?),
        };
        Ok(Self { key: key.to_owned(), secret })
    }
}

/// Settings of the AudioHook endpoint.
#[derive(Debug, Clone)]
pub struct AudioHookConfig {
    /// The accepted API keys. Empty: no authentication at all (testing only).
    pub api_keys: Vec<ApiKey>,
    /// The least time a refused request waits for its answer. Default 500 ms.
    pub failure_delay: Duration,
    /// The oldest signature accepted (`created`), in seconds. Default 10.
    pub max_signature_age: u64,
    /// How many nonces the replay cache holds at most. Default 100 000; when it is
    /// full of nonces still valid, new signed requests are refused (fail closed).
    pub nonce_cache: usize,
}

impl Default for AudioHookConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            failure_delay: Duration::from_millis(500),
            max_signature_age: 10,
            nonce_cache: 100_000,
        }
    }
}

impl AudioHookConfig {
    /// The configuration for these keys, other settings default.
    pub fn with_keys(api_keys: Vec<ApiKey>) -> Self {
        Self { api_keys, ..Self::default() }
    }
}

/// The tolerated clock skew for `created` in the future, seconds (the reference's).
const MAX_CLOCK_SKEW: u64 = 3;

#[derive(Clone)]
struct AudioHook {
    streams: Streams,
    config: Arc<AudioHookConfig>,
    nonces: Arc<Mutex<NonceCache>>,
}

/// The endpoint alone (a WebSocket upgrade on `GET`): mount it at
/// `/v1/media/audiohook`.
pub fn endpoint(streams: Streams, config: AudioHookConfig) -> impl Endpoint<Output = Response> {
    if config.api_keys.is_empty() {
        tracing::warn!("AudioHook endpoint without API keys: every client is accepted (set --audiohook-api-key)");
    }
    let capacity = config.nonce_cache.max(1);
    let state =
        AudioHook { streams, config: Arc::new(config), nonces: Arc::new(Mutex::new(NonceCache::new(capacity))) };
    get(audiohook).data(state)
}

/// `GET /audiohook` over `streams`; nest under `/v1/media`.
pub fn routes(streams: Streams, config: AudioHookConfig) -> Route {
    Route::new().at("/audiohook", endpoint(streams, config))
}

#[handler]
async fn audiohook(req: &Request, ws: WebSocket, Data(state): Data<&AudioHook>) -> Response {
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let target =
        req.original_uri().path_and_query().map_or_else(|| req.original_uri().path().to_owned(), |p| p.to_string());
    let verdict = authenticate(&state.config, req.headers(), &target, now, &state.nonces);
    if let Err(reason) = verdict {
        tracing::warn!(
            remote = %req.remote_addr(),
            session_id = header(req.headers(), "audiohook-session-id").as_deref().unwrap_or(""),
            reason = %reason,
            "AudioHook connection refused"
        );
        tokio::time::sleep_until(started + state.config.failure_delay).await;
        return (StatusCode::UNAUTHORIZED, format!("AudioHook authentication failed: {reason}")).into_response();
    }
    let organization = header(req.headers(), "audiohook-organization-id");
    let max_frame = state.streams.gateway().config().limits.max_data_bytes;
    let session = AudioHookSession::new(organization)
        .with_limits(SessionLimits { max_frame_bytes: max_frame, ..SessionLimits::default() });
    // The session refuses frames over its limits with a reason; the socket's own limit
    // (4x) only bounds memory.
    let limit = max_frame.max(MAX_TEXT_BYTES).saturating_mul(4);
    let config = WebSocketConfig::default()
        .read_buffer_size(super::READ_BUFFER_BYTES)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let peer = req.remote_addr().to_string();
    let (streams, delay) = (state.streams.clone(), state.config.failure_delay);
    ws.config(config).on_upgrade(move |socket| run(socket, session, streams, peer, delay)).into_response()
}

// ---------------------------------------------------------------------------------
// Authentication

/// Why a request was refused (logged, and sent in the 401 body).
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthError {
    Precondition(String),
    Invalid(String),
    Unsupported(String),
    Expired,
    Failed,
    Replayed,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Precondition(s) => write!(f, "PRECONDITION: {s}"),
            AuthError::Invalid(s) => write!(f, "INVALID: {s}"),
            AuthError::Unsupported(s) => write!(f, "UNSUPPORTED: {s}"),
            AuthError::Expired => f.write_str("EXPIRED: the signature is too old"),
            AuthError::Failed => f.write_str("FAILED: signatures do not match"),
            AuthError::Replayed => f.write_str("FAILED: the signature nonce was used before"),
        }
    }
}

/// The reference's canonicalisation of a field: trimmed, obs-fold joined, several
/// lines joined with `, `.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().replace("\r\n ", " ").replace("\r\n\t", " "))
        .collect();
    (!values.is_empty()).then(|| values.join(", ")).filter(|v| !v.is_empty())
}

fn authenticate(
    config: &AudioHookConfig,
    headers: &HeaderMap,
    target: &str,
    now: u64,
    nonces: &Mutex<NonceCache>,
) -> Result<(), AuthError> {
    if config.api_keys.is_empty() {
        return Ok(());
    }
    let api_key = header(headers, "x-api-key")
        .ok_or_else(|| AuthError::Precondition("Missing \"X-API-KEY\" header field".into()))?;
    let known = config.api_keys.iter().find(|k| k.key == api_key);
    let input = header(headers, "signature-input");
    let signature = header(headers, "signature");
    if input.is_none() && signature.is_none() {
        return match known {
            Some(k) if k.secret.as_ref().is_none_or(|s| s.is_empty()) => Ok(()),
            Some(_) => {
                Err(AuthError::Precondition("the request is not signed but the API key has a client secret".into()))
            }
            None => Err(AuthError::Precondition("unknown API key".into())),
        };
    }
    let signed = verify_signature(headers, target, now, config.max_signature_age, &api_key, known)?;
    let expiry = signed.created.saturating_add(config.max_signature_age + MAX_CLOCK_SKEW);
    let fresh = nonces.lock().expect("nonce cache lock").insert(&signed.nonce, expiry, now);
    if !fresh {
        return Err(AuthError::Replayed);
    }
    Ok(())
}

struct Verified {
    nonce: String,
    created: u64,
}

fn verify_signature(
    headers: &HeaderMap,
    target: &str,
    now: u64,
    max_age: u64,
    api_key: &str,
    known: Option<&ApiKey>,
) -> Result<Verified, AuthError> {
    let input = header(headers, "signature-input")
        .ok_or_else(|| AuthError::Invalid("Found \"signature\" but no \"signature-input\" header field".into()))?;
    let signature = header(headers, "signature")
        .ok_or_else(|| AuthError::Invalid("Found \"signature-input\" but no \"signature\" header field".into()))?;
    let inputs = sf::parse_dictionary(&input)
        .map_err(|e| AuthError::Invalid(format!("Failed to parse \"signature-input\" header field: {e}")))?;
    let signatures = sf::parse_dictionary(&signature)
        .map_err(|e| AuthError::Invalid(format!("Failed to parse \"signature\" header field: {e}")))?;
    let (label, member) = inputs.first().ok_or_else(|| AuthError::Invalid("empty \"signature-input\"".into()))?;
    let sf::Member::InnerList(items, params) = member else {
        return Err(AuthError::Invalid(format!("signature-input {label:?} is not an inner list")));
    };
    let sig = match signatures.iter().find(|(l, _)| l == label) {
        Some((_, sf::Member::Item(sf::Bare::Bytes(b), _))) => b.clone(),
        Some(_) => return Err(AuthError::Invalid(format!("signature {label:?} is not a byte sequence"))),
        None => return Err(AuthError::Invalid(format!("Signature with label {label:?} not found"))),
    };
    let (mut alg, mut created, mut expires, mut keyid, mut nonce) = (None, None, None, None, None);
    for (key, value) in params {
        match (key.as_str(), value) {
            ("alg", sf::Bare::String(s)) => alg = Some(s.clone()),
            ("created", sf::Bare::Integer(i)) if *i >= 0 => created = Some(*i as u64),
            ("expires", sf::Bare::Integer(i)) if *i >= 0 => expires = Some(*i as u64),
            ("keyid", sf::Bare::String(s)) => keyid = Some(s.clone()),
            ("nonce", sf::Bare::String(s)) => nonce = Some(s.clone()),
            _ => return Err(AuthError::Invalid(format!("invalid or unknown signature parameter {key:?}"))),
        }
    }
    let created =
        created.ok_or_else(|| AuthError::Precondition("Cannot determine signature age (no \"created\")".into()))?;
    if created > now + MAX_CLOCK_SKEW {
        return Err(AuthError::Precondition("Invalid \"created\" parameter value (time in the future)".into()));
    }
    if now.saturating_sub(created) > max_age || expires.is_some_and(|e| e < now) {
        return Err(AuthError::Expired);
    }
    // The signature base, re-encoded from the parsed representation.
    let mut lines = Vec::new();
    let mut covered: Vec<&str> = Vec::new();
    for (item, item_params) in items {
        let sf::Bare::String(name) = item else {
            return Err(AuthError::Invalid("covered components must be strings".into()));
        };
        if !item_params.is_empty() {
            return Err(AuthError::Unsupported(format!("component parameters on {name:?}")));
        }
        if covered.contains(&name.as_str()) {
            return Err(AuthError::Invalid(format!("Duplicate {name:?} component reference")));
        }
        let value = match name.as_str() {
            "@request-target" => Some(target.to_owned()),
            "@authority" => header(headers, "host"),
            "@method" => Some("GET".to_owned()),
            "@signature-params" => return Err(AuthError::Invalid("\"@signature-params\" MUST NOT be covered".into())),
            "signature" => return Err(AuthError::Unsupported("a reference to \"signature\"".into())),
            n if n.starts_with('@') => return Err(AuthError::Unsupported(format!("derived component {n:?}"))),
            n => header(headers, n),
        }
        .ok_or_else(|| AuthError::Precondition(format!("Cannot resolve component {name:?}")))?;
        lines.push(format!("{}: {value}", sf::encode_string(name)));
        covered.push(name);
    }
    if let Some(missing) = REQUIRED_COMPONENTS.iter().find(|c| !covered.contains(c)) {
        return Err(AuthError::Precondition(format!("Signature does not cover the required component {missing:?}")));
    }
    lines.push(format!("\"@signature-params\": {}", sf::encode_inner_list(items, params)));
    let base = lines.join("\n");
    let nonce = nonce.ok_or_else(|| AuthError::Precondition("Missing \"nonce\" signature parameter".into()))?;
    if nonce.chars().count() < 22 {
        return Err(AuthError::Precondition("Provided \"nonce\" signature parameter is too small".into()));
    }
    if keyid.as_deref() != Some(api_key) {
        return Err(AuthError::Precondition("X-API-KEY header field and signature keyid mismatch".into()));
    }
    if alg.as_deref().is_some_and(|a| a != "hmac-sha256") {
        return Err(AuthError::Unsupported("only hmac-sha256 signatures are supported".into()));
    }
    // An unknown key is checked against a fixed dummy key, to take the same time.
    let (key, good): (&[u8], bool) = match known.and_then(|k| k.secret.as_deref()) {
        Some(secret) => (secret, true),
        None => (b"pbx-audiohook-unknown-api-key-dummy-secret", false),
    };
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(base.as_bytes());
    let matches = mac.verify_slice(&sig).is_ok();
    if matches && good { Ok(Verified { nonce, created }) } else { Err(AuthError::Failed) }
}

/// Nonces seen, each until its signature could no longer be valid. Bounded.
struct NonceCache {
    capacity: usize,
    seen: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl NonceCache {
    fn new(capacity: usize) -> Self {
        Self { capacity, seen: HashMap::new(), order: VecDeque::new() }
    }

    /// `true` if `nonce` is new (and now remembered until `expiry`).
    fn insert(&mut self, nonce: &str, expiry: u64, now: u64) -> bool {
        while let Some((exp, _)) = self.order.front() {
            if *exp >= now && self.order.len() < self.capacity {
                break;
            }
            if *exp >= now {
                // Full of nonces still valid: refuse rather than forget one.
                return false;
            }
            let (_, old) = self.order.pop_front().expect("front exists");
            self.seen.remove(&old);
        }
        if self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_owned(), expiry);
        // Expiries grow with `created`, nearly in order; a slightly late one only
        // stays a little longer.
        self.order.push_back((expiry.max(self.order.back().map_or(0, |b| b.0)), nonce.to_owned()));
        true
    }
}

/// The subset of RFC 8941 structured fields HTTP message signatures use.
mod sf {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Bare {
        Integer(i64),
        Decimal(String),
        String(String),
        Token(String),
        Bytes(Vec<u8>),
        Boolean(bool),
    }

    pub(super) type Params = Vec<(String, Bare)>;

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Member {
        Item(Bare, Params),
        InnerList(Vec<(Bare, Params)>, Params),
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    pub(super) fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>, String> {
        let mut p = Parser { s: input.as_bytes(), i: 0 };
        p.sp();
        let mut out: Vec<(String, Member)> = Vec::new();
        while p.i < p.s.len() {
            let key = p.key()?;
            let member = if p.peek() == Some(b'=') {
                p.i += 1;
                if p.peek() == Some(b'(') { p.inner_list()? } else { p.item()? }
            } else {
                Member::Item(Bare::Boolean(true), p.params()?)
            };
            out.retain(|(k, _)| *k != key);
            out.push((key, member));
            p.ows();
            if p.i >= p.s.len() {
                break;
            }
            if p.peek() != Some(b',') {
                return Err(format!("expected ',' at {}", p.i));
            }
            p.i += 1;
            p.ows();
            if p.i >= p.s.len() {
                return Err("trailing ','".into());
            }
        }
        Ok(out)
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }
        fn sp(&mut self) {
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
        }
        fn ows(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.i += 1;
            }
        }
        fn key(&mut self) -> Result<String, String> {
            let start = self.i;
            match self.peek() {
                Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
                _ => return Err(format!("expected a key at {start}")),
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
            {
                self.i += 1;
            }
            Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
        }
        fn item(&mut self) -> Result<Member, String> {
            let bare = self.bare()?;
            Ok(Member::Item(bare, self.params()?))
        }
        fn inner_list(&mut self) -> Result<Member, String> {
            self.i += 1; // '('
            let mut items = Vec::new();
            loop {
                self.sp();
                if self.peek() == Some(b')') {
                    self.i += 1;
                    return Ok(Member::InnerList(items, self.params()?));
                }
                let bare = self.bare()?;
                let params = self.params()?;
                items.push((bare, params));
                match self.peek() {
                    Some(b' ' | b')') => {}
                    _ => return Err(format!("expected ' ' or ')' at {}", self.i)),
                }
            }
        }
        fn params(&mut self) -> Result<Params, String> {
            let mut out: Params = Vec::new();
            while self.peek() == Some(b';') {
                self.i += 1;
                self.sp();
                let key = self.key()?;
                let value = if self.peek() == Some(b'=') {
                    self.i += 1;
                    self.bare()?
                } else {
                    Bare::Boolean(true)
                };
                out.retain(|(k, _)| *k != key);
                out.push((key, value));
            }
            Ok(out)
        }
        fn bare(&mut self) -> Result<Bare, String> {
            match self.peek() {
                Some(b'"') => self.string(),
                Some(b':') => self.bytes(),
                Some(b'?') => {
                    self.i += 1;
                    let v = match self.peek() {
                        Some(b'1') => true,
                        Some(b'0') => false,
                        _ => return Err("bad boolean".into()),
                    };
                    self.i += 1;
                    Ok(Bare::Boolean(v))
                }
                Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
                Some(c) if c.is_ascii_alphabetic() || c == b'*' => {
                    let start = self.i;
                    while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&c))
                    {
                        self.i += 1;
                    }
                    Ok(Bare::Token(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
                }
                _ => Err(format!("unexpected character at {}", self.i)),
            }
        }
        fn string(&mut self) -> Result<Bare, String> {
            self.i += 1;
            let mut out = String::new();
            loop {
                match self.peek() {
                    None => return Err("unterminated string".into()),
                    Some(b'\\') => {
                        self.i += 1;
                        match self.peek() {
                            Some(c @ (b'"' | b'\\')) => out.push(c as char),
                            _ => return Err("bad escape".into()),
                        }
                    }
                    Some(b'"') => {
                        self.i += 1;
                        return Ok(Bare::String(out));
                    }
                    Some(c) if (0x20..0x7f).contains(&c) => out.push(c as char),
                    Some(_) => return Err("non-ASCII in string".into()),
                }
                self.i += 1;
            }
        }
        fn bytes(&mut self) -> Result<Bare, String> {
            self.i += 1;
            let start = self.i;
            while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b"+/=".contains(&c)) {
                self.i += 1;
            }
            if self.peek() != Some(b':') {
                return Err("unterminated byte sequence".into());
            }
            let decoded = BASE64.decode(&self.s[start..self.i]).map_err(|e| e.to_string())?;
            self.i += 1;
            Ok(Bare::Bytes(decoded))
        }
        fn number(&mut self) -> Result<Bare, String> {
            let start = self.i;
            if self.peek() == Some(b'-') {
                self.i += 1;
            }
            while matches!(self.peek(), Some(c) if c.is_ascii_digit() || c == b'.') {
                self.i += 1;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
            if text.contains('.') {
                let (int, frac) = text.split_once('.').unwrap_or_default();
                if int.trim_start_matches('-').len() > 12 || frac.is_empty() || frac.len() > 3 || frac.contains('.') {
                    return Err("bad decimal".into());
                }
                return Ok(Bare::Decimal(text.to_owned()));
            }
            if text.trim_start_matches('-').len() > 15 {
                return Err("integer too long".into());
            }
            text.parse().map(Bare::Integer).map_err(|_| "bad integer".into())
        }
    }

    pub(super) fn encode_string(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    fn encode_bare(b: &Bare) -> String {
        match b {
            Bare::Integer(i) => i.to_string(),
            Bare::Decimal(d) => d.clone(),
            Bare::String(s) => encode_string(s),
            Bare::Token(t) => t.clone(),
            Bare::Bytes(b) => format!(":{}:", BASE64.encode(b)),
            Bare::Boolean(v) => (if *v { "?1" } else { "?0" }).to_owned(),
        }
    }

    fn encode_params(params: &Params) -> String {
        params
            .iter()
            .map(|(k, v)| match v {
                Bare::Boolean(true) => format!(";{k}"),
                v => format!(";{k}={}", encode_bare(v)),
            })
            .collect()
    }

    pub(super) fn encode_inner_list(items: &[(Bare, Params)], params: &Params) -> String {
        let inner: Vec<String> = items.iter().map(|(b, p)| format!("{}{}", encode_bare(b), encode_params(p))).collect();
        format!("({}){}", inner.join(" "), encode_params(params))
    }
}

// ---------------------------------------------------------------------------------
// The stream

async fn run(
    mut socket: WebSocketStream,
    mut session: AudioHookSession,
    streams: Streams,
    peer: String,
    failure_delay: Duration,
) {
    let mut conn = Conn::new(streams, peer);
    'read: loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::warn!(stream = conn.id, call_id = ?conn.call_id(), error = %e, "AudioHook stream read failed");
                break;
            }
            None => break,
        };
        let result = match &message {
            Message::Text(text) => session.receive(WsFrame::Text(text)),
            Message::Binary(bytes) => session.receive(WsFrame::Binary(bytes)),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        let actions = match result {
            Ok(actions) => actions,
            Err(error) => {
                conn.protocol_error(&error);
                let info = error.to_string();
                let disconnect = session.disconnect(DisconnectReason::Error, &info);
                let _ = socket.send(Message::Text(disconnect.into_text())).await;
                close(&mut socket, close_code(&error), &info).await;
                break;
            }
        };
        for action in actions {
            match action {
                AudioHookAction::Open { call_id, format, metadata } => {
                    if let Err(reason) = conn.open(call_id, format, &metadata).await {
                        let disconnect = session.disconnect(DisconnectReason::Error, &reason);
                        let _ = socket.send(Message::Text(disconnect.into_text())).await;
                        close(&mut socket, CloseCode::Error, &reason).await;
                        break 'read;
                    }
                }
                AudioHookAction::Store(packets) => conn.enqueue(packets),
                AudioHookAction::Silence(span) => conn.fill(&span).await,
                AudioHookAction::Send(message) => {
                    if message.kind() == "disconnect" {
                        // Only the session's own refusal (organization mismatch) gets here.
                        tokio::time::sleep(failure_delay).await;
                    }
                    if let Err(e) = socket.send(Message::Text(message.into_text())).await {
                        tracing::warn!(stream = conn.id, call_id = ?conn.call_id(), error = %e, "AudioHook stream write failed");
                        break 'read;
                    }
                }
                AudioHookAction::Event(event) => conn.event(event),
                AudioHookAction::HangUp => conn.hang_up().await,
                AudioHookAction::Close => {
                    close(&mut socket, CloseCode::Normal, "closed").await;
                    break 'read;
                }
                other => tracing::debug!(stream = conn.id, action = ?other, "AudioHook action not handled"),
            }
        }
    }
    for action in session.flush() {
        if let AudioHookAction::Store(packets) = action {
            conn.enqueue(packets);
        }
    }
    conn.finish(session.frames()).await;
}

fn close_code(error: &ProtocolError) -> CloseCode {
    match error.kind() {
        ProtocolErrorKind::UnsupportedData | ProtocolErrorKind::Unsupported => CloseCode::Unsupported,
        ProtocolErrorKind::TooLarge => CloseCode::Size,
        _ => CloseCode::Policy,
    }
}

/// Sends a close frame (its reason cut to the 123 bytes a close frame holds) and waits
/// briefly for the peer's answer.
async fn close(socket: &mut WebSocketStream, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    if socket.send(Message::Close(Some((code, reason[..end].to_owned())))).await.is_err() {
        return;
    }
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = socket.next().await {} }).await;
}

struct OpenCall {
    call_id: CallId,
    tx: Option<mpsc::Sender<super::driver::Queued>>,
    storer: Option<JoinHandle<()>>,
}

/// One AudioHook stream's server side: the call, its queue and storing task.
struct Conn {
    streams: Streams,
    id: u64,
    peer: String,
    call: Option<OpenCall>,
    dropped: u64,
    hung_up: bool,
    /// The AudioHook session id, for the stream events.
    stream_id: String,
}

impl Conn {
    fn new(streams: Streams, peer: String) -> Self {
        let id = streams.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let c = &streams.inner.stats.0;
        StreamStats::add(&c.streams_open, 1);
        StreamStats::add(&c.streams_total, 1);
        tracing::debug!(stream = id, protocol = "audiohook", peer = %peer, "media stream connected");
        Self { streams, id, peer, call: None, dropped: 0, hung_up: false, stream_id: String::new() }
    }

    fn call_id(&self) -> Option<&CallId> {
        self.call.as_ref().map(|c| &c.call_id)
    }

    async fn open(&mut self, call_id: CallId, format: MediaFormat, m: &AudioHookMetadata) -> Result<(), String> {
        tracing::info!(
            stream = self.id,
            call_id = %call_id,
            protocol = "audiohook",
            format = %format,
            organization_id = %m.organization_id,
            conversation_id = %m.conversation_id,
            session_id = %m.session_id,
            participant_id = %m.participant.id,
            ani = %m.participant.ani,
            ani_name = %m.participant.ani_name,
            dnis = %m.participant.dnis,
            language = m.language.as_deref().unwrap_or(""),
            channels = ?m.media.channels,
            start_position = m.start_position,
            continued_sessions = ?m.continued_sessions,
            custom_config = m.custom_config.as_deref().unwrap_or(""),
            "media stream started"
        );
        let inner = &self.streams.inner;
        if let Err(e) = inner.gateway.open(&call_id, format).await {
            tracing::warn!(stream = self.id, call_id = %call_id, error = %e, "AudioHook stream refused: the call cannot be opened");
            return Err(format!("call {call_id} cannot be opened: {e}"));
        }
        inner.live.lock().unwrap_or_else(|p| p.into_inner()).insert(call_id.clone(), self.id);
        let info = pbx_core::media::notes::StreamInfo::from_audiohook(m, inner.gateway.now());
        super::driver::note(&self.streams, &call_id, pbx_core::media::notes::StreamNote::Started(Box::new(info))).await;
        let (tx, rx) = mpsc::channel(inner.config.buffer_frames);
        let max_batch = inner.gateway.config().max_request_batch.min(inner.config.buffer_frames).max(1);
        let storer =
            tokio::spawn(super::driver::store_loop(self.streams.clone(), "audiohook", call_id.clone(), rx, max_batch));
        let started = pbx_core::events::EventBody::StreamStarted {
            protocol: "audiohook".to_owned(),
            stream_id: m.session_id.to_string(),
        };
        super::driver::record(&self.streams, &call_id, &started).await;
        self.stream_id = m.session_id.to_string();
        self.call = Some(OpenCall { call_id, tx: Some(tx), storer: Some(storer) });
        Ok(())
    }

    fn enqueue(&mut self, packets: Vec<Packet>) {
        let Some(call) = &self.call else { return };
        let Some(tx) = &call.tx else { return };
        let received = Instant::now();
        for packet in packets {
            if tx.try_send((packet, received)).is_err() {
                self.dropped += 1;
                StreamStats::add(&self.streams.inner.stats.0.frames_dropped, 1);
                if self.dropped.is_power_of_two() {
                    tracing::warn!(
                        stream = self.id,
                        call_id = %call.call_id,
                        dropped = self.dropped,
                        buffer_frames = self.streams.inner.config.buffer_frames,
                        "storage is behind: frames of this AudioHook stream are dropped (counted as gaps)"
                    );
                }
            }
        }
    }

    /// Queues a paused span's silence, waiting for room (this stream's reader waits;
    /// no other stream does): silence is generated, never dropped.
    async fn fill(&mut self, span: &SilenceSpan) {
        let Some(tx) = self.call.as_ref().and_then(|c| c.tx.clone()) else { return };
        for packet in span.packets() {
            if tx.send((packet, Instant::now())).await.is_err() {
                return;
            }
        }
    }

    fn event(&self, event: AudioHookEvent) {
        let (id, call_id) = (self.id, self.call_id());
        match event {
            AudioHookEvent::ClientError { code, message } => {
                tracing::warn!(stream = id, call_id = ?call_id, code, message, "the AudioHook client reported an error");
            }
            AudioHookEvent::OrganizationMismatch { header, open } => {
                tracing::warn!(stream = id, peer = %self.peer, header, open, "AudioHook open refused: organization id differs from the Audiohook-Organization-Id header");
            }
            AudioHookEvent::Ping { .. } => {
                tracing::trace!(stream = id, call_id = ?call_id, event = ?event, "audiohook")
            }
            event => tracing::info!(stream = id, call_id = ?call_id, event = ?event, "audiohook"),
        }
    }

    async fn drain(&mut self) {
        if let Some(call) = &mut self.call {
            call.tx = None;
            if let Some(storer) = call.storer.take() {
                let _ = storer.await;
            }
        }
    }

    async fn hang_up(&mut self) {
        self.drain().await;
        let Some(call) = &self.call else { return };
        self.hung_up = true;
        super::driver::complete_now(&self.streams, &call.call_id, self.id).await;
    }

    fn protocol_error(&self, error: &ProtocolError) {
        StreamStats::add(&self.streams.inner.stats.0.protocol_errors, 1);
        tracing::warn!(
            stream = self.id,
            protocol = "audiohook",
            peer = %self.peer,
            call_id = ?self.call_id(),
            error = %error,
            "media stream closed: protocol error"
        );
    }

    /// Drains the queue and, unless the session closed, completes the call after the
    /// idle timeout unless it reconnected meanwhile.
    async fn finish(mut self, frames: u64) {
        self.drain().await;
        if self.dropped > 0 {
            tracing::warn!(stream = self.id, call_id = ?self.call_id(), frames, dropped = self.dropped, "AudioHook stream closed with dropped frames");
        } else {
            tracing::debug!(stream = self.id, call_id = ?self.call_id(), frames, "AudioHook stream closed");
        }
        let Some(call) = &self.call else { return };
        let ended = pbx_core::events::EventBody::StreamEnded {
            protocol: "audiohook".to_owned(),
            stream_id: self.stream_id.clone(),
            reason: if self.hung_up { "end" } else { "disconnected" }.to_owned(),
        };
        super::driver::record(&self.streams, &call.call_id, &ended).await;
        if self.hung_up {
            return;
        }
        let (streams, call_id, id) = (self.streams.clone(), call.call_id.clone(), self.id);
        let timeout = streams.inner.config.stream_idle_timeout;
        tracing::info!(stream = id, call_id = %call_id, ?timeout, "AudioHook stream dropped without close; the call completes after the idle timeout unless it reconnects");
        super::driver::complete_after_idle(streams, call_id, id);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.streams.inner.stats.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    const KEY: &str = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";
    const SECRET: &str = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=";

    /// Signs as the reference client does (`client/src/clientwebsocket.ts` and
    /// `SignatureBuilder`), written from its description.
    fn signed(secret: &[u8], nonce: &str, created: u64, host: &str, target: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let fields = [
            ("audiohook-organization-id", "d7934305-0972-4844-938e-9060eef73d05"),
            ("audiohook-session-id", "e160e428-53e2-487c-977d-96989bf5c99d"),
            ("audiohook-correlation-id", "30b0e395-84d3-4570-ac13-9a62d8f514c0"),
            ("x-api-key", KEY),
            ("host", host),
        ];
        for (k, v) in fields {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        let params = format!(
            r#"("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="{KEY}";nonce="{nonce}";alg="hmac-sha256";created={created};expires={}"#,
            created + 30
        );
        let base = format!(
            "\"@request-target\": {target}\n\"@authority\": {host}\n\"audiohook-organization-id\": {}\n\"audiohook-session-id\": {}\n\"audiohook-correlation-id\": {}\n\"x-api-key\": {KEY}\n\"@signature-params\": {params}",
            fields[0].1, fields[1].1, fields[2].1
        );
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(base.as_bytes());
        let sig = BASE64.encode(mac.finalize().into_bytes());
        h.insert("signature-input", HeaderValue::from_str(&format!("sig1={params}")).unwrap());
        h.insert("signature", HeaderValue::from_str(&format!("sig1=:{sig}:")).unwrap());
        h
    }

    fn config() -> AudioHookConfig {
        AudioHookConfig::with_keys(vec![format!("{KEY}:{SECRET}").parse().unwrap(), "open-key".parse().unwrap()])
    }

    const NONCE: &str = "0123456789abcdefghijklmn";

    fn check(h: &HeaderMap, now: u64, nonces: &Mutex<NonceCache>) -> Result<(), AuthError> {
        authenticate(&config(), h, "/v1/media/audiohook", now, nonces)
    }

    #[test]
    fn api_keys_parse() {
        let k: ApiKey = format!("{KEY}:{SECRET}").parse().unwrap();
        assert_eq!(k.secret.as_deref(), Some(&b"MySuperSecretKeyTellNo-1!2@3#4$5"[..]));
        assert!(!format!("{k:?}").contains(SECRET));
        assert_eq!("k".parse::<ApiKey>().unwrap().secret, None);
        assert_eq!(":x".parse::<ApiKey>(), Err(InvalidApiKey::EmptyKey));
        assert_eq!("a b".parse::<ApiKey>(), Err(InvalidApiKey::BadKey));
        assert!(matches!("k:!!".parse::<ApiKey>(), Err(InvalidApiKey::BadSecret(_))));
    }

    #[test]
    fn a_good_signature_passes_once() {
        let secret = BASE64.decode(SECRET).unwrap();
        let nonces = Mutex::new(NonceCache::new(10));
        let h = signed(&secret, NONCE, 1000, "127.0.0.1:8080", "/v1/media/audiohook");
        assert_eq!(check(&h, 1005, &nonces), Ok(()));
        assert_eq!(check(&h, 1005, &nonces), Err(AuthError::Replayed));
    }

    #[test]
    fn bad_signatures_fail() {
        let secret = BASE64.decode(SECRET).unwrap();
        let nonces = Mutex::new(NonceCache::new(10));
        let good = || signed(&secret, NONCE, 1000, "h:1", "/v1/media/audiohook");
        let wrong = signed(b"another secret", NONCE, 1000, "h:1", "/v1/media/audiohook");
        assert_eq!(check(&wrong, 1000, &nonces), Err(AuthError::Failed));
        assert_eq!(check(&good(), 1011, &nonces), Err(AuthError::Expired));
        assert!(matches!(check(&good(), 990, &nonces), Err(AuthError::Precondition(_))));
        let short = signed(&secret, "short", 1000, "h:1", "/v1/media/audiohook");
        assert!(matches!(check(&short, 1000, &nonces), Err(AuthError::Precondition(_))));
        let path = signed(&secret, NONCE, 1000, "h:1", "/other");
        assert_eq!(check(&path, 1000, &nonces), Err(AuthError::Failed));
        let mut tampered = good();
        tampered.insert("audiohook-session-id", HeaderValue::from_static("x"));
        assert_eq!(check(&tampered, 1000, &nonces), Err(AuthError::Failed));
        let mut unsigned = good();
        unsigned.remove("signature");
        unsigned.remove("signature-input");
        assert!(matches!(check(&unsigned, 1000, &nonces), Err(AuthError::Precondition(_))));
        unsigned.insert("x-api-key", HeaderValue::from_static("open-key"));
        assert_eq!(check(&unsigned, 1000, &nonces), Ok(()));
        unsigned.insert("x-api-key", HeaderValue::from_static("nope"));
        assert!(check(&unsigned, 1000, &nonces).is_err());
        let mut garbage = good();
        garbage.insert("signature-input", HeaderValue::from_static("sig1=(\"x\""));
        assert!(matches!(check(&garbage, 1000, &nonces), Err(AuthError::Invalid(_))));
        let mut uncovered = good();
        uncovered.insert(
            "signature-input",
            HeaderValue::from_str(&format!(r#"sig1=("x-api-key");keyid="{KEY}";nonce="{NONCE}";created=1000"#))
                .unwrap(),
        );
        assert!(matches!(check(&uncovered, 1000, &nonces), Err(AuthError::Precondition(_))));
    }

    #[test]
    fn the_nonce_cache_is_bounded_and_forgets_expired_nonces() {
        let mut c = NonceCache::new(2);
        assert!(c.insert("a", 10, 0));
        assert!(!c.insert("a", 10, 5));
        assert!(c.insert("b", 10, 5));
        assert!(!c.insert("c", 10, 5), "full of live nonces: refuse");
        assert!(c.insert("c", 20, 11));
        assert!(c.insert("a", 20, 11));
        assert!(c.seen.len() <= 2);
    }

    #[test]
    fn structured_fields_round_trip() {
        let d = sf::parse_dictionary(r#"sig1=("@a" "b");keyid="k\"1";created=5;x;t=tok, sig2=:AAE=:"#).unwrap();
        let sf::Member::InnerList(items, params) = &d[0].1 else { panic!() };
        assert_eq!(sf::encode_inner_list(items, params), r#"("@a" "b");keyid="k\"1";created=5;x;t=tok"#);
        assert_eq!(d[1].1, sf::Member::Item(sf::Bare::Bytes(vec![0, 1]), vec![]));
        for bad in ["sig1=(", "sig1=\"x", "Sig=1", "a=1,", "a=:!!:", "a=1.", "a=?2"] {
            assert!(sf::parse_dictionary(bad).is_err(), "{bad}");
        }
    }
}
