//! Housekeeping: the event log's pruning (`--event-retention`), retention's sweeps
//! (`--retain-packets`, `--retain-calls`, [`pbx_core::retention`]) and old webhook
//! deliveries (`--retain-deliveries`), every `--sweep-interval`.
//!
//! Each rule runs in batches until a batch comes back short: each batch one short
//! transaction in the store that skips rows someone else holds. Between full batches
//! the task rests [`REST_FACTOR`] times as long as the batch took, so it is busy at
//! most a tenth of the time however large the backlog (the first run after retention
//! is switched on, say): unpaced, deleting 3M packets at ~230k/s cost a concurrent
//! PostgreSQL ingest about 30 % of its rate on 2 cores (BENCHMARKS.md). A failed
//! batch is logged and the rule waits for the next run; nothing is lost by waiting.

use std::time::{Duration, Instant};

use pbx_core::gateway::{Gateway, GatewayError};
use pbx_core::retention::{Retention, Swept};
use tokio::sync::watch;

/// Calls swept by retention, by rule.
pub const SWEPT_CALLS: &str = "pbx_retention_swept_calls_total";
/// Packets deleted by retention, by rule.
pub const SWEPT_PACKETS: &str = "pbx_retention_deleted_packets_total";
/// Finished webhook deliveries deleted.
pub const DELIVERIES_PRUNED: &str = "pbx_webhook_deliveries_pruned_total";
/// Events pruned from the log.
pub const EVENTS_PRUNED: &str = "pbx_events_pruned_total";
/// One run's duration.
pub const SWEEP_SECONDS: &str = "pbx_housekeeping_duration_seconds";

/// Calls per packets-rule batch: every packet of each is deleted in the batch's
/// transaction, so this bounds its size (50 calls of a 10-minute 20 ms stream: 1.5M
/// rows at most, usually far fewer).
const PACKET_BATCH: usize = 50;
/// Calls per calls-rule batch (their packets are usually swept already).
const CALL_BATCH: usize = 200;
/// Events, and deliveries, per batch.
const LOG_BATCH: usize = 1_000;
/// After a full batch, rest this many times its duration: a duty cycle of at most
/// 1 / (1 + REST_FACTOR).
pub const REST_FACTOR: u32 = 9;

/// What to keep, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HousekeepingConfig {
    /// Events older than this are pruned; zero keeps them.
    pub events: Duration,
    /// The packets and calls rules.
    pub retention: Retention,
    /// Finished webhook deliveries older than this are deleted; `None` keeps them.
    pub deliveries: Option<Duration>,
    /// How often a run starts.
    pub interval: Duration,
}

/// What one run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Events pruned.
    pub events: u64,
    /// The packets rule.
    pub packets: Swept,
    /// The calls rule.
    pub calls: Swept,
    /// Deliveries pruned.
    pub deliveries: u64,
}

/// The housekeeping task.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    gateway: Gateway,
    config: HousekeepingConfig,
}

impl Housekeeping {
    /// Housekeeping of `gateway`'s store.
    pub fn new(gateway: Gateway, config: HousekeepingConfig) -> Self {
        Self { gateway, config }
    }

    /// Whether any rule is set (else there is nothing to run).
    pub fn has_work(&self) -> bool {
        !self.config.events.is_zero() || self.config.retention.is_set() || self.config.deliveries.is_some()
    }

    /// Runs every `interval` (the first run at once) until `stopped` turns true; a run
    /// in progress stops between batches.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        if !self.has_work() {
            return;
        }
        let mut every = tokio::time::interval(self.config.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let watching = stopped.clone();
            let run = self.run_once(&watching);
            tokio::select! {
                _ = run => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// One run of every rule; logs and counts what it removed.
    pub async fn run_once(&self, stopped: &watch::Receiver<bool>) -> Report {
        let started = Instant::now();
        let mut report = Report::default();
        let c = &self.config;
        let g = &self.gateway;
        // Each batch is counted as it completes, so the metrics follow a long sweep.
        if !c.events.is_zero() {
            report.events = drain("pruning the event log", stopped, LOG_BATCH, rows, |n| async move {
                counted(g.prune_events(c.events, n).await, |n| metrics::counter!(EVENTS_PRUNED).increment(*n))
            })
            .await;
        }
        if let Some(age) = c.retention.packets {
            report.packets = drain("sweeping packets", stopped, PACKET_BATCH, calls, |n| async move {
                counted(g.sweep_packets(age, n).await, |s| count_swept("packets", s))
            })
            .await;
        }
        if let Some(age) = c.retention.calls {
            report.calls = drain("sweeping calls", stopped, CALL_BATCH, calls, |n| async move {
                counted(g.sweep_calls(age, n).await, |s| count_swept("calls", s))
            })
            .await;
        }
        if let Some(age) = c.deliveries {
            report.deliveries = drain("pruning webhook deliveries", stopped, LOG_BATCH, rows, |n| async move {
                counted(g.prune_deliveries(age, n).await, |n| metrics::counter!(DELIVERIES_PRUNED).increment(*n))
            })
            .await;
        }
        metrics::histogram!(SWEEP_SECONDS).record(started.elapsed().as_secs_f64());
        log(&report);
        report
    }
}

/// Runs `batch` until it removes fewer than `n` (as `count` counts what it removed;
/// or fails, or `stopped`); the total.
async fn drain<T, F, Fut>(what: &str, stopped: &watch::Receiver<bool>, n: usize, count: fn(&T) -> u64, batch: F) -> T
where
    T: Default + std::ops::AddAssign + Copy,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, GatewayError>>,
{
    let mut total = T::default();
    while !*stopped.borrow() {
        let started = Instant::now();
        match batch(n).await {
            Ok(done) => {
                total += done;
                if count(&done) < n as u64 {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "{what} failed; trying again at the next run");
                break;
            }
        }
        tokio::time::sleep(started.elapsed() * REST_FACTOR).await;
    }
    total
}

/// What a log prune removed.
fn rows(n: &u64) -> u64 {
    *n
}

/// The calls a sweep took.
fn calls(s: &Swept) -> u64 {
    s.calls
}

/// `result`, after `count` counted it when it is a success.
fn counted<T>(result: Result<T, GatewayError>, count: impl FnOnce(&T)) -> Result<T, GatewayError> {
    if let Ok(done) = &result {
        count(done);
    }
    result
}

fn count_swept(rule: &'static str, swept: &Swept) {
    metrics::counter!(SWEPT_CALLS, "rule" => rule).increment(swept.calls);
    metrics::counter!(SWEPT_PACKETS, "rule" => rule).increment(swept.packets);
}

fn log(report: &Report) {
    if *report != Report::default() {
        tracing::info!(
            events = report.events,
            packets_of_calls = report.packets.calls,
            packets_deleted = report.packets.packets + report.calls.packets,
            calls_deleted = report.calls.calls,
            deliveries = report.deliveries,
            "housekeeping removed old data"
        );
    }
}
