//! `pbx-server`: see `pbx-server --help`.

use std::process::ExitCode;

use pbx_server::{Settings, init_tracing, run};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    init_tracing(settings.log_format);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "pbx-server failed");
            eprintln!("pbx-server: {error}");
            ExitCode::FAILURE
        }
    }
}
