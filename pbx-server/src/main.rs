//! `pbx-server`: see `pbx-server --help`.

use std::process::ExitCode;

use pbx_server::{ServerError, Settings, init_tracing, run};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    init_tracing(settings.log_format);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Printed rather than logged: RUST_LOG must not be able to hide why it stopped.
            eprintln!("pbx-server: {error}");
            // A bad setting is a usage error (2, like clap's); anything else 1.
            match error {
                ServerError::Setting(_) | ServerError::Config(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
