//! A media-stream load generator: N concurrent real-time Twilio Media Streams (or
//! Genesys AudioHook sessions, `--protocol audiohook`) against
//! a running `pbx-server`, 20 ms mu-law frames paced by the clock like a PBX sends
//! them, then a check that every frame was stored and the server's own measure of
//! frame-to-durable latency.
//!
//! Each stream opens `/v1/media/twilio`, sends `connected` and `start` (a fresh
//! `callSid`), one `media` frame every 20 ms for `--secs`, then `stop`, and waits for
//! the server to close. An AudioHook session (`/v1/media/audiohook`, a server without
//! `--audiohook-api-key`) sends `open` offering mono PCMU, waits for `opened`, sends one
//! 160-byte binary frame every 20 ms, then `close`, and waits for `closed`. Starts are spread over `--ramp-ms` (2 s), as calls arrive over
//! time; with 0 they all start within one frame (a burst of N call set-ups). Afterwards it reads each call (`GET /v1/calls/{id}`: frames stored, none
//! missing) and the delta of `pbx_stream_frame_durable_seconds` over the run from
//! `/metrics` (frame read off the wire to durable, measured by the server). It also
//! reports how late its own sends were: a generator that cannot keep its pace makes
//! the run meaningless, and says so.
//!
//! ```text
//! cargo run --release -p pbx-server -- --store memory --no-processor &
//! cargo run --release -p pbx-examples --example streams -- --streams 100 --secs 10
//! ```

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn Error + Send + Sync>;

/// Real-time Twilio Media Streams.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Concurrent streams.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Seconds of audio per stream.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Spread the streams' starts over this many milliseconds (calls arrive over time,
    /// not all in one instant); 0 starts them all at once (within one frame).
    #[arg(long, default_value_t = 2000)]
    ramp_ms: u64,
    /// `twilio` (JSON text frames) or `audiohook` (binary frames).
    #[arg(long, default_value = "twilio")]
    protocol: String,
    /// Call id prefix; default a fresh one per run.
    #[arg(long)]
    prefix: Option<String>,
}

const FRAME: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    /// The latest a frame went out after its due time, in microseconds.
    max_lag_us: AtomicU64,
    /// Frames sent more than 20 ms late.
    late: AtomicU64,
}

/// One histogram's cumulative buckets (upper bound, count) and its count, from
/// Prometheus text.
fn histogram(text: &str, name: &str, label: &str) -> (Vec<(f64, u64)>, u64) {
    let mut buckets = Vec::new();
    let mut count = 0;
    for line in text.lines().filter(|l| l.contains(label)) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        if series.starts_with(&format!("{name}_bucket")) {
            let le = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
            buckets.push((le, value as u64));
        } else if series.starts_with(&format!("{name}_count")) {
            count = value as u64;
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (buckets, count)
}

/// Paces sends of 20 ms from `offset`, counting how late each went out.
struct Pacer {
    tick: tokio::time::Interval,
    totals: Arc<Totals>,
}

impl Pacer {
    fn new(offset: Duration, totals: Arc<Totals>) -> Self {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, FRAME);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Self { tick, totals }
    }

    async fn next(&mut self) {
        let due = self.tick.tick().await;
        let lag = due.elapsed();
        self.totals.max_lag_us.fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
        if lag > FRAME {
            self.totals.late.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads until a text message of type `kind`; its `seq`.
async fn wait_for(ws: &mut Socket, kind: &str) -> Result<u64, BoxError> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["type"] == kind {
                return Ok(v["seq"].as_u64().unwrap_or(0));
            }
            if v["type"] == "disconnect" {
                return Err(format!("disconnected: {v}").into());
            }
        }
    }
    Err(format!("closed before {kind}").into())
}

