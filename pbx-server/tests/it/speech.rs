//! End to end with a real speech model: the `pbx-server` binary with `--ai openai`
//! pointed at the local Whisper server (`tools/whisper-server`), real recorded speech
//! streamed as 20 ms mu-law frames through `POST /ingest` with a late, a resent and a
//! missing frame. Runs when `PBX_WHISPER_TESTS=1` (tools/test.sh sets it and prepares
//! the model's venv and the audio).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::spawned::Spawned;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn enabled() -> bool {
    if std::env::var("PBX_WHISPER_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set PBX_WHISPER_TESTS=1 (tools/test.sh does) to run the real speech model tests");
    false
}

/// The test audio (raw 8 kHz mu-law), made by tools/test-audio/prepare.sh if missing.
fn audio(name: &str) -> Vec<u8> {
    let path = repo().join("target/test-audio").join(name);
    if !path.exists() {
        let status =
            std::process::Command::new(repo().join("tools/test-audio/prepare.sh")).status().expect("prepare.sh");
        assert!(status.success(), "tools/test-audio/prepare.sh failed");
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The local Whisper server on a free port; its base URL once it says it is ready.
async fn whisper() -> (Child, String) {
    let mut child = Command::new(repo().join("tools/whisper-server/run.sh"))
        .args(["--port", "0", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start tools/whisper-server/run.sh");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines.next_line().await.expect("read").expect("whisper-server exited before it was ready");
        if let Some(url) = line.strip_prefix("whisper-server listening on ") {
            break url.trim().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// Streams `ulaw` as 160-byte frames: frame `late` is sent after the one following it,
/// frame `resent` twice, frame `missing` never. The number of frame slots.
async fn stream(server: &Spawned, call: &str, ulaw: &[u8], late: u64, resent: u64, missing: u64) -> u64 {
    let frames: Vec<&[u8]> = ulaw.chunks(160).collect();
    let mut order: Vec<u64> = (1..=frames.len() as u64).filter(|&s| s != missing).collect();
    let at = order.iter().position(|&s| s == late).expect("late frame");
    order.swap(at, at + 1);
    let at = order.iter().position(|&s| s == resent).expect("resent frame");
    order.insert(at + 1, resent);
    for seq in order {
        let data = BASE64.encode(frames[seq as usize - 1]);
        let (status, ack) = server
            .post(&format!("/ingest/{call}"), Some(json!({"sequence":seq,"data":data,"timestamp":seq as f64 * 0.02})))
            .await;
        assert_eq!(status, 200, "frame {seq}: {ack}");
    }
    frames.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_speech_is_transcribed_and_rated() {
    if !enabled() {
        return;
    }
    let (_whisper, url) = whisper().await;
    let server = Spawned::start_with(&[
        "--store",
        "memory",
        "--ai",
        "openai",
        "--ai-base-url",
        &url,
        "--ai-model",
        "whisper-1",
        "--ai-language",
        "en",
        "--retry-initial",
        "200ms",
    ])
    .await;

    let busy = audio("allison-busy.ulaw");
    let angry = audio("angry.ulaw");
    let busy_frames = stream(&server, "busy-1", &busy, 10, 5, 20).await;
    let angry_frames = stream(&server, "angry-1", &angry, 30, 31, 50).await;

    for (call, frames) in [("busy-1", busy_frames), ("angry-1", angry_frames)] {
        let mut feed = server.events(call).await;
        let started = Instant::now();
        let (status, _) = server.post(&format!("/v1/calls/{call}/complete"), None).await;
        assert_eq!(status, 200);
        feed.wait_for_state("ARCHIVED").await;
        eprintln!("{call}: ARCHIVED {:.2} s after hang-up", started.elapsed().as_secs_f64());
        let view: Value = server.get(&format!("/v1/calls/{call}")).await;
        eprintln!("{call}: transcript {:?}, sentiment {}", view["transcript"], view["sentiment"]);
        assert_eq!(view["ordering"]["missing"], 1, "{view}");
        assert_eq!(view["ordering"]["duplicates"], 1, "{view}");
        assert_eq!(view["ordering"]["out_of_order"], 1, "{view}");
        assert_eq!(view["audio"]["frames"].as_u64(), Some(frames), "{view}");
        assert_eq!(view["audio"]["gaps"], 1, "{view}");
        assert!(!view["segments"].as_array().expect("segments").is_empty(), "timed segments: {view}");
        let resp = server.http.get(format!("{}/v1/calls/{call}/recording.wav", server.url)).send().await.expect("wav");
        assert_eq!(resp.status().as_u16(), 200);
        let wav = resp.bytes().await.expect("wav body");
        assert_eq!(wav.len() as u64, 44 + frames * 160 * 2, "one 20 ms frame per slot, the missing one as silence");
    }
    let busy: Value = server.get("/v1/calls/busy-1").await;
    let text = busy["transcript"].as_str().expect("transcript").to_lowercase();
    assert!(text.contains("circuits") && text.contains("busy"), "{text}");
    let angry: Value = server.get("/v1/calls/angry-1").await;
    let text = angry["transcript"].as_str().expect("transcript").to_lowercase();
    assert!(text.contains("terrible") || text.contains("furious"), "{text}");
    assert_eq!(angry["sentiment"]["label"], "NEGATIVE", "{angry}");
}
