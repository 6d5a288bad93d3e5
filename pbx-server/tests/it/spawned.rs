//! A real `pbx-server` process for end-to-end tests, and its event feed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `pbx-server` process.
pub(crate) struct Spawned {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
}

/// Runs the binary on the memory store with `args`, which it must refuse to start
/// with; its stderr.
pub(crate) fn refused(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pbx-server"))
        .args(["--store", "memory", "--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("PBX_API_KEYS")
        .output()
        .expect("run pbx-server");
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Spawned {
    /// On PostgreSQL at `database_url`, with a reliable simulated AI.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) async fn start(database_url: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--database-url", database_url, "--ai-failure-rate", "0"];
        args.extend_from_slice(extra);
        Self::start_with(&args).await
    }

    /// With these settings (after a loopback bind on port 0, JSON logs, a 200 ms poll
    /// and no idle hang-up).
    pub(crate) async fn start_with(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pbx-server"))
            .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
            .args(["--poll-interval", "200ms", "--idle-timeout", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("PBX_API_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pbx-server");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next_line().await.unwrap().expect("pbx-server exited before listening");
            let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
            if let Some(addr) = log["addr"].as_str() {
                break addr.to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    pub(crate) async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(format!("{}{path}", self.url)).send().await.expect("request");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// Opens the event feed of `call`.
    pub(crate) async fn events(&self, call: &str) -> EventFeed {
        let resp = self.http.get(format!("{}/v1/events?call_id={call}", self.url)).send().await.expect("events");
        assert!(resp.status().is_success());
        EventFeed { resp, buffer: String::new() }
    }
}

/// A Server-Sent Events reader.
pub(crate) struct EventFeed {
    resp: reqwest::Response,
    buffer: String,
}

impl EventFeed {
    /// Reads events until one is a state change to `state`.
    pub(crate) async fn wait_for_state(&mut self, state: &str) {
        let wait = async {
            loop {
                while let Some(end) = self.buffer.find('\n') {
                    let line: String = self.buffer.drain(..=end).collect();
                    if let Some(data) = line.trim_end().strip_prefix("data:") {
                        let event: Value = serde_json::from_str(data.trim()).expect("event JSON");
                        if event["type"] == "state_changed" && event["to"] == state {
                            return;
                        }
                    }
                }
                let chunk = self.resp.chunk().await.expect("feed").expect("feed ended");
                self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait).await.unwrap_or_else(|_| panic!("no {state} on the feed"));
    }
}
