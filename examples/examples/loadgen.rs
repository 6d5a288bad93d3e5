//! Load generator for a running `pbx-server`.
//!
//! N concurrent calls stream M packets each over keep-alive connections, as fast as
//! possible or paced like real audio (one packet per 20 ms per call), optionally
//! shuffled and with duplicates. It reports packets/s, latency percentiles and status
//! counts, then verifies through the API that every acknowledged packet is stored. In
//! the same run it measures the server's `/healthz` throughput over the same number of
//! connections and prints the ratio. With `--hangup` it then hangs up every call and
//! measures the AI pipeline until every call is ARCHIVED or FAILED.
//!
//! ```text
//! cargo run --release -p pbx-server &
//! cargo run --release -p pbx-examples --example loadgen -- --calls 64 --packets 2000
//! cargo run --release -p pbx-examples --example loadgen -- --batch 100
//! cargo run --release -p pbx-examples --example loadgen -- --calls 1000 --packets 250 --pace-ms 20
//! cargo run --release -p pbx-examples --example loadgen -- --calls 10000 --packets 5 --hangup
//! ```
//!
//! Latency is measured from when a request was due to be sent (paced mode) or sent
//! (fast mode) until its answer, so a stalled server shows up in the percentiles
//! instead of silently slowing the offered load (no coordinated omission).

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Uri};
use hyper_util::rt::TokioIo;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::sync::Mutex;
use tokio::task::JoinSet;

type BoxError = Box<dyn Error + Send + Sync>;

/// A measured request that takes longer is counted as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Load generator for pbx-server.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 64)]
    calls: usize,
    /// Packets per call.
    #[arg(long, default_value_t = 1000)]
    packets: u64,
    /// HTTP connections (requests in flight at most).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Packets per request through the batch endpoint; 0 sends one packet per request
    /// to the seed's `POST /ingest/{call_id}`.
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Pace each call like real audio: one packet (or batch) every this many ms; 0 sends
    /// as fast as possible.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Probability that a packet swaps places with the next one (out of order).
    #[arg(long, default_value_t = 0.0)]
    shuffle: f64,
    /// Probability that a packet is sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Bytes of data per packet (base64 of 20 ms of 8 kHz G.711 is 216).
    #[arg(long, default_value_t = 216)]
    data_bytes: usize,
    /// Seconds of `/healthz` load for the baseline, run before and after the ingest; 0
    /// skips it.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
    /// After ingest, hang up every call and time the AI pipeline.
    #[arg(long)]
    hangup: bool,
    /// Give up waiting for the AI pipeline after this many seconds.
    #[arg(long, default_value_t = 600)]
    hangup_timeout_secs: u64,
    /// API key sent as `Authorization: Bearer` (a key with the admin role, or ingest +
    /// supervisor).
    #[arg(long, env = "PBX_LOADGEN_API_KEY")]
    api_key: Option<String>,
    /// Call id prefix; default a fresh one per run, so runs never collide.
    #[arg(long)]
    prefix: Option<String>,
    /// Seed of the shuffle and duplicate choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Prints one line of a microsecond histogram's quantiles, in milliseconds.
fn print_quantiles(label: &str, histogram: &Histogram<u64>) {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {label}: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
}

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    elapsed: Duration,
    requests: u64,
    packets: u64,
    latency_us: Histogram<u64>,
    /// Paced mode: how late the generator itself sent each request after it was due
    /// (time it spent waiting for a connection slot or for a CPU, not the server's).
    late_us: Histogram<u64>,
    /// Paced mode: from sending each request to its answer (the server's part and the
    /// network's, without the generator's lateness).
    service_us: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    /// Scratch for the status key, so recording a known status allocates nothing.
    key: String,
}

impl Phase {
    fn new() -> Self {
        Self {
            elapsed: Duration::ZERO,
            requests: 0,
            packets: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            late_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            service_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            key: String::new(),
        }
    }

    fn merge(&mut self, other: &Phase) {
        self.requests += other.requests;
        self.packets += other.packets;
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.late_us.add(&other.late_us).expect("same bounds");
        self.service_us.add(&other.service_us).expect("same bounds");
        for (k, v) in &other.statuses {
            *self.statuses.entry(k.clone()).or_default() += v;
        }
    }

