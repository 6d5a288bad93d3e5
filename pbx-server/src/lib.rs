//! The bundled pbx HTTP server: a thin Poem + OpenAPI layer over
//! [`pbx_core::gateway::Gateway`], with the AI [`Processor`] running inside.
//!
//! - [`Settings`]: every knob, from flags and `PBX_*` environment variables.
//! - [`build_app`]: the HTTP app over a gateway (what tests drive with
//!   `poem::test::TestClient`).
//! - [`Server`]: store, gateway, processor and listener put together;
//!   [`Server::run_until`] serves until a shutdown signal, then stops gracefully.
//! - [`run`]: what the binary does.
//!
//! Handlers parse, make one gateway call and map its result; the error-to-status
//! mapping lives in [`error`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pbx_core::ai::AiClient;
use pbx_core::gateway::{Gateway, Processor, ProcessorHandle};
use pbx_core::store::{CallStore, StoreError};
use pbx_store_memory::MemoryCallStore;
#[cfg(feature = "postgres")]
use pbx_store_postgres::{PgCallStore, PgStoreOptions};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{EndpointExt, Route};
use tokio::sync::watch;

pub mod ai;
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod housekeeping;
pub mod metrics;
pub mod settings;
pub mod streams;
pub mod ticket;
pub mod webhooks;

