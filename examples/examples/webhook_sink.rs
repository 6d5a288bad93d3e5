//! A webhook receiver for benchmarks: answers every POST 204 at once, counts distinct
//! `webhook-id`s, and when it has seen `--expect` of them prints how fast they came
//! (from the first request to the last) and exits. It does not verify signatures (the
//! tests do that with an independent implementation); it measures the sender.
//!
//! ```sh
//! cargo run --release -p pbx-examples --example webhook_sink -- --bind 127.0.0.1:9000 --expect 10000
//! ```

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: std::net::SocketAddr,
    /// Distinct messages to wait for.
    #[arg(long)]
    expect: usize,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    requests: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.bind).await?;
    println!("listening {}", listener.local_addr()?.port());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let done_tx = Arc::new(done_tx);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = done.wait_for(|d| *d) => break,
        };
        let (seen, done_tx, expect) = (seen.clone(), done_tx.clone(), args.expect);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (seen, done_tx) = (seen.clone(), done_tx.clone());
                async move {
                    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    // Read the whole body, as a real receiver would.
                    let _ = req.into_body().collect().await;
                    let now = Instant::now();
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.requests += 1;
                    s.first.get_or_insert(now);
                    s.last = Some(now);
                    if let Some(id) = id {
                        s.ids.insert(id);
                    }
                    if s.ids.len() >= expect {
                        let _ = done_tx.send(true);
                    }
                    drop(s);
                    let mut resp = Response::new(Empty::<Bytes>::new());
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let secs = match (s.first, s.last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "received {} messages ({} requests) in {secs:.2} s = {:.0} messages/s",
        s.ids.len(),
        s.requests,
        s.ids.len() as f64 / secs.max(f64::EPSILON)
    );
    Ok(())
}