    /// Records one answer; its status is counted under `"{code} {detail}"` (or `detail`
    /// alone without a code).
    fn record(&mut self, latency: Duration, code: Option<u16>, detail: &str, packets: u64) {
        use std::fmt::Write;
        self.requests += 1;
        self.packets += packets;
        self.latency_us.saturating_record(latency.as_micros().max(1) as u64);
        self.key.clear();
        match code {
            Some(code) if detail.is_empty() => write!(self.key, "{code}"),
            Some(code) => write!(self.key, "{code} {detail}"),
            None => write!(self.key, "{detail}"),
        }
        .expect("writing to a String");
        match self.statuses.get_mut(self.key.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.statuses.insert(self.key.clone(), 1);
            }
        }
    }

    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: {} requests, {} packets in {:.2} s = {:.0} requests/s, {:.0} packets/s",
            self.requests,
            self.packets,
            self.elapsed.as_secs_f64(),
            self.per_sec(self.requests),
            self.per_sec(self.packets)
        );
        print_quantiles("latency ms", &self.latency_us);
        if !self.late_us.is_empty() {
            print_quantiles("of which sent late by the generator, ms", &self.late_us);
            print_quantiles("answered after sending, ms", &self.service_us);
        }
        let statuses: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("  statuses: {}", statuses.join(", "));
    }
}

/// The packets one call sends, in sending order (after shuffling and duplicates).
fn plan(args: &Args, call_index: usize) -> Vec<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_add(call_index as u64));
    let mut seqs: Vec<u64> = (1..=args.packets).collect();
    let mut i = 0;
    while i + 1 < seqs.len() {
        if args.shuffle > 0.0 && rng.random_bool(args.shuffle.min(1.0)) {
            seqs.swap(i, i + 1);
            i += 1;
        }
        i += 1;
    }
    if args.duplicates > 0.0 {
        let mut out = Vec::with_capacity(seqs.len() * 2);
        for s in seqs {
            out.push(s);
            if rng.random_bool(args.duplicates.min(1.0)) {
                out.push(s);
            }
        }
        seqs = out;
    }
    seqs
}

fn data_for(call: &str, seq: u64, bytes: usize) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call.bytes().chain(seq.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let data: Vec<u8> = (0..bytes)
        .map(|i| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            B64[((h >> (i % 8)) & 63) as usize]
        })
        .collect();
    String::from_utf8(data).expect("base64 alphabet is ASCII")
}

/// Appends one packet's JSON object to `out`. Written by hand rather than through
/// `serde_json::Value`: the generator shares the machine with the server it measures,
/// so every microsecond it spends per request is one the server does not get. The
/// data is base64, which needs no JSON escaping.
fn push_packet_json(out: &mut String, call: &str, seq: u64, bytes: usize) {
    use std::fmt::Write;
    let timestamp = Value::from(seq as f64 * 0.02);
    write!(out, r#"{{"sequence":{seq},"data":"{}","timestamp":{timestamp}}}"#, data_for(call, seq, bytes))
        .expect("writing to a String");
}

/// The request body for `seqs` of `call`: one packet object, or an array of them.
fn request_body(call: &str, seqs: &[u64], bytes: usize, batch: bool) -> String {
    let mut out = String::with_capacity(seqs.len() * (bytes + 64) + 2);
    if !batch {
        push_packet_json(&mut out, call, seqs[0], bytes);
        return out;
    }
    out.push('[');
    for (i, &seq) in seqs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_packet_json(&mut out, call, seq, bytes);
    }
    out.push(']');
    out
}

/// The fields of a single-packet answer the generator reads.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<std::borrow::Cow<'a, str>>,
}

struct Client {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.url));
        match &self.api_key {
            Some(key) => r.bearer_auth(key),
            None => r,
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, BoxError> {
        let response = self.request(reqwest::Method::GET, path).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status} {body}").into());
        }
        Ok(body)
    }
}

/// Where the measured requests go, resolved once.
struct Target {
    /// `host:port` to connect to.
    addr: String,
    host: HeaderValue,
    auth: Option<HeaderValue>,
}

