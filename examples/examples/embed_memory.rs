//! Embeds pbx in another Rust program: the memory store, a fast but flaky simulated
//! AI, and the processor in the background.
//!
//! One call streams packets with a gap (7 never arrives), a duplicate (4 twice) and an
//! out-of-order packet (3 after 4), hangs up, and is printed once the AI work reached
//! ARCHIVED (or FAILED), with its ordering report and transcript.
//!
//! ```text
//! cargo run -p pbx-examples --example embed_memory
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use pbx_core::prelude::*;
use pbx_store_memory::MemoryCallStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let store = Arc::new(MemoryCallStore::new());
    let gateway = Gateway::new(store, GatewayConfig::default())?;

    // The seed's flaky AI (25 % failures), but answering in milliseconds, not seconds,
    // and retried after 50 ms, 100 ms, ... instead of 1 s, 2 s, ...
    let ai = SimulatedAi::new(SimulatedAiConfig {
        failure_rate: 0.25,
        latency: Duration::from_millis(10)..=Duration::from_millis(50),
        seed: None,
    })?;
    let retry = RetryPolicy {
        initial_interval: Duration::from_millis(50),
        maximum_interval: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let processor = Processor::new(&gateway, Arc::new(ai), ProcessorConfig { retry, ..ProcessorConfig::default() })?;
    let processor = processor.spawn();
    let mut events = gateway.feed(None).await?;

    let call = CallId::new("CA0123456789abcdef0123456789abcdef")?;
    println!("call {call}");
    for (i, seq) in [1, 2, 4, 4, 3, 5, 6, 8, 9].into_iter().enumerate() {
        let packet = Packet::new(seq, format!("audio_chunk_{seq}"), 0.02 * i as f64)?;
        let appended = gateway.ingest(call.clone(), packet).await?;
        let verdict = match appended.order {
            PacketOrder::Gap { missing } => format!("gap (missing {}..={})", missing.first, missing.last),
            order => order.as_str().to_owned(),
        };
        println!("  packet {seq:>2}: {verdict}");
    }
    gateway.complete(&call).await?;
    println!("hung up; waiting for the AI work");

    // Follow the call's events until it reaches ARCHIVED or FAILED.
    let state = loop {
        let FeedItem::Event(event) = events.next().await? else { continue };
        if event.call_id != call {
            continue;
        }
        match &event.body {
            EventBody::AttemptFailed { attempt, error, retry_at } => match retry_at {
                Some(at) => println!("  attempt {attempt} failed ({error}); retry at {}", at.format("%H:%M:%S%.3f")),
                None => println!("  attempt {attempt} failed ({error}); giving up"),
            },
            EventBody::StateChanged { to, .. } => {
                println!("  -> {to}");
                if to.is_terminal() {
                    break *to;
                }
            }
            _ => {}
        }
    };

    let snapshot = gateway.call(&call).await?;
    let c = &snapshot.ordering.counters;
    println!("\ncall {} is {state} after {} attempt(s)", snapshot.call_id, snapshot.attempts);
    println!(
        "ordering: received {}, highest {}, missing {}, duplicates {}, out of order {}",
        c.received,
        c.highest,
        c.missing(),
        c.duplicates,
        c.out_of_order
    );
    for range in &snapshot.ordering.missing_ranges {
        println!("  missing {}..={}", range.first, range.last);
    }
    match (&snapshot.result, &snapshot.last_error) {
        (Some(result), _) => {
            println!("transcript: {}", result.transcript);
            println!("sentiment: {} ({:+.2})", result.sentiment.label.as_str(), result.sentiment.score);
        }
        (None, Some(error)) => println!("last error: {error}"),
        (None, None) => {}
    }

    processor.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
