//! The processor's settings and their validation.

use std::time::Duration;

use crate::id::WorkerId;
use crate::retry::{InvalidRetryPolicy, RetryPolicy};

/// Settings of a [`Processor`](super::Processor).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Names this worker's leases. Default `pbx-<pid>-<random>`.
    pub worker_id: WorkerId,
    /// Most AI runs in flight at once. Default 64.
    pub concurrency: usize,
    /// Lease length; a crashed worker's calls are rescued this long after its last
    /// heartbeat. Default 30 s.
    pub lease: Duration,
    /// How often a running attempt extends its lease; less than `lease`. Default 10 s.
    pub heartbeat_interval: Duration,
    /// Fallback poll when no wake-up arrives. Default 5 s.
    pub poll_interval: Duration,
    /// Longest one attempt's AI calls may take before the attempt fails as a
    /// (retryable) time-out. Default 5 minutes.
    pub attempt_timeout: Duration,
    /// Retry policy for failed attempts.
    pub retry: RetryPolicy,
    /// Hang up calls silent for this long; `None` never does. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Seed for the jitter RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            worker_id: WorkerId::new(format!("pbx-{}-{:08x}", std::process::id(), rand::random::<u32>())),
            concurrency: 64,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            idle_timeout: Some(Duration::from_secs(300)),
            seed: None,
        }
    }
}

/// An invalid [`ProcessorConfig`] setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProcessorConfig {
    /// A setting out of range.
    #[error("invalid processor setting {setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The retry policy is invalid.
    #[error("invalid retry policy: {0}")]
    Retry(#[from] InvalidRetryPolicy),
}

impl ProcessorConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidProcessorConfig> {
        let bad = |setting, reason| Err(InvalidProcessorConfig::Setting { setting, reason });
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.lease < Duration::from_millis(1) {
            return bad("lease", "must be at least 1 ms");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.lease {
            return bad("heartbeat_interval", "must be more than zero and less than the lease");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval", "must be more than zero");
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout", "must be more than zero");
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return bad("idle_timeout", "must be more than zero (or disabled)");
        }
        self.retry.validate()?;
        Ok(())
    }
}