impl Target {
    fn parse(url: &str, api_key: Option<&str>) -> Result<Self, BoxError> {
        let uri: Uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url {url}: the load generator speaks plain http:// only").into());
        }
        let authority = uri.authority().ok_or_else(|| format!("--url {url}: no host"))?;
        let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let auth = api_key.map(|key| HeaderValue::try_from(format!("Bearer {key}"))).transpose()?;
        Ok(Self { addr, host: HeaderValue::try_from(authority.as_str())?, auth })
    }
}

/// Why a measured request got no answer.
enum Failure {
    Connect,
    Timeout,
}

async fn connect(target: &Target) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
    let stream = tokio::net::TcpStream::connect(&target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One keep-alive HTTP/1.1 connection for the measured requests (ingest and the
/// `/healthz` baseline), driven by hyper directly. Through reqwest each request also
/// paid a pool lookup, URL conversions and redirect handling: the generator used as
/// much CPU as the server it measures. It reconnects after an error.
struct Conn {
    target: Arc<Target>,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(target: Arc<Target>) -> Self {
        Self { target, sender: None }
    }

    /// Sends one request with a JSON body (or none) and reads the whole answer.
    async fn request(&mut self, method: Method, path: &Uri, body: Option<String>) -> Result<(u16, Bytes), Failure> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await;
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            // The connection may be mid-answer: start afresh.
            Ok(Err(_)) => {
                self.sender = None;
                Err(Failure::Connect)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn exchange(&mut self, method: Method, path: &Uri, body: Option<String>) -> Result<(u16, Bytes), BoxError> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            empty => empty.insert(connect(&self.target).await?),
        };
        sender.ready().await?;
        let mut request = hyper::Request::builder().method(method).uri(path.clone()).header(HOST, &self.target.host);
        if let Some(auth) = &self.target.auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = match body {
            Some(body) => request.header(CONTENT_TYPE, "application/json").body(Full::new(Bytes::from(body)))?,
            None => request.body(Full::new(Bytes::new()))?,
        };
        let response = sender.send_request(request).await?;
        let code = response.status().as_u16();
        Ok((code, response.into_body().collect().await?.to_bytes()))
    }
}

/// The acknowledged sequences of each call.
type Acks = Vec<Mutex<HashSet<u64>>>;

/// One call as the generator drives it.
struct Call {
    id: String,
    /// Where its packets are posted.
    path: Uri,
}

/// Statuses of the packets in a batch answer, wherever the array sits.
fn packet_statuses(body: &Value) -> Vec<String> {
    fn find_array(v: &Value) -> Option<&Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            Value::Object(o) => o.values().find_map(find_array),
            _ => None,
        }
    }
    find_array(body)
        .map(|a| a.iter().map(|p| p.get("status").and_then(Value::as_str).unwrap_or("error").to_owned()).collect())
        .unwrap_or_default()
}

fn is_ack(status: &str) -> bool {
    status == "accepted" || status == "duplicate"
}

/// Sends one request of `seqs` for `call`; records latency from `due` and the acks.
async fn send(
    conn: &mut Conn,
    args: &Args,
    (call, call_index): (&Call, usize),
    seqs: &[u64],
    due: Instant,
    phase: &mut Phase,
    acks: &Acks,
) {
    let batch = args.batch > 0;
    // Packets sent, answered or not: the offered load.
    let sent = seqs.len() as u64;
    let body = request_body(&call.id, seqs, args.data_bytes, batch);
    let (code, bytes) = match conn.request(Method::POST, &call.path, Some(body)).await {
        Ok(answer) => answer,
        Err(failure) => {
            let detail = match failure {
                Failure::Timeout => "timeout",
                Failure::Connect => "connection error",
            };
            phase.record(due.elapsed(), None, detail, sent);
            return;
        }
    };
    let latency = due.elapsed();
    if !batch {
        let (detail, acked) = match serde_json::from_slice::<Answer>(&bytes) {
            Ok(Answer { status: Some(status), .. }) if (200..300).contains(&code) => {
                let acked = is_ack(&status);
                (status, acked)
            }
            Ok(Answer { error: Some(error), .. }) => (error, false),
            _ => ("(unreadable body)".into(), false),
        };
        phase.record(latency, Some(code), &detail, sent);
        if acked {
            acks[call_index].lock().expect("acks lock").insert(seqs[0]);
        }
        return;
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(body) if (200..300).contains(&code) => {
            let statuses = packet_statuses(&body);
            let mut acked = acks[call_index].lock().expect("acks lock");
            for (seq, _) in seqs.iter().zip(&statuses).filter(|(_, s)| is_ack(s)) {
                acked.insert(*seq);
            }
            drop(acked);
            phase.record(latency, Some(code), "", sent);
        }
        Ok(body) => {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
            phase.record(latency, Some(code), error, sent);
        }
        Err(_) => phase.record(latency, Some(code), "(unreadable body)", sent),
    }
}

