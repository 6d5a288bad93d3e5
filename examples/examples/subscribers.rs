//! Event-feed subscribers for a running `pbx-server`: the supervisor side of the
//! ingest benchmark.
//!
//! Opens N WebSockets on `/v1/events/ws` (all events, or `--type` ones), reads every
//! message as it comes, and prints once a second how many messages arrived, how many
//! sockets are open and how many `lagged` / `resync` messages the server sent. At the
//! end (after `--secs`, or on Ctrl-C) it prints, per type, the fewest and the most
//! messages one subscriber received: equal numbers mean every subscriber saw every
//! event. Run it beside `loadgen` to measure what subscribers cost ingest.
//!
//! ```text
//! cargo run --release -p pbx-server -- --store memory --no-processor &
//! cargo run --release -p pbx-examples --example subscribers -- --subscribers 100 --secs 60 &
//! cargo run --release -p pbx-examples --example loadgen -- --calls 10000 --packets 5
//! ```
//!
//! With API keys on, pass a key with the `supervisor` role in `--api-key`
//! (`PBX_SUBSCRIBERS_API_KEY`); it goes in the `Authorization` header of the upgrade.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

type BoxError = Box<dyn Error + Send + Sync>;

/// WebSocket subscribers of pbx-server's event feed.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the server (`http://` or `ws://`).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Concurrent subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Only these event types (repeatable); all events by default.
    #[arg(long = "type")]
    types: Vec<String>,
    /// Stop after this many seconds; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    secs: u64,
    /// API key with the supervisor role, sent as `Authorization: Bearer`.
    #[arg(long, env = "PBX_SUBSCRIBERS_API_KEY")]
    api_key: Option<String>,
}

/// The top-level `type` of a feed message. The server writes it as a plain string
/// without escapes, and the subscribers share the machine with the server they
/// measure, so this looks for the first `"type":"` (the server writes `type` before
/// the payload) instead of parsing the whole message.
fn message_type(text: &str) -> Option<&str> {
    let start = text.find("\"type\":\"")? + 8;
    let len = text[start..].find(['"', '\\'])?;
    if text.as_bytes()[start + len] == b'"' {
        return Some(&text[start..start + len]);
    }
    None
}

/// What all subscribers saw so far.
#[derive(Debug, Default)]
struct Totals {
    messages: AtomicU64,
    lagged: AtomicU64,
    resync: AtomicU64,
    open: AtomicUsize,
    closed: AtomicUsize,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.subscribers == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    let base = args.url.trim_end_matches('/').replacen("http://", "ws://", 1).replacen("https://", "wss://", 1);
    let mut url = format!("{base}/v1/events/ws");
    for (i, kind) in args.types.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str("type=");
        url.push_str(kind);
    }
    let totals = Arc::new(Totals::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for _ in 0..args.subscribers {
        let mut request = url.as_str().into_client_request()?;
        if let Some(key) = &args.api_key {
            request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {key}"))?);
        }
        // Connect one by one so that a refused upgrade (a wrong key, a wrong URL)
        // stops the run with the server's answer instead of N copies of it.
        let (socket, _) =
            tokio_tungstenite::connect_async(request).await.map_err(|e| format!("connecting to {url}: {e}"))?;
        totals.open.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(subscribe(socket, totals.clone(), stop_rx.clone()));
    }
    eprintln!("{} subscribers on {url}", args.subscribers);

    let started = Instant::now();
    let deadline = (args.secs > 0).then(|| started + Duration::from_secs(args.secs));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let messages = totals.messages.load(Ordering::Relaxed);
                println!(
                    "{:>5.0} s  {:>9} msg/s  open {}  lagged {}  resync {}",
                    started.elapsed().as_secs_f64(),
                    messages - last,
                    totals.open.load(Ordering::Relaxed) - totals.closed.load(Ordering::Relaxed),
                    totals.lagged.load(Ordering::Relaxed),
                    totals.resync.load(Ordering::Relaxed),
                );
                last = messages;
                if deadline.is_some_and(|d| Instant::now() >= d) || totals.closed.load(Ordering::Relaxed) == args.subscribers {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    stop.send_replace(true);
    let mut per_type: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let seen = result?;
        for (kind, n) in seen {
            let entry = per_type.entry(kind).or_insert((u64::MAX, 0));
            entry.0 = entry.0.min(n);
            entry.1 = entry.1.max(n);
        }
    }
    println!(
        "total {} messages in {:.1} s; lagged {}, resync {}",
        totals.messages.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        totals.lagged.load(Ordering::Relaxed),
        totals.resync.load(Ordering::Relaxed),
    );
    println!("per type: fewest / most per subscriber");
    for (kind, (fewest, most)) in per_type {
        println!("  {kind:<20} {fewest:>9} / {most}");
    }
    Ok(())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads one socket until it closes or `stop` turns true; answers pings (tungstenite
/// does it on read). Returns the messages it saw by type.
async fn subscribe(mut socket: Socket, totals: Arc<Totals>, mut stop: watch::Receiver<bool>) -> BTreeMap<String, u64> {
    let mut seen = BTreeMap::new();
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(message) = message else { break };
        let Ok(Message::Text(text)) = message else {
            if message.is_err() {
                break;
            }
            continue;
        };
        totals.messages.fetch_add(1, Ordering::Relaxed);
        let kind = message_type(&text).unwrap_or("(not a feed message)");
        match kind {
            "lagged" => totals.lagged.fetch_add(1, Ordering::Relaxed),
            "resync" => totals.resync.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        match seen.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                seen.insert(kind.to_owned(), 1);
            }
        }
    }
    totals.closed.fetch_add(1, Ordering::Relaxed);
    seen
}
