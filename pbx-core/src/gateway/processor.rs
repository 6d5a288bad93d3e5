//! The AI worker: claims due calls, runs the AI under the retry policy with bounded
//! concurrency, heartbeats its leases, records outcomes, and shuts down gracefully.

use std::sync::Arc;
use std::time::Duration;

use crate::ai::AiClient;
use crate::id::WorkerId;
use crate::retry::RetryPolicy;
use crate::store::StoreError;

use super::Gateway;

/// Settings of a [`Processor`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Names this worker's leases. Default `pbx-<pid>-<random>`.
    pub worker_id: WorkerId,
    /// Most AI runs in flight at once. Default 64.
    pub concurrency: usize,
    /// Lease length; a crashed worker's calls are rescued this long after its last
    /// heartbeat. Default 30 s.
    pub lease: Duration,
    /// How often a running attempt extends its lease. Default lease / 3.
    pub heartbeat_interval: Duration,
    /// Fallback poll when no wake-up arrives. Default 5 s.
    pub poll_interval: Duration,
    /// Retry policy for failed attempts.
    pub retry: RetryPolicy,
    /// Hang up calls silent for this long; `None` never does. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Seed for the jitter RNG; `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// The background AI worker. See the module docs.
#[derive(Debug)]
pub struct Processor {
    _gateway: Gateway,
    _ai: Arc<dyn AiClient>,
    _config: ProcessorConfig,
}

/// A running processor; [`ProcessorHandle::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct ProcessorHandle {}

impl Processor {
    /// A processor for `gateway`'s store, publishing on its event channel.
    pub fn new(gateway: &Gateway, ai: Arc<dyn AiClient>, config: ProcessorConfig) -> Self {
        Self { _gateway: gateway.clone(), _ai: ai, _config: config }
    }

    /// Runs until shut down.
    pub fn spawn(self) -> ProcessorHandle {
        todo!("processor")
    }

    /// Claims once and runs every claimed call to its recorded outcome; the number
    /// claimed. For tests and embedders that drive the processor themselves.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        todo!("processor")
    }
}

impl ProcessorHandle {
    /// Stops claiming, lets running attempts finish within `grace`, releases the
    /// leases of those still running after it, and returns.
    pub async fn shutdown(self, _grace: Duration) {
        todo!("processor")
    }
}

impl std::fmt::Debug for dyn AiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn AiClient")
    }
}
