//! Completion webhooks, signed per Standard Webhooks (standardwebhooks.com), through
//! the store's durable outbox ([`pbx_core::webhooks`]).
//!
//! Two loops per process:
//! - the **enqueuer** follows the event log after the outbox's cursor; for each event
//!   that is a webhook (a call reaching ARCHIVED or FAILED, plus `--webhook-events`)
//!   it renders the body once (the call as `GET /v1/calls/{id}` shows it) and stores
//!   one delivery per `--webhook-url`, moving the cursor in the same step. Several
//!   instances race for the cursor; one wins each step, the others re-read it.
//! - the **sender** claims due deliveries with a lease and POSTs them, at most
//!   `--webhook-concurrency` at once: 2xx is delivered; 410 Gone is dead and disables
//!   that URL until restart; anything else (another status, a redirect, a timeout, a
//!   refused connection) is retried with the retry policy (exponential backoff with
//!   jitter, `Retry-After` honoured) until `--webhook-max-attempts`, then dead.
//!   `POST /v1/webhooks/deliveries/{id}/retry` re-drives a dead one.
//!
//! Delivery is at least once: a sender killed after the receiver answered but before
//! the outcome was stored sends again when the lease ends, with the same `webhook-id`
//! (receivers deduplicate on it). Deliveries only ever go to the configured URLs, never
//! follow redirects, and one whose URL is no longer configured is dead, not sent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use pbx_core::events::{EventId, StoredEvent};
use pbx_core::retry::RetryPolicy;
use pbx_core::store::{CallStore, StoreError};
use pbx_core::webhooks::{Delivery, DeliveryOutcome, NewDelivery, WebhookEvents};
use sha2::Sha256;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::settings::{InvalidSetting, invalid};

/// Deliveries by `outcome`: `delivered`, `retry`, `dead`. Counter.
pub const DELIVERIES: &str = "pbx_webhook_deliveries_total";
/// Pending deliveries in the outbox (all instances), read by the sender. Gauge.
pub const OUTBOX_DEPTH: &str = "pbx_webhook_outbox_pending";
/// Events the outbox could not enqueue because the log had dropped them (the memory
/// store's ring overflowed, or webhooks were off longer than the event retention).
pub const EVENTS_MISSED: &str = "pbx_webhook_events_missed_total";

/// Events read from the log per enqueue step.
const PAGE: usize = 500;
/// How often an idle cursor is marked alive (so the pruner keeps holding for it).
const ALIVE_EVERY: Duration = Duration::from_secs(60);
/// How often the loops look again without a wake-up (due retries, other instances).
const POLL: Duration = Duration::from_secs(1);

/// A signing secret: `whsec_` and the base64 of 24 to 64 random bytes, as Standard
/// Webhooks libraries generate them.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.trim().strip_prefix("whsec_").ok_or("a secret starts with whsec_")?;
        let bytes = BASE64.decode(encoded).map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!("a secret is 24 to 64 bytes; this one is {}", bytes.len()));
        }
        Ok(Self(bytes))
    }
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
/// for each secret, space-separated (several during a rotation).
pub fn sign(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &str) -> String {
    let signed = format!("{id}.{timestamp}.{body}");
    secrets
        .iter()
        .map(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes a key of any length");
            mac.update(signed.as_bytes());
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the webhooks need to run.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where deliveries go (at least one).
    pub endpoints: Vec<String>,
    /// Signing secrets (at least one); every delivery is signed with each.
    pub secrets: Vec<WebhookSecret>,
    /// Which events are sent.
    pub events: WebhookEvents,
    /// When to retry.
    pub policy: RetryPolicy,
    /// Longest one POST may take.
    pub timeout: Duration,
    /// Deliveries sent at once by this process.
    pub concurrency: usize,
}

impl WebhookConfig {
    /// Checks the URLs (absolute `http`/`https`, no credentials in them) and the rest.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.secrets.is_empty() {
            return Err(invalid("--webhook-secret", "webhooks need a signing secret (whsec_...)"));
        }
        for url in &self.endpoints {
            let parsed = reqwest::Url::parse(url).map_err(|e| invalid("--webhook-url", format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(invalid("--webhook-url", format!("{url:?} is not an http(s) URL with a host")));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(invalid("--webhook-url", "a URL must not carry credentials; the signature authenticates"));
            }
        }
        if self.concurrency == 0 {
            return Err(invalid("--webhook-concurrency", "must be at least 1"));
        }
        self.policy.validate().map_err(|e| invalid("--webhook-max-attempts", e))
    }
}

