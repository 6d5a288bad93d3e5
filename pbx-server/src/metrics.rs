//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4), through the
//! `metrics` facade and `metrics-exporter-prometheus`.
//!
//! pbx-core records its own (group commit, AI attempts and latency, retries, failures:
//! [`pbx_core::metrics`]); this module adds the server's (packets by source and
//! outcome, ingest latency), and the gauges read when scraped (calls by state, AI
//! requests in flight, event subscribers, the PostgreSQL pool, build info). Labels are
//! bounded sets: never a call id.
//!
//! On the API's port `/metrics` follows the API keys (role `supervisor`) when keys are
//! configured; on `--metrics-bind` it is open, for a scraper on a private network.

use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pbx_core::gateway::{Gateway, Processor};
use pbx_core::ordering::PacketOrder;
use pbx_core::store::PacketOutcome;
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::auth::{ApiKeys, Role};

/// Packets by `source` (`http`, `batch`, and the stream protocols) and `outcome`:
/// `stored` (in order or after a gap), `late` (filled a gap), `duplicate`, `refused`
/// (not stored: malformed, conflicting, a closed call, the store unavailable). Counter.
pub const PACKETS: &str = "pbx_packets_total";
/// Time from a request's arrival to its packets being durable, by `source`. Histogram.
pub const INGEST_SECONDS: &str = "pbx_ingest_duration_seconds";

const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The process's exporter: installed as the global recorder on first use. If the
/// embedding program installed another recorder first, this one renders only what is
/// recorded through it directly (nothing), and says so once in the log.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(pbx_core::metrics::GROUP_COMMIT_BATCH.into()),
                        &BATCH_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty")
        };
        match builder().install_recorder() {
            Ok(handle) => {
                describe();
                handle
            }
            Err(error) => {
                tracing::warn!(%error, "another metrics recorder is installed; /metrics shows only its own gauges");
                builder().build_recorder().handle()
            }
        }
    })
}

/// Help texts and units, as `# HELP` lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    use pbx_core::metrics as core;
    describe_counter!(
        PACKETS,
        "Packets received, by source and outcome (stored, late, duplicate, refused = not stored)."
    );
    describe_histogram!(INGEST_SECONDS, Unit::Seconds, "Time from a request's arrival until its packets are durable.");
    describe_counter!(core::GROUP_COMMITS, "Group-commit appends, by outcome.");
    describe_histogram!(core::GROUP_COMMIT_BATCH, "Packets per group-commit append.");
    describe_gauge!(
        core::GROUP_COMMIT_WRITERS,
        "Group-commit batches kept in flight (adaptive, or fixed by --writers)."
    );
    describe_counter!(core::AI_ATTEMPTS, "AI attempts, by provider and outcome.");
    describe_counter!(core::AI_REQUESTS, "AI requests, by provider, step and outcome.");
    describe_histogram!(core::AI_REQUEST_SECONDS, Unit::Seconds, "AI request latency, by provider and step.");
    describe_counter!(core::RETRIES_SCHEDULED, "AI retries scheduled after a failed attempt.");
    describe_counter!(core::CALLS_FAILED, "Calls that reached FAILED.");
    describe_gauge!("pbx_calls", "Calls in each state, read from the store when scraped.");
    describe_gauge!("pbx_ai_requests_in_flight", "AI requests awaiting an answer in this process.");
    describe_gauge!("pbx_ai_attempts_in_flight", "AI attempts running in this process.");
    describe_gauge!("pbx_event_subscribers", "Live event feed subscribers of this process.");
    describe_gauge!("pbx_db_pool_connections", "PostgreSQL pool connections, by state (idle, in_use).");
    describe_gauge!("pbx_db_pool_max_connections", "The most connections the PostgreSQL pool opens.");
    describe_gauge!("pbx_build_info", "Always 1; the labels say which build runs.");
    describe_gauge!("pbx_streams_open", "Media streams (Twilio, Telnyx, AudioHook, AudioSocket) open now.");
    describe_counter!("pbx_streams_opened_total", "Media streams opened.");
    describe_counter!(
        "pbx_stream_frames_total",
        "Media stream frames, by outcome (stored, dropped = its buffer was full, rejected)."
    );
    describe_counter!("pbx_stream_protocol_errors_total", "Media streams closed for a protocol error.");
    describe_counter!(
        "pbx_streams_resumed_total",
        "Dropped media streams whose call went on because it reconnected before the idle timeout."
    );
    describe_histogram!(
        crate::streams::FRAME_DURABLE_SECONDS,
        Unit::Seconds,
        "Time from a media stream frame read off the wire to its being durable, by protocol."
    );
    describe_counter!(
        crate::streams::NOTES_FAILED,
        "Stream metadata and signals (DTMF, marks) that could not be kept with their call, by kind."
    );
    describe_counter!(crate::webhooks::DELIVERIES, "Webhook delivery attempts, by outcome (delivered, retry, dead).");
    describe_gauge!(crate::webhooks::OUTBOX_DEPTH, "Webhook deliveries pending in the outbox.");
    describe_counter!(
        crate::webhooks::EVENTS_MISSED,
        "Events that got no webhook because the log dropped them before the outbox read them."
    );
    describe_counter!(crate::housekeeping::EVENTS_PRUNED, "Events dropped from the log by --event-retention.");
    describe_counter!(
        crate::housekeeping::SWEPT_CALLS,
        "Calls swept by retention, by rule (packets: their packets deleted; calls: deleted)."
    );
    describe_counter!(crate::housekeeping::SWEPT_PACKETS, "Packets deleted by retention, by rule.");
    describe_counter!(
        crate::housekeeping::DELIVERIES_PRUNED,
        "Finished webhook deliveries deleted by --retain-deliveries."
    );
    describe_histogram!(
        crate::housekeeping::SWEEP_SECONDS,
        Unit::Seconds,
        "Time one housekeeping run (pruning and retention sweeps) took."
    );
}