/// An AudioHook session of `frames` mono PCMU frames.
async fn audiohook(
    ws_url: String,
    session: String,
    frames: u64,
    offset: Duration,
    totals: Arc<Totals>,
) -> Result<(), BoxError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    const ORG: &str = "d7934305-0972-4844-938e-9060eef73d05";
    let mut request = ws_url.as_str().into_client_request()?;
    for (name, value) in [
        ("audiohook-organization-id", ORG),
        ("audiohook-session-id", session.as_str()),
        ("audiohook-correlation-id", "30b0e395-84d3-4570-ac13-9a62d8f514c0"),
    ] {
        request.headers_mut().insert(name, HeaderValue::from_str(value)?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("{ws_url}: {e}"))?;
    let message = |kind: &str, seq: u64, serverseq: u64, position: String, parameters: serde_json::Value| {
        let m = serde_json::json!({"version": "2", "type": kind, "seq": seq, "serverseq": serverseq, "id": session,
                                   "position": position, "parameters": parameters});
        Message::text(m.to_string())
    };
    let open = serde_json::json!({
        "organizationId": ORG, "conversationId": "090eaa2f-72fa-480a-83e0-8667ff89c0ec",
        "participant": {"id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0", "ani": "+1-555-555-1234", "aniName": "Load",
                        "dnis": "+1-800-555-6789"},
        "media": [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}], "language": "en-US"
    });
    ws.send(message("open", 1, 0, "PT0S".into(), open)).await?;
    let serverseq = wait_for(&mut ws, "opened").await?;
    let silence = vec![0xffu8; 160];
    let mut pacer = Pacer::new(offset, totals.clone());
    for _ in 0..frames {
        pacer.next().await;
        ws.send(Message::binary(silence.clone())).await?;
        totals.sent.fetch_add(1, Ordering::Relaxed);
    }
    let position = format!("PT{:.2}S", frames as f64 * 0.02);
    ws.send(message("close", 2, serverseq, position, serde_json::json!({"reason": "end"}))).await?;
    wait_for(&mut ws, "closed").await?;
    while let Some(m) = ws.next().await {
        if matches!(m, Ok(Message::Close(_)) | Err(_)) {
            break;
        }
    }
    Ok(())
}