/// Paced mode's connections, lent to whichever call is due.
struct Pool {
    idle: Mutex<Vec<Conn>>,
    free: tokio::sync::Semaphore,
}

/// A connection on loan; back to the pool when dropped.
struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    fn new(target: &Arc<Target>, connections: usize) -> Self {
        let idle = (0..connections).map(|_| Conn::new(target.clone())).collect();
        Self { idle: Mutex::new(idle), free: tokio::sync::Semaphore::new(connections) }
    }

    async fn take(&self) -> Lent<'_> {
        let permit = self.free.acquire().await.expect("semaphore open");
        // A permit guarantees an idle connection.
        let conn = self.idle.lock().expect("pool lock").pop();
        Lent { pool: self, conn, _permit: permit }
    }
}

impl std::ops::Deref for Lent<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("lent connection")
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("lent connection")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle.lock().expect("pool lock").push(conn);
        }
    }
}

/// Streams every call's packets; one worker per connection in fast mode, one task per
/// call (bounded by the connections) in paced mode.
async fn ingest(target: Arc<Target>, args: Arc<Args>, calls: Arc<Vec<Call>>, acks: Arc<Acks>) -> Phase {
    let chunk = args.batch.max(1);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    if args.pace_ms == 0 {
        for worker in 0..args.connections.min(calls.len()) {
            let (args, calls, acks) = (args.clone(), calls.clone(), acks.clone());
            let mut conn = Conn::new(target.clone());
            tasks.spawn(async move {
                let mut phase = Phase::new();
                // This worker's calls, interleaved packet by packet (or batch by batch).
                let mine: Vec<usize> = (worker..calls.len()).step_by(args.connections).collect();
                let plans: Vec<Vec<u64>> = mine.iter().map(|&i| plan(&args, i)).collect();
                let rounds = plans.iter().map(|p| p.len().div_ceil(chunk)).max().unwrap_or(0);
                for round in 0..rounds {
                    for (k, &i) in mine.iter().enumerate() {
                        let Some(seqs) = plans[k].chunks(chunk).nth(round) else { continue };
                        send(&mut conn, &args, (&calls[i], i), seqs, Instant::now(), &mut phase, &acks).await;
                    }
                }
                phase
            });
        }
    } else {
        let pool = Arc::new(Pool::new(&target, args.connections));
        for i in 0..calls.len() {
            let (args, calls, acks, pool) = (args.clone(), calls.clone(), acks.clone(), pool.clone());
            tasks.spawn(async move {
                let mut phase = Phase::new();
                let period = Duration::from_millis(args.pace_ms);
                // Spread the calls' start times over one period.
                let offset = period.mul_f64(i as f64 / calls.len() as f64);
                let start = tokio::time::Instant::now() + offset;
                for (n, seqs) in plan(&args, i).chunks(chunk).enumerate() {
                    let due = start + period * n as u32;
                    tokio::time::sleep_until(due).await;
                    let mut conn = pool.take().await;
                    phase.late_us.saturating_record(due.elapsed().as_micros().max(1) as u64);
                    let sent = Instant::now();
                    send(&mut conn, &args, (&calls[i], i), seqs, due.into_std(), &mut phase, &acks).await;
                    phase.service_us.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                }
                phase
            });
        }
    }
    let mut total = Phase::new();
    while let Some(phase) = tasks.join_next().await {
        total.merge(&phase.expect("ingest task"));
    }
    total.elapsed = started.elapsed();
    total
}

