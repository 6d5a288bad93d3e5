//! `GET /metrics`: the Prometheus text format, checked by `promtool` where installed
//! (tools/test.sh installs it), after real traffic; guarded by the API keys on the API
//! port and open on `--metrics-bind`.

use std::sync::Arc;

use pbx_core::ai::SimulatedAi;
use pbx_server::{Server, Settings};
use pbx_store_memory::MemoryCallStore;
use serde_json::json;

async fn start(args: &[&str]) -> (String, Option<String>, tokio::sync::oneshot::Sender<()>) {
    let mut all = vec!["pbx-server", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0", "--idle-timeout", "0"];
    all.extend_from_slice(args);
    let settings = Settings::parse_from_args(all).expect("settings");
    let server = Server::build_with(settings, Arc::new(MemoryCallStore::new()), Arc::new(SimulatedAi::reliable()))
        .await
        .expect("server");
    let api = format!("http://{}", server.local_addr());
    let metrics = server.metrics_addr().map(|a| format!("http://{a}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    (api, metrics, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_traffic_in_the_prometheus_format() {
    let (api, metrics, _stop) = start(&["--api-key", "admin:adm1n", "--api-key", "ingest:ing3st"]).await;
    let http = reqwest::Client::new();
    for (seq, data) in [(1, "audio_chunk_1"), (3, "audio_chunk_3"), (2, "audio_chunk_2"), (2, "audio_chunk_2")] {
        let resp = http
            .post(format!("{api}/ingest/metrics-1"))
            .bearer_auth("ing3st")
            .json(&json!({"sequence":seq,"data":data,"timestamp":0.0}))
            .send()
            .await
            .expect("ingest");
        assert_eq!(resp.status().as_u16(), 200);
    }
    let refused = http
        .post(format!("{api}/ingest/metrics-1"))
        .bearer_auth("ing3st")
        .json(&json!({"sequence":0,"data":"x","timestamp":0.0}))
        .send()
        .await
        .expect("ingest");
    assert_eq!(refused.status().as_u16(), 400);

    // On the API port, the keys guard it.
    assert_eq!(http.get(format!("{api}/metrics")).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http.get(format!("{api}/metrics")).bearer_auth("ing3st").send().await.unwrap().status().as_u16(), 403);
    let guarded = http.get(format!("{api}/metrics")).bearer_auth("adm1n").send().await.unwrap();
    assert_eq!(guarded.status().as_u16(), 200);

    // On --metrics-bind it is open.
    let resp = http.get(format!("{}/metrics", metrics.expect("metrics listener"))).send().await.expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.expect("body");
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    };
    // Counters are process-wide and other tests in this binary ingest too: at least ours.
    assert!(value(r#"pbx_packets_total{source="http",outcome="stored"}"#) >= 2.0);
    assert!(value(r#"pbx_packets_total{source="http",outcome="late"}"#) >= 1.0);
    assert!(value(r#"pbx_packets_total{source="http",outcome="duplicate"}"#) >= 1.0);
    assert!(value(r#"pbx_packets_total{source="http",outcome="refused"}"#) >= 1.0);
    assert!(value(r#"pbx_ingest_duration_seconds_count{source="http"}"#) >= 4.0);
    assert_eq!(value(r#"pbx_calls{state="IN_PROGRESS"}"#), 1.0, "this server's store holds one call");
    assert_eq!(value(r#"pbx_build_info{version=""#), 1.0);
    assert!(!text.contains("metrics-1"), "never a call id in a label");

    // promtool, Prometheus's own linter, finds nothing to complain about.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(_) => {
            eprintln!("promtool is not installed (Debian package prometheus; tools/test.sh installs it): lint skipped")
        }
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
        }
    }
}
