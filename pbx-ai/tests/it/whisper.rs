//! End to end against the real local Whisper server (`tools/whisper-server`), gated on
//! `PBX_WHISPER_TESTS=1`: a recorded Asterisk prompt, decoded to the PCM pbx assembles,
//! through `OpenAiTranscriber`, to a transcript.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pbx_ai::{OpenAiTranscriber, OpenAiTranscriberConfig};
use pbx_core::ai::Transcriber;
use pbx_core::media::PcmAudio;

const READY: &str = "whisper-server listening on ";

/// The server process, ended when the test ends however it ends.
struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `target/test-audio/<name>`, made by `tools/test-audio/prepare.sh` when missing.
fn fixture(name: &str) -> PathBuf {
    let dir = repo().join("target/test-audio");
    let file = dir.join(name);
    if !file.exists() {
        let status = Command::new(repo().join("tools/test-audio/prepare.sh"))
            .env("OUT", &dir)
            .stdout(Stdio::null())
            .status()
            .expect("run tools/test-audio/prepare.sh");
        assert!(status.success(), "tools/test-audio/prepare.sh failed");
    }
    file
}

/// Starts `tools/whisper-server/run.sh --port 0` and waits for its ready line.
fn start_server() -> Server {
    let mut child = Command::new(repo().join("tools/whisper-server/run.sh"))
        .args(["--port", "0", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tools/whisper-server/run.sh");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads (and keeps draining) the server's stdout, handing each line over.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server { child, base_url: String::new() };
    // The first run creates the venv (minutes); later ones load the model in ~1 s.
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix(READY) {
                    server.base_url = url.trim().to_owned();
                    return server;
                }
                eprintln!("whisper-server: {line}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("whisper-server was not ready in 15 minutes"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.wait().ok();
                panic!("whisper-server exited before it was ready: {status:?}")
            }
        }
    }
}

fn pcm(wav: crate::Wav) -> PcmAudio {
    assert_eq!((wav.sample_rate, wav.channels), (8000, 1), "the fixture is 8 kHz mono PCM16");
    PcmAudio { sample_rate: 8000, channels: 1, frame_samples: 160, samples: wav.samples, stats: Default::default() }
}

#[tokio::test]
async fn transcribes_a_real_prompt_with_the_local_whisper() {
    if std::env::var("PBX_WHISPER_TESTS").as_deref() != Ok("1") {
        println!("skipped: set PBX_WHISPER_TESTS=1 to run against tools/whisper-server");
        return;
    }
    let wav = std::fs::read(fixture("allison-busy.wav")).expect("read the fixture");
    let audio = pcm(crate::read_wav(&wav));
    let duration = audio.duration().as_secs_f64();
    let server = start_server();
    let transcriber = OpenAiTranscriber::new(OpenAiTranscriberConfig {
        base_url: server.base_url.clone(),
        model: "whisper-1".into(),
        language: Some("en".into()),
        timeout: Duration::from_secs(120),
        ..Default::default()
    })
    .unwrap();

    let started = Instant::now();
    let transcript = transcriber.transcribe(&crate::request(audio)).await.expect("transcribed");
    let took = started.elapsed();
    println!("whisper transcript ({duration:.2} s of audio, {took:?}): {:?}", transcript.text);
    for s in &transcript.segments {
        println!("  {:.2} .. {:.2} {:?}", s.start, s.end, s.text);
    }

    let text = transcript.text.to_lowercase();
    assert!(text.contains("circuits") && text.contains("busy"), "{:?}", transcript.text);
    assert!(!transcript.segments.is_empty());
    assert!(transcript.segments.iter().all(|s| s.start >= 0.0 && s.start <= s.end && s.end <= duration));
    assert!(transcript.segments.iter().all(|s| s.channel.is_none()));
}