/// The `outcome` label of one packet's answer.
pub fn outcome_label(outcome: &PacketOutcome) -> &'static str {
    match outcome {
        Ok(appended) => match appended.order {
            PacketOrder::Duplicate => "duplicate",
            PacketOrder::OutOfOrder => "late",
            PacketOrder::InOrder | PacketOrder::Gap { .. } => "stored",
        },
        Err(_) => "refused",
    }
}

/// Counts packets answered for `source`, and the request's time to durable.
pub fn record_ingest<'a>(
    source: &'static str,
    outcomes: impl IntoIterator<Item = &'a PacketOutcome>,
    started: Instant,
) {
    metrics::histogram!(INGEST_SECONDS, "source" => source).record(started.elapsed().as_secs_f64());
    record_outcomes(source, outcomes);
}

/// Counts packets answered for `source` (stream frames: their batch's answers).
pub fn record_outcomes<'a>(source: &'static str, outcomes: impl IntoIterator<Item = &'a PacketOutcome>) {
    for outcome in outcomes {
        metrics::counter!(PACKETS, "source" => source, "outcome" => outcome_label(outcome)).increment(1);
    }
}

/// Counts `n` packets of `source` refused before they reached the store (malformed).
pub fn record_refused(source: &'static str, n: u64) {
    metrics::counter!(PACKETS, "source" => source, "outcome" => "refused").increment(n);
}

/// `GET /metrics`.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    gateway: Gateway,
    processor: Option<Processor>,
    /// `None`: open (the separate metrics listener).
    keys: Option<std::sync::Arc<ApiKeys>>,
    /// The media streams' counters.
    streams: Option<crate::streams::StreamStats>,
}

impl MetricsEndpoint {
    /// The endpoint over `gateway`; `keys` guard it (role `supervisor`) unless `None`.
    pub fn new(gateway: Gateway, processor: Option<Processor>, keys: Option<std::sync::Arc<ApiKeys>>) -> Self {
        handle();
        Self { gateway, processor, keys, streams: None }
    }

    /// Also shows the media streams' counters.
    pub fn with_streams(mut self, stats: crate::streams::StreamStats) -> Self {
        self.streams = Some(stats);
        self
    }

    /// Sets the gauges that are read rather than counted.
    async fn refresh(&self) {
        let store = self.gateway.store();
        match store.count_by_state().await {
            Ok(counts) => {
                for state in pbx_core::CallState::ALL {
                    let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
                    metrics::gauge!("pbx_calls", "state" => state.as_str()).set(n as f64);
                }
            }
            Err(error) => tracing::warn!(%error, "metrics: could not count calls by state"),
        }
        if let Some(pool) = store.pool_stats() {
            metrics::gauge!("pbx_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
            metrics::gauge!("pbx_db_pool_connections", "state" => "in_use")
                .set(f64::from(pool.size.saturating_sub(pool.idle)));
            metrics::gauge!("pbx_db_pool_max_connections").set(f64::from(pool.max));
        }
        if let Some(processor) = &self.processor {
            let status = processor.status();
            metrics::gauge!("pbx_ai_requests_in_flight").set(status.ai_requests_in_flight as f64);
            metrics::gauge!("pbx_ai_attempts_in_flight").set(status.attempts_in_flight as f64);
        }
        // A store without an outbox has no depth to show.
        if let Ok(depth) = store.outbox_depth().await {
            metrics::gauge!(crate::webhooks::OUTBOX_DEPTH).set(depth as f64);
        }
        metrics::gauge!("pbx_event_subscribers").set(self.gateway.subscriber_count() as f64);
        if let Some(streams) = &self.streams {
            let s = streams.snapshot();
            metrics::gauge!("pbx_streams_open").set(s.streams_open as f64);
            // Monotonic counts kept by the streams: counters set to their value.
            metrics::counter!("pbx_streams_opened_total").absolute(s.streams_total);
            metrics::counter!("pbx_stream_frames_total", "outcome" => "stored").absolute(s.frames_stored);
            metrics::counter!("pbx_stream_frames_total", "outcome" => "dropped").absolute(s.frames_dropped);
            metrics::counter!("pbx_stream_frames_total", "outcome" => "rejected").absolute(s.frames_rejected);
            metrics::counter!("pbx_stream_protocol_errors_total").absolute(s.protocol_errors);
            metrics::counter!("pbx_streams_resumed_total").absolute(s.resumed);
        }
        metrics::gauge!("pbx_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    }
}

impl Endpoint for MetricsEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(keys) = &self.keys {
            let header = req.headers().get(poem::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            keys.authorize_header(header, Role::Supervisor)?;
        }
        self.refresh().await;
        let handle = handle();
        handle.run_upkeep();
        Ok(handle
            .render()
            .with_content_type("text/plain; version=0.0.4; charset=utf-8")
            .with_status(StatusCode::OK)
            .into_response())
    }
}