pub use api::{App, AppOptions, build_app};
pub use settings::{LogFormat, Settings};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting cannot work.
    #[error(transparent)]
    Setting(#[from] settings::InvalidSetting),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A component refused its configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Installs the tracing subscriber: level from `RUST_LOG` (default `info`), text or JSON.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second install (tests) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Opens the store the settings choose: memory, or PostgreSQL with its migrations run.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn CallStore>, ServerError> {
    match settings.store_choice()? {
        None => {
            tracing::info!("store: memory (calls are lost on exit)");
            Ok(Arc::new(MemoryCallStore::new()))
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => Err(ServerError::Store(StoreError::InvalidArgument(
            "this pbx-server was built without the `postgres` feature; use --store memory".into(),
        ))),
        #[cfg(feature = "postgres")]
        Some(url) => {
            let options = PgStoreOptions::default().max_connections(settings.db_max_connections);
            let store = PgCallStore::connect_with(url, options).await?;
            store.migrate().await?;
            // Listen for wake-ups before the processor starts, so none is missed.
            store.listen().await?;
            tracing::info!("store: PostgreSQL, migrations applied");
            Ok(Arc::new(store))
        }
    }
}

/// A server ready to serve: bound listener, gateway, running processor.
pub struct Server {
    acceptor: poem::listener::TcpAcceptor,
    local_addr: SocketAddr,
    /// The media stream endpoints.
    streams: streams::Streams,
    /// The AudioSocket listener of `--audiosocket-bind`.
    audiosocket: Option<(tokio::net::TcpListener, SocketAddr)>,
    /// The open `/metrics` listener of `--metrics-bind`, with its address.
    metrics: Option<(poem::listener::TcpAcceptor, SocketAddr, metrics::MetricsEndpoint)>,
    gateway: Gateway,
    processor: Option<ProcessorHandle>,
    app: App,
    settings: Settings,
    /// Tells the event feeds the server is closing.
    closing: watch::Sender<bool>,
    /// The completion webhooks, when `--webhook-url` is set.
    webhooks: Option<Arc<webhooks::Webhooks>>,
    housekeeping: housekeeping::Housekeeping,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, builds the gateway, starts the processor with the AI the
    /// settings choose (`--ai`), and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, ServerError> {
        settings.check_exposure()?;
        let ai = ai::build_ai(&settings)?;
        let store = open_store(&settings).await?;
        Self::build_with(settings, store, ai).await
    }

    /// Like [`Server::build`] over a given store and AI client (tests, embedders).
    pub async fn build_with(
        settings: Settings,
        store: Arc<dyn CallStore>,
        ai: Arc<dyn AiClient>,
    ) -> Result<Self, ServerError> {
        settings.check_exposure()?;
        let housekeeping_config = settings.housekeeping_config()?;
        let gateway = Gateway::new(store, settings.gateway_config()).map_err(|e| ServerError::Config(e.to_string()))?;
        let housekeeping = housekeeping::Housekeeping::new(gateway.clone(), housekeeping_config);
        let processor = if settings.no_processor {
            None
        } else {
            Some(
                Processor::new(&gateway, ai, settings.processor_config())
                    .map_err(|e| ServerError::Config(e.to_string()))?,
            )
        };
        let addr = settings.bind;
        let io = |source| ServerError::Io { addr, source };
        let acceptor = TcpListener::bind(addr).into_acceptor().await.map_err(io)?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| io(std::io::Error::other("the listener has no socket address")))?;
        let (closing, closing_rx) = watch::channel(false);
        let options = AppOptions {
            processor: processor.clone(),
            closing: api::Closing::new(closing_rx),
            ..settings.app_options()
        };
        let guarded =
            metrics::MetricsEndpoint::new(gateway.clone(), processor.clone(), Some(Arc::new(options.keys.clone())));
        let streams = streams::Streams::new(gateway.clone(), settings.stream_config());
        let app = Route::new()
            .at("/metrics", guarded.with_streams(streams.stats()))
            .at(
                "/v1/media/audiohook",
                streams::audiohook::endpoint(
                    streams.clone(),
                    streams::audiohook::AudioHookConfig::with_keys(settings.audiohook_api_keys.clone()),
                ),
            )
            .nest("/v1/media", streams.routes())
            .nest("/", build_app(gateway.clone(), options))
            .boxed();
        let audiosocket = match settings.audiosocket_bind {
            None => None,
            Some(addr) => {
                let listener =
                    tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Io { addr, source })?;
                let bound = listener.local_addr().map_err(|source| ServerError::Io { addr, source })?;
                Some((listener, bound))
            }
        };
        let metrics = match settings.metrics_bind {
            None => None,
            Some(addr) => {
                let io = |source| ServerError::Io { addr, source };
                let acceptor = TcpListener::bind(addr).into_acceptor().await.map_err(io)?;
                let bound = acceptor
                    .local_addr()
                    .first()
                    .and_then(|a| a.as_socket_addr().copied())
                    .ok_or_else(|| io(std::io::Error::other("the listener has no socket address")))?;
                let endpoint = metrics::MetricsEndpoint::new(gateway.clone(), processor.clone(), None)
                    .with_streams(streams.stats());
                Some((acceptor, bound, endpoint))
            }
        };
        let webhooks = match settings.webhook_config()? {
            Some(config) => Some(
                webhooks::Webhooks::open(gateway.store().clone(), config, settings.gateway_config().max_missing_ranges)
                    .await?,
            ),
            None => None,
        };
        let processor = processor.map(Processor::spawn);
        Ok(Self {
            acceptor,
            local_addr,
            streams,
            audiosocket,
            metrics,
            gateway,
            processor,
            app,
            settings,
            closing,
            webhooks,
            housekeeping,
        })
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the `--audiosocket-bind` listener, if any.
    pub fn audiosocket_addr(&self) -> Option<SocketAddr> {
        self.audiosocket.as_ref().map(|(_, addr)| *addr)
    }

    /// The address of the `--metrics-bind` listener, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr, _)| *addr)
    }

    /// The gateway the server serves.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Serves until `shutdown` resolves, then stops gracefully: stops accepting,
    /// lets in-flight requests and AI attempts finish within the grace period, and
    /// releases the leases of attempts still running after it.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Server {
            acceptor,
            local_addr,
            streams,
            audiosocket,
            metrics,
            gateway: _,
            processor,
            app,
            settings,
            closing,
            webhooks,
            housekeeping,
        } = self;
        let grace = settings.shutdown_grace;
        let (stop, stopped) = watch::channel(false);
        let mut http_stopped = stopped.clone();
        let mut processor_stopped = stopped.clone();
        let mut metrics_stopped = stopped.clone();
        let mut audiosocket_stopped = stopped.clone();
        let housekeeping_stopped = stopped.clone();
        let webhooks_stopped = stopped.clone();
        let mut signal_or_failure = stopped;

        tracing::info!(addr = %local_addr, "listening on http://{local_addr} (docs at /docs)");
        let signal = async {
            tokio::select! {
                () = shutdown => tracing::info!("shutdown requested; finishing in-flight work"),
                _ = signal_or_failure.wait_for(|s| *s) => {}
            }
            stop.send_replace(true);
            // Feeds close now with a reason, rather than when the grace period cuts them.
            closing.send_replace(true);
        };
        let serve = async {
            let served = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async move {
                        let _ = http_stopped.wait_for(|s| *s).await;
                    },
                    Some(grace),
                )
                .await;
            stop.send_replace(true);
            served
        };
        let serve_metrics = async move {
            let Some((acceptor, addr, endpoint)) = metrics else { return Ok(()) };
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            let route = Route::new().at("/metrics", endpoint);
            poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    route,
                    async move {
                        let _ = metrics_stopped.wait_for(|s| *s).await;
                    },
                    Some(grace),
                )
                .await
                .map_err(|source| ServerError::Io { addr, source })
        };
        let serve_audiosocket = async move {
            let Some((listener, _)) = audiosocket else { return };
            streams::audiosocket::serve(listener, streams, async move {
                let _ = audiosocket_stopped.wait_for(|s| *s).await;
            })
            .await;
        };
        let housekeep = housekeeping.run(housekeeping_stopped);
        let stop_processor = async move {
            let _ = processor_stopped.wait_for(|s| *s).await;
            if let Some(processor) = processor {
                processor.shutdown(grace).await;
            }
        };
        let run_webhooks = async move {
            if let Some(webhooks) = webhooks {
                webhooks.run(webhooks_stopped, grace).await;
            }
        };
        let ((), served, metrics_served, (), (), (), ()) =
            tokio::join!(signal, serve, serve_metrics, serve_audiosocket, stop_processor, housekeep, run_webhooks);
        tracing::info!("stopped");
        served.map_err(|source| ServerError::Io { addr: local_addr, source })?;
        metrics_served
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// What the binary does: build the server from `settings` and serve until SIGTERM or
/// Ctrl-C.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    let server = Server::build(settings).await?;
    server.run_until(shutdown_signal()).await
}
