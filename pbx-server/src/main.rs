//! `pbx-server`: see `pbx-server --help`.

use std::process::ExitCode;

use pbx_server::{Settings, init_tracing, run};

/// mimalloc rather than the system allocator: the ingest path allocates a few small
/// buffers per request (HTTP, JSON, the queued packet) on many threads, and glibc's
/// malloc/free took 7 % of all CPU in the single-packet profile (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    init_tracing(settings.log_format);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Printed rather than logged: RUST_LOG must not be able to hide why it stopped.
            eprintln!("pbx-server: {error}");
            ExitCode::FAILURE
        }
    }
}
