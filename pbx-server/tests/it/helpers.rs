//! Building the app on the memory store and talking to it.

use std::sync::Arc;
use std::time::Duration;

use pbx_core::ai::AiClient;
use pbx_core::gateway::{Feed, FeedItem};
use pbx_core::gateway::{Gateway, GatewayConfig, Processor, ProcessorConfig, ProcessorHandle};
use pbx_core::retry::{Jitter, RetryPolicy};
use pbx_core::store::CallStore;
use pbx_core::{CallId, CallState};
use pbx_server::auth::{ApiKey, ApiKeys};
use pbx_server::{App, AppOptions, build_app};
use pbx_store_memory::MemoryCallStore;
use poem::http::{Method, StatusCode};
use poem::test::TestClient;
use serde_json::Value;

/// The seed's packet, byte for byte.
pub(crate) const SEED_PACKET: &str = r#"{"sequence":1,"data":"audio_chunk_1","timestamp":123.45}"#;

/// An app over a fresh memory store.
pub(crate) struct TestApp {
    pub(crate) client: TestClient<App>,
    pub(crate) gateway: Gateway,
    /// Held for the test's length (dropping it would leave the processor running anyway).
    _processor: Option<ProcessorHandle>,
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<String>,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The `error` code of an error answer; panics unless the body is `{"error","message"}`.
    pub(crate) fn error_code(&self) -> String {
        let body = self.json();
        assert!(body["message"].is_string(), "error answer without message: {}", self.text);
        body["error"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.text)).to_owned()
    }
}

impl TestApp {
    /// Open API, default options, no processor.
    pub(crate) fn new() -> Self {
        Self::with_options(AppOptions::default(), GatewayConfig::default())
    }

    /// Open API over `store`.
    pub(crate) fn with_store(store: Arc<dyn CallStore>) -> Self {
        Self::with(store, AppOptions::default(), GatewayConfig::default())
    }

    pub(crate) fn with_options(options: AppOptions, config: GatewayConfig) -> Self {
        Self::with(Arc::new(MemoryCallStore::new()), options, config)
    }

    fn with(store: Arc<dyn CallStore>, options: AppOptions, config: GatewayConfig) -> Self {
        init_test_log();
        let gateway = Gateway::new(store, config).expect("gateway");
        let client = TestClient::new(build_app(gateway.clone(), options));
        Self { client, gateway, _processor: None }
    }

    /// With API keys `role:key`.
    pub(crate) fn with_keys(keys: &[&str]) -> Self {
        let keys = ApiKeys::new(keys.iter().map(|k| k.parse::<ApiKey>().expect("key")));
        Self::with_options(AppOptions { keys, ..AppOptions::default() }, GatewayConfig::default())
    }

    /// With a processor running `ai` under `retry`.
    pub(crate) fn with_ai(ai: Arc<dyn AiClient>, retry: RetryPolicy) -> Self {
        init_test_log();
        let gateway = Gateway::new(Arc::new(MemoryCallStore::new()), GatewayConfig::default()).expect("gateway");
        let config = ProcessorConfig { retry, seed: Some(7), idle_timeout: None, ..ProcessorConfig::default() };
        let processor = Processor::new(&gateway, ai, config).expect("processor config");
        let options = AppOptions { processor: Some(processor.clone()), ..AppOptions::default() };
        let client = TestClient::new(build_app(gateway.clone(), options));
        Self { client, gateway, _processor: Some(processor.spawn()) }
    }

    pub(crate) async fn request(&self, method: Method, path: &str, body: Option<&str>, key: Option<&str>) -> Reply {
        let mut req = self.client.request(method, path);
        if let Some(body) = body {
            req = req.content_type("application/json").body(body.to_owned());
        }
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let resp = req.send().await;
        let status = resp.0.status();
        let retry_after = resp.0.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let text = resp.0.into_body().into_string().await.expect("body");
        Reply { status, retry_after, text }
    }

    pub(crate) async fn post(&self, path: &str, body: &str) -> Reply {
        self.request(Method::POST, path, Some(body), None).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, None).await
    }

    /// Posts packet `seq` of `call` with data `d<seq>` to the seed endpoint.
    pub(crate) async fn ingest(&self, call: &str, seq: u64) -> Reply {
        self.post(&format!("/ingest/{call}"), &packet(seq, &format!("d{seq}"))).await
    }

    pub(crate) async fn complete(&self, call: &str) -> Reply {
        self.request(Method::POST, &format!("/v1/calls/{call}/complete"), None, None).await
    }

    pub(crate) async fn call(&self, call: &str) -> Value {
        let reply = self.get(&format!("/v1/calls/{call}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()
    }
}

/// Prints the server's logs when `TEST_LOG` is set (once per test binary).
fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_some() {
        ONCE.call_once(|| pbx_server::init_tracing(pbx_server::LogFormat::Text));
    }
}

/// A packet body.
pub(crate) fn packet(seq: u64, data: &str) -> String {
    serde_json::json!({"sequence": seq, "data": data, "timestamp": seq as f64 * 0.02}).to_string()
}

pub(crate) fn id(s: &str) -> CallId {
    CallId::new(s).expect("call id")
}

/// A retry policy with (almost) no waiting.
pub(crate) fn fast_retry(maximum_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(1),
        backoff_coefficient: 1.0,
        maximum_interval: Duration::from_millis(1),
        maximum_attempts,
        jitter: Jitter::None,
    }
}

/// Waits for `call` to reach ARCHIVED or FAILED on the event feed (open it before
/// the action that leads there). A hang guard, not a timing assertion.
pub(crate) async fn wait_terminal(events: &mut Feed, call: &CallId) -> CallState {
    let wait = async {
        loop {
            if let FeedItem::Event(e) = events.next().await.expect("feed")
                && &e.call_id == call
                && let Some(state) = e.body.new_state().filter(|s| s.is_terminal())
            {
                return state;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait).await.expect("call reached no terminal state")
}