/// The running webhooks of one process.
pub struct Webhooks {
    store: Arc<dyn CallStore>,
    config: WebhookConfig,
    client: reqwest::Client,
    /// URLs that answered 410 Gone: disabled until restart.
    disabled: Mutex<HashSet<String>>,
    /// Rung when new deliveries were enqueued.
    wake: Notify,
    max_missing_ranges: usize,
    /// The outbox cursor as opened at start.
    opened: EventId,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("endpoints", &self.config.endpoints).finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Webhooks over `store`; `max_missing_ranges` as the API's call view. Opens the
    /// outbox (on first use at the log's end: history is not replayed as webhooks), so
    /// that every event written after this returns gets its webhook.
    pub async fn open(
        store: Arc<dyn CallStore>,
        config: WebhookConfig,
        max_missing_ranges: usize,
    ) -> Result<Arc<Self>, crate::ServerError> {
        config.validate()?;
        let end = store.events(0, 1).await?.latest;
        let opened = store.outbox_open(end, Utc::now()).await?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pbx-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::ServerError::Config(format!("webhooks: cannot build the HTTP client: {e}")))?;
        Ok(Arc::new(Self {
            store,
            config,
            client,
            disabled: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            max_missing_ranges,
            opened,
        }))
    }

    /// Runs both loops until `stop` turns true; sends in flight then get `grace` to
    /// finish (a cut one is sent again when its lease ends).
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>, grace: Duration) {
        tracing::info!(endpoints = ?self.config.endpoints, "webhooks on");
        tokio::join!(self.clone().enqueue_loop(stop.clone()), self.send_loop(stop, grace));
    }

    async fn enqueue_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut signal = self.store.event_signal();
        let mut cursor = self.opened;
        let mut alive = tokio::time::Instant::now();
        loop {
            let mut more = false;
            match self.enqueue_step(&mut cursor).await {
                Ok(m) => more = m,
                Err(error) => tracing::warn!(%error, "webhooks: reading the event log failed; trying again"),
            }
            if alive.elapsed() >= ALIVE_EVERY {
                alive = tokio::time::Instant::now();
                if let Err(error) = self.store.outbox_enqueue(cursor, cursor, &[], Utc::now()).await {
                    tracing::warn!(%error, "webhooks: marking the outbox cursor alive failed");
                }
            }
            if more {
                continue;
            }
            tokio::select! {
                _ = async { match &mut signal { Some(s) => { let _ = s.changed().await; } None => std::future::pending().await } } => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One page of the log into the outbox. `Ok(true)` when there may be more.
    async fn enqueue_step(&self, cursor: &mut EventId) -> Result<bool, StoreError> {
        let from = *cursor;
        let page = self.store.events(from, PAGE).await?;
        if !page.continues(from) {
            let missed = page.first.saturating_sub(from + 1);
            tracing::error!(
                from,
                first = page.first,
                missed,
                "webhooks: the event log no longer holds events the outbox had not enqueued; they get no webhook"
            );
            metrics::counter!(EVENTS_MISSED).increment(missed);
        }
        let full = page.events.len() == PAGE;
        let last = page.events.last().map_or(from, |e| e.id);
        let to = if full { last } else { last.max(page.latest) }.max(from);
        if to == from {
            return Ok(false);
        }
        let mut deliveries = Vec::new();
        for event in page.events.iter().filter(|e| e.id > from) {
            let Some(kind) = self.config.events.kind(event) else { continue };
            let body = self.body(&kind, event).await?;
            for endpoint in &self.config.endpoints {
                deliveries.push(NewDelivery {
                    message_id: format!("msg_{:032x}", rand::random::<u128>()),
                    event_id: event.id,
                    call_id: event.call_id.clone(),
                    endpoint: endpoint.clone(),
                    kind: kind.clone(),
                    body: body.clone(),
                });
            }
        }
        if self.store.outbox_enqueue(from, to, &deliveries, Utc::now()).await? {
            *cursor = to;
            if !deliveries.is_empty() {
                self.wake.notify_one();
            }
        } else {
            // Another instance moved it: carry on from where it is.
            *cursor = self.store.outbox_open(to, Utc::now()).await?;
        }
        Ok(true)
    }

    /// The webhook's JSON body: `type`, `timestamp` (of the change) and `data`, the
    /// call as `GET /v1/calls/{id}` shows it (for `call.failed` with `reason`).
    async fn body(&self, kind: &str, event: &StoredEvent) -> Result<String, StoreError> {
        let mut data = match self.store.get(&event.call_id, self.max_missing_ranges).await {
            Ok(snapshot) => {
                let view = crate::api::types::CallView::from(snapshot);
                poem_openapi::types::ToJSON::to_json(&view).unwrap_or_default()
            }
            // Gone since (retention): the id is what is left to say.
            Err(StoreError::NotFound { .. }) => serde_json::json!({ "call_id": event.call_id.as_str() }),
            Err(error) => return Err(error),
        };
        if let serde_json::Value::Object(map) = &mut data {
            map.insert("event_id".into(), event.id.into());
            if kind == "call.failed" {
                let reason = map.get("last_error").cloned().unwrap_or(serde_json::Value::Null);
                map.insert("reason".into(), reason);
            }
        }
        let body = serde_json::json!({
            "type": kind,
            "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data,
        });
        Ok(body.to_string())
    }

    async fn send_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>, grace: Duration) {
        let lease = self.config.timeout + Duration::from_secs(30);
        let mut sending = JoinSet::new();
        loop {
            while sending.try_join_next().is_some() {}
            let room = self.config.concurrency.saturating_sub(sending.len());
            let mut full = false;
            if room > 0 {
                match self.store.claim_deliveries(Utc::now(), lease, room).await {
                    Ok(claimed) => {
                        full = claimed.len() == room;
                        for delivery in claimed {
                            sending.spawn(self.clone().attempt(delivery));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "webhooks: claiming deliveries failed; trying again"),
                }
            }
            if full {
                // More may be due: wait for a quarter of the slots to free up, so the
                // next claim takes several deliveries in one transaction rather than
                // one claim per finished send (on PostgreSQL each claim is a commit).
                let refill = self.config.concurrency.saturating_sub((self.config.concurrency / 4).max(1));
                let freed = async {
                    while sending.len() > refill {
                        sending.join_next().await;
                    }
                };
                tokio::select! {
                    () = freed => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                Some(_) = sending.join_next(), if !sending.is_empty() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if tokio::time::timeout(grace, async { while sending.join_next().await.is_some() {} }).await.is_err() {
            tracing::info!(cut = sending.len(), "webhooks: sends cut at shutdown are sent again when their lease ends");
        }
    }

    /// Sends one delivery and records the outcome.
    async fn attempt(self: Arc<Self>, delivery: Delivery) {
        let outcome = if !self.config.endpoints.contains(&delivery.endpoint) {
            DeliveryOutcome::Dead { error: "its URL is no longer configured (--webhook-url)".into() }
        } else if self.disabled.lock().unwrap_or_else(|p| p.into_inner()).contains(&delivery.endpoint) {
            DeliveryOutcome::Dead { error: "its URL answered 410 Gone before; disabled until restart".into() }
        } else {
            self.send(&delivery).await
        };
        let label = match &outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Dead { .. } => "dead",
        };
        metrics::counter!(DELIVERIES, "outcome" => label).increment(1);
        match &outcome {
            DeliveryOutcome::Delivered => {}
            DeliveryOutcome::Retry { at, error } => {
                tracing::info!(id = delivery.id, attempt = delivery.attempts, %error, retry_at = %at, "webhook not delivered; will retry")
            }
            DeliveryOutcome::Dead { error } => {
                tracing::warn!(id = delivery.id, attempt = delivery.attempts, %error, "webhook given up")
            }
        }
        match self.store.finish_delivery(delivery.id, delivery.attempts, &outcome, Utc::now()).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(id = delivery.id, "webhook outcome not recorded: its lease had passed on"),
            // The lease ends and it is sent again: at least once.
            Err(error) => tracing::warn!(id = delivery.id, %error, "recording a webhook outcome failed"),
        }
    }

    async fn send(&self, delivery: &Delivery) -> DeliveryOutcome {
        let timestamp = Utc::now().timestamp();
        let signature = sign(&self.config.secrets, &delivery.message_id, timestamp, &delivery.body);
        let sent = self
            .client
            .post(&delivery.endpoint)
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => DeliveryOutcome::Delivered,
            Ok(response) if response.status() == reqwest::StatusCode::GONE => {
                self.disabled.lock().unwrap_or_else(|p| p.into_inner()).insert(delivery.endpoint.clone());
                tracing::warn!(url = %delivery.endpoint, "webhook URL answered 410 Gone: disabled until restart");
                DeliveryOutcome::Dead { error: "410 Gone: the URL is disabled until restart".into() }
            }
            Ok(response) => {
                let hint = pbx_ai::http_error::retry_after(response.headers(), SystemTime::now());
                self.retry(delivery, format!("HTTP {}", response.status()), hint)
            }
            Err(error) => self.retry(delivery, transport_error(error), None),
        }
    }

    fn retry(&self, delivery: &Delivery, error: String, retry_after: Option<Duration>) -> DeliveryOutcome {
        match self.config.policy.delay_after(delivery.attempts, retry_after, &mut rand::rng()) {
            Some(delay) => DeliveryOutcome::Retry {
                at: Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
                error,
            },
            None => DeliveryOutcome::Dead { error: format!("gave up after {} attempts: {error}", delivery.attempts) },
        }
    }
}

/// A transport failure in one line, without the URL's query (it is the operator's, but
/// logs travel).
fn transport_error(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_with_clear_errors() {
        let good = format!("whsec_{}", BASE64.encode([7u8; 32]));
        assert!(WebhookSecret::parse(&good).is_ok());
        assert!(WebhookSecret::parse(&BASE64.encode([7u8; 32])).unwrap_err().contains("whsec_"));
        assert!(WebhookSecret::parse("whsec_!!!").unwrap_err().contains("base64"));
        assert!(WebhookSecret::parse(&format!("whsec_{}", BASE64.encode([7u8; 8]))).unwrap_err().contains("24 to 64"));
        assert_eq!(format!("{:?}", WebhookSecret::parse(&good).unwrap()), "WebhookSecret(..)");
    }

    #[test]
    fn signatures_are_one_per_secret() {
        let a = WebhookSecret(vec![1; 32]);
        let b = WebhookSecret(vec![2; 32]);
        let one = sign(std::slice::from_ref(&a), "msg_1", 1_700_000_000, "{}");
        assert!(one.starts_with("v1,") && !one.contains(' '));
        let both = sign(&[a, b], "msg_1", 1_700_000_000, "{}");
        let parts: Vec<_> = both.split(' ').collect();
        assert_eq!((parts.len(), parts[0]), (2, one.as_str()));
        assert_ne!(parts[0], parts[1]);
    }
}