async fn stream(
    ws_url: String,
    call: String,
    frames: u64,
    offset: Duration,
    totals: Arc<Totals>,
) -> Result<(), BoxError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.map_err(|e| format!("{ws_url}: {e}"))?;
    let sid = format!("MZ{call}");
    let text = |v: serde_json::Value| Message::text(v.to_string());
    ws.send(text(serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))).await?;
    ws.send(text(serde_json::json!({
        "event": "start", "sequenceNumber": "1", "streamSid": sid,
        "start": {"accountSid": "ACloadgen", "streamSid": sid, "callSid": call, "tracks": ["inbound"],
                  "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    })))
    .await?;
    // 20 ms of mu-law silence, base64.
    let payload = "/".repeat(213) + "w==";
    let mut pacer = Pacer::new(offset, totals.clone());
    for chunk in 1..=frames {
        pacer.next().await;
        let media = serde_json::json!({
            "event": "media", "sequenceNumber": (chunk + 1).to_string(), "streamSid": sid,
            "media": {"track": "inbound", "chunk": chunk.to_string(), "timestamp": ((chunk - 1) * 20).to_string(),
                      "payload": payload}
        });
        ws.send(text(media)).await?;
        totals.sent.fetch_add(1, Ordering::Relaxed);
    }
    ws.send(text(serde_json::json!({"event": "stop", "sequenceNumber": (frames + 2).to_string(), "streamSid": sid,
                                     "stop": {"accountSid": "ACloadgen", "callSid": call}})))
        .await?;
    // The server closes once every frame is stored and the call completed.
    while let Some(message) = ws.next().await {
        if matches!(message?, Message::Close(_)) {
            break;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.streams == 0 || args.secs == 0 {
        return Err("--streams and --secs must be at least 1".into());
    }
    let audiohook_mode = match args.protocol.as_str() {
        "twilio" => false,
        "audiohook" => true,
        other => return Err(format!("--protocol {other:?}: use twilio or audiohook").into()),
    };
    let base = args.url.trim_end_matches('/').to_owned();
    let ws_url = format!(
        "{}/v1/media/{}",
        base.replacen("http://", "ws://", 1).replacen("https://", "wss://", 1),
        args.protocol
    );
    let prefix = args.prefix.clone().unwrap_or_else(|| format!("{:08x}", rand::random::<u32>()));
    let http = reqwest::Client::new();
    let metrics = |http: reqwest::Client, url: String| async move {
        http.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await
    };
    let name = "pbx_stream_frame_durable_seconds";
    let label = format!("protocol=\"{}\"", args.protocol);
    let label = label.as_str();
    let before = histogram(&metrics(http.clone(), base.clone()).await?, name, label);

    let frames = args.secs * 1000 / FRAME.as_millis() as u64;
    let totals = Arc::new(Totals::default());
    // AudioHook's call id is its session id, a UUID.
    let calls: Vec<String> =
        (0..args.streams)
            .map(|i| {
                if audiohook_mode {
                    format!("{prefix:.8}-0000-4000-8000-{i:012x}")
                } else {
                    format!("CA{prefix}x{i:06}")
                }
            })
            .collect();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, call) in calls.iter().enumerate() {
        let offset = if args.ramp_ms == 0 {
            FRAME * (i % 20) as u32 / 20
        } else {
            Duration::from_millis(args.ramp_ms * i as u64 / args.streams as u64)
        };
        if audiohook_mode {
            tasks.spawn(audiohook(ws_url.clone(), call.clone(), frames, offset, totals.clone()));
        } else {
            tasks.spawn(stream(ws_url.clone(), call.clone(), frames, offset, totals.clone()));
        }
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        if let Err(e) | Ok(Err(e)) = done.map_err(BoxError::from) {
            failed += 1;
            if failed <= 3 {
                eprintln!("a stream failed: {e}");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = totals.sent.load(Ordering::Relaxed);
    println!(
        "streams: {} x {frames} frames of 20 ms; {sent} frames sent in {elapsed:.2} s = {:.0} frames/s; {failed} streams failed",
        args.streams,
        sent as f64 / elapsed
    );
    println!(
        "pace: latest send {:.1} ms after its due time; {} frames more than 20 ms late",
        totals.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
        totals.late.load(Ordering::Relaxed)
    );

    // Every frame stored, none missing.
    let mut stored = 0u64;
    let mut missing = 0u64;
    let reads = futures::stream::iter(calls.iter().map(|call| {
        let (http, url) = (http.clone(), format!("{base}/v1/calls/{call}"));
        async move { http.get(url).send().await?.error_for_status()?.json::<serde_json::Value>().await }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    for read in reads {
        let call = read?;
        let ordering = &call["ordering"];
        stored += ordering["received"].as_u64().unwrap_or(0);
        missing += ordering["highest"].as_u64().unwrap_or(0) - ordering["received"].as_u64().unwrap_or(0);
    }
    println!(
        "stored: {stored} of {sent} frames ({} lost), {missing} missing inside calls",
        sent.saturating_sub(stored)
    );

    let after = histogram(&metrics(http, base).await?, name, label);
    let count = after.1 - before.1;
    let within = |le: f64| {
        let at = |h: &(Vec<(f64, u64)>, u64)| h.0.iter().find(|(b, _)| *b >= le).map_or(0, |(_, n)| *n);
        at(&after) - at(&before)
    };
    let p99 = after
        .0
        .iter()
        .map(|(le, _)| *le)
        .find(|le| count > 0 && within(*le) as f64 >= 0.99 * count as f64)
        .unwrap_or(f64::NAN);
    println!(
        "durable: {count} frames; {:.2} % within 100 ms, {:.2} % within 50 ms; p99 <= {} ms (the histogram's bucket)",
        100.0 * within(0.1) as f64 / count.max(1) as f64,
        100.0 * within(0.05) as f64 / count.max(1) as f64,
        p99 * 1000.0
    );
    Ok(())
}
