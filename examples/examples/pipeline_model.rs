//! A discrete-event model of the AI pipeline benchmark: how long `--calls` hung-up calls
//! take to become terminal on `--concurrency` slots, when each call needs a
//! transcription and a sentiment request (each `--latency-min`..`--latency-max`, each
//! failing with `--failure-rate`), under the processor's policy: due calls claimed
//! oldest due first, a failed attempt retried after a fully jittered exponential
//! backoff (`--retry-initial`, doubling, capped at 60 s), at most `--max-attempts`
//! attempts, and a retry after a failed sentiment step reusing the transcript.
//!
//! It answers "what is the floor for this workload and policy?" without running the
//! server: BENCHMARKS.md compares its figures with measured runs.
//!
//! ```text
//! cargo run --release -p pbx-examples --example pipeline_model
//! cargo run --release -p pbx-examples --example pipeline_model -- --retry-initial-ms 100
//! cargo run --release -p pbx-examples --example pipeline_model -- --claim-order retries-first
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use clap::Parser;
use rand::{Rng, SeedableRng};

/// Model of the AI pipeline benchmark.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Calls hung up at the start.
    #[arg(long, default_value_t = 10_000)]
    calls: usize,
    /// Attempts running at once.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Share of AI requests that fail.
    #[arg(long, default_value_t = 0.25)]
    failure_rate: f64,
    /// Shortest AI request, in seconds.
    #[arg(long, default_value_t = 1.0)]
    latency_min: f64,
    /// Longest AI request, in seconds.
    #[arg(long, default_value_t = 3.0)]
    latency_max: f64,
    /// First retry's backoff bound, in milliseconds (full jitter: uniform below it).
    #[arg(long, default_value_t = 1000)]
    retry_initial_ms: u64,
    /// Attempts in all, the first included.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Runs with seeds 0..runs.
    #[arg(long, default_value_t = 5)]
    runs: u64,
    /// Which due call is claimed first.
    #[arg(long, value_enum, default_value_t = ClaimOrder::Due)]
    claim_order: ClaimOrder,
}

/// Which due call the model claims first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClaimOrder {
    /// Oldest due first: the processor's order.
    Due,
    /// Most attempts first, then oldest due (retries before new calls).
    RetriesFirst,
}

/// Seconds as whole microseconds: the model's clock, exact and orderable.
fn micros(seconds: f64) -> u64 {
    (seconds * 1e6).round() as u64
}

/// One run: (seconds until every call is terminal, AI seconds spent, calls that failed).
fn run(args: &Args, seed: u64) -> (f64, f64, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut attempts = vec![0u32; args.calls];
    let mut transcribed = vec![false; args.calls];
    // Due calls by (claim priority, due time); calls backing off by due time; attempts
    // by end time.
    let priority = |attempts: u32| match args.claim_order {
        ClaimOrder::Due => 0,
        ClaimOrder::RetriesFirst => u32::MAX - attempts,
    };
    let mut due: BinaryHeap<Reverse<(u32, u64, usize)>> =
        (0..args.calls).map(|c| Reverse((priority(0), 0, c))).collect();
    let mut backing_off: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut running: BinaryHeap<Reverse<(u64, usize, bool)>> = BinaryHeap::new();
    let (mut now, mut busy, mut done, mut failed) = (0u64, 0.0f64, 0, 0);
    let latency = |rng: &mut rand::rngs::StdRng| rng.random_range(args.latency_min..=args.latency_max);
    while done < args.calls {
        while backing_off.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Reverse((at, call)) = backing_off.pop().expect("peeked");
            due.push(Reverse((priority(attempts[call]), at, call)));
        }
        while running.len() < args.concurrency {
            let Some(Reverse((_, _, call))) = due.pop() else { break };
            attempts[call] += 1;
            let mut took = 0.0;
            let mut ok = true;
            if !transcribed[call] {
                took += latency(&mut rng);
                ok = !rng.random_bool(args.failure_rate);
                transcribed[call] = ok;
            }
            if ok {
                took += latency(&mut rng);
                ok = !rng.random_bool(args.failure_rate);
            }
            busy += took;
            running.push(Reverse((now + micros(took), call, ok)));
        }
        let next_end = running.peek().map(|Reverse((at, _, _))| *at);
        let next_due = backing_off.peek().map(|Reverse((at, _))| *at);
        match (next_end, next_due) {
            (_, Some(at)) if running.len() < args.concurrency && next_end.is_none_or(|end| at < end) => now = at,
            (Some(_), _) => {
                let Reverse((at, call, ok)) = running.pop().expect("peeked");
                now = at;
                if ok || attempts[call] >= args.max_attempts {
                    done += 1;
                    failed += usize::from(!ok);
                } else {
                    let bound =
                        (args.retry_initial_ms as f64 / 1000.0 * 2f64.powi(attempts[call] as i32 - 1)).min(60.0);
                    let backoff = rng.random_range(0.0..=bound);
                    backing_off.push(Reverse((now + micros(backoff), call)));
                }
            }
            (None, _) => unreachable!("calls remain, none runs, none is due"),
        }
    }
    (now as f64 / 1e6, busy, failed)
}

fn main() {
    let args = Args::parse();
    println!(
        "{} calls, concurrency {}, requests {}-{} s failing {:.0} %, retry initial {} ms, {} attempts at most, claim order {:?}",
        args.calls,
        args.concurrency,
        args.latency_min,
        args.latency_max,
        args.failure_rate * 100.0,
        args.retry_initial_ms,
        args.max_attempts,
        args.claim_order
    );
    for seed in 0..args.runs {
        let (makespan, busy, failed) = run(&args, seed);
        println!(
            "seed {seed}: all terminal in {makespan:.1} s ({failed} FAILED); AI work {:.1} s per slot, slots {:.0} % busy",
            busy / args.concurrency as f64,
            100.0 * busy / (makespan * args.concurrency as f64)
        );
    }
}
