//! The names of the metrics pbx-core records, through the [`metrics`] facade.
//!
//! Like `tracing`, the facade records nothing until the application installs a
//! recorder (pbx-server exports Prometheus); a library embedding pbx-core pays a
//! relaxed atomic load per call site otherwise. Labels are bounded: never a call id.

/// Group-commit appends, by `outcome` (`ok`, `error`). Counter.
pub const GROUP_COMMITS: &str = "pbx_group_commit_batches_total";
/// Packets per group-commit append. Histogram.
pub const GROUP_COMMIT_BATCH: &str = "pbx_group_commit_batch_size";
/// Group-commit batches kept in flight: the adaptive setting, or a probe of it. Gauge.
pub const GROUP_COMMIT_WRITERS: &str = "pbx_group_commit_writers";
/// AI attempts by `provider` and `outcome` (`archived`, `retry`, `failed`,
/// `lease_lost`, `released`, `store_error`). Counter.
pub const AI_ATTEMPTS: &str = "pbx_ai_attempts_total";
/// AI requests by `provider`, `step` (`transcribe`, `sentiment`) and `outcome` (`ok`,
/// `error`). Counter.
pub const AI_REQUESTS: &str = "pbx_ai_requests_total";
/// AI request latency by `provider` and `step`, in seconds. Histogram.
pub const AI_REQUEST_SECONDS: &str = "pbx_ai_request_duration_seconds";
/// Retries scheduled after a failed attempt. Counter.
pub const RETRIES_SCHEDULED: &str = "pbx_ai_retries_scheduled_total";
/// Calls that reached FAILED. Counter.
pub const CALLS_FAILED: &str = "pbx_calls_failed_total";