/// `/healthz` as fast as possible over the same number of connections.
async fn baseline(target: Arc<Target>, workers: usize, secs: u64) -> Phase {
    let path = Uri::from_static("/healthz");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (stop, path) = (stop.clone(), path.clone());
        let mut conn = Conn::new(target.clone());
        tasks.spawn(async move {
            let mut phase = Phase::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match conn.request(Method::GET, &path, None).await {
                    Ok((code, _)) => phase.record(sent.elapsed(), Some(code), "", 0),
                    Err(_) => phase.record(sent.elapsed(), None, "connection error", 0),
                }
            }
            phase
        });
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Phase::new();
    while let Some(phase) = tasks.join_next().await {
        total.merge(&phase.expect("baseline task"));
    }
    total.elapsed = started.elapsed();
    total
}

/// A number anywhere in a JSON document under `key` (the first found, depth first).
fn find_u64(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(o) => o.get(key).and_then(Value::as_u64).or_else(|| o.values().find_map(|v| find_u64(v, key))),
        Value::Array(a) => a.iter().find_map(|v| find_u64(v, key)),
        _ => None,
    }
}

/// Checks that each call stores exactly the packets it acknowledged.
async fn verify(client: Arc<Client>, args: &Args, calls: &[Call], acks: &Acks) -> Result<(), BoxError> {
    let mut lost = 0u64;
    let mut extra = 0u64;
    let mut acked_total = 0u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let mut tasks = JoinSet::new();
    for call in calls {
        let (client, call, slots) = (client.clone(), call.id.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let body = client.get_json(&format!("/v1/calls/{call}")).await;
            (call, body)
        });
    }
    let index: std::collections::HashMap<&str, usize> =
        calls.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    while let Some(joined) = tasks.join_next().await {
        let (call, body) = joined?;
        let acked = acks[index[call.as_str()]].lock().expect("acks lock").len() as u64;
        acked_total += acked;
        let stored = match body {
            Ok(body) => find_u64(&body, "received").ok_or_else(|| format!("no 'received' counter in {body}"))?,
            Err(_) if acked == 0 => 0,
            Err(e) => return Err(e),
        };
        lost += acked.saturating_sub(stored);
        extra += stored.saturating_sub(acked);
    }
    println!(
        "verify: {acked_total} distinct packets acknowledged, {lost} of them missing from the store, {extra} stored but unacknowledged"
    );
    if lost > 0 {
        return Err(format!("{lost} acknowledged packets are not stored").into());
    }
    Ok(())
}

/// Counts this run's calls in `state`, walking the listing from the run's prefix.
async fn count_state(client: &Client, prefix: &str, state: &str) -> Result<usize, BoxError> {
    let mut count = 0;
    let mut cursor = prefix.to_owned();
    loop {
        let page = client.get_json(&format!("/v1/calls?state={state}&limit=1000&cursor={cursor}")).await?;
        let calls = page.get("calls").and_then(Value::as_array).cloned().unwrap_or_default();
        let ids: Vec<&str> = calls.iter().filter_map(|c| c.get("call_id").and_then(Value::as_str)).collect();
        count += ids.iter().filter(|id| id.starts_with(prefix)).count();
        let next = page.get("next_cursor").or_else(|| page.get("next")).and_then(Value::as_str);
        match (next, ids.last()) {
            (Some(next), Some(last)) if last.starts_with(prefix) => cursor = next.to_owned(),
            _ => return Ok(count),
        }
    }
}

/// Hangs up every call and waits until all are ARCHIVED or FAILED.
async fn pipeline(client: Arc<Client>, args: &Args, calls: Arc<Vec<Call>>, prefix: &str) -> Result<(), BoxError> {
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let mut tasks = JoinSet::new();
    for call in calls.iter() {
        let (client, slots, call) = (client.clone(), slots.clone(), call.id.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            client
                .request(reqwest::Method::POST, &format!("/v1/calls/{call}/complete"))
                .send()
                .await
                .map(|r| r.status())
        });
    }
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        if !done?.map(|s| s.is_success()).unwrap_or(false) {
            refused += 1;
        }
    }
    println!("hung up {} calls in {:.2} s ({refused} refused)", calls.len(), started.elapsed().as_secs_f64());
    let deadline = started + Duration::from_secs(args.hangup_timeout_secs);
    loop {
        let archived = count_state(&client, prefix, "ARCHIVED").await?;
        let failed = count_state(&client, prefix, "FAILED").await?;
        let done = archived + failed;
        let elapsed = started.elapsed();
        if done >= calls.len() || Instant::now() > deadline {
            println!(
                "AI pipeline: {done}/{} calls terminal ({archived} ARCHIVED, {failed} FAILED) in {:.2} s = {:.1} calls/s",
                calls.len(),
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64()
            );
            // The server's own gauge: the processor must never have had more AI
            // requests in flight than its concurrency.
            if let Ok(status) = client.get_json("/v1/processor").await {
                println!(
                    "processor: at most {} AI requests in flight at once (concurrency {})",
                    status["ai_requests_peak"], status["concurrency"]
                );
            }
            return if done >= calls.len() { Ok(()) } else { Err("AI pipeline timed out".into()) };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.calls == 0 || args.packets == 0 || args.connections == 0 {
        return Err("--calls, --packets and --connections must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.shuffle) || !(0.0..=1.0).contains(&args.duplicates) {
        return Err("--shuffle and --duplicates are probabilities in 0..=1".into());
    }
    let prefix = args.prefix.clone().unwrap_or_else(|| format!("lg{:08x}-", rand::random::<u32>()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()?;
    let client =
        Arc::new(Client { http, url: args.url.trim_end_matches('/').to_owned(), api_key: args.api_key.clone() });
    client.get_json("/healthz").await.map_err(|e| format!("server not reachable at {}: {e}", args.url))?;
    let target = Arc::new(Target::parse(&client.url, args.api_key.as_deref())?);

    let mut ids: Vec<String> = (0..args.calls).map(|i| format!("{prefix}{i:06}")).collect();
    ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    ids.sort();
    let calls = ids
        .into_iter()
        .map(|id| {
            let path = if args.batch > 0 { format!("/v1/calls/{id}/packets/batch") } else { format!("/ingest/{id}") };
            Ok(Call { path: Uri::try_from(path)?, id })
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let calls = Arc::new(calls);
    let acks: Arc<Acks> = Arc::new((0..args.calls).map(|_| Mutex::new(HashSet::new())).collect());
    let mode = match (args.batch, args.pace_ms) {
        (0, 0) => "one packet per request, as fast as possible".to_owned(),
        (0, p) => format!("one packet per request, paced every {p} ms per call"),
        (b, 0) => format!("{b} packets per request, as fast as possible"),
        (b, p) => format!("{b} packets per request, paced every {p} ms per call"),
    };
    println!(
        "loadgen: {} calls x {} packets, {} connections, {mode}, shuffle {}, duplicates {}, prefix {prefix}",
        args.calls, args.packets, args.connections, args.shuffle, args.duplicates
    );

    let args = Arc::new(args);
    // The baseline runs before and after the ingest, and the ratio compares against
    // their mean: on a shared machine whose speed drifts within a minute, a baseline
    // on one side only can be measured on a faster or slower machine than the ingest.
    let before = if args.baseline_secs > 0 {
        let base = baseline(target.clone(), args.connections, args.baseline_secs).await;
        base.print("baseline GET /healthz, before");
        Some(base)
    } else {
        None
    };
    let load = ingest(target.clone(), args.clone(), calls.clone(), acks.clone()).await;
    load.print("ingest");
    if let Some(before) = before {
        let after = baseline(target, args.connections, args.baseline_secs).await;
        after.print("baseline GET /healthz, after");
        let base = (before.per_sec(before.requests) + after.per_sec(after.requests)) / 2.0;
        println!(
            "ratio: ingest requests/s / healthz requests/s (mean of before and after, {base:.0}/s) = {:.2}",
            load.per_sec(load.requests) / base
        );
    }
    verify(client.clone(), &args, &calls, &acks).await?;
    if args.hangup {
        pipeline(client, &args, calls, &prefix).await?;
    }
    Ok(())
}
