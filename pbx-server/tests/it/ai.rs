//! The AI path through the HTTP API with a scripted AI: retries, permanent errors,
//! exhausted retries, re-drive. Terminal states are awaited on the event feed.

use std::sync::Arc;

use pbx_core::CallState;
use pbx_core::ai::{AiError, SimulatedAi};
use pbx_core::events::EventBody;
use pbx_core::gateway::FeedItem;
use pbx_core::testkit::ai::{ScriptedAi, Step};
use poem::http::{Method, StatusCode};

use crate::helpers::{TestApp, fast_retry, id, wait_terminal};

/// Streams three packets and hangs up, waiting for the terminal state; the call's view.
async fn run_call(app: &TestApp, call: &str) -> (CallState, serde_json::Value) {
    let mut events = app.gateway.feed(None).await.expect("feed");
    for seq in 1..=3 {
        assert_eq!(app.ingest(call, seq).await.status, StatusCode::OK);
    }
    assert_eq!(app.complete(call).await.status, StatusCode::OK);
    let state = wait_terminal(&mut events, &id(call)).await;
    (state, app.call(call).await)
}

#[tokio::test]
async fn failures_then_success_records_attempts_and_backoff() {
    let ai = Arc::new(ScriptedAi::new());
    let call = id("flaky");
    ai.script(
        &call,
        [Step::Fail(AiError::unavailable("down 1")), Step::Fail(AiError::timeout("slow 2")), Step::Succeed],
    );
    let app = TestApp::with_ai(ai.clone(), fast_retry(5));
    let mut events = app.gateway.feed(None).await.expect("feed");

    let (state, view) = run_call(&app, "flaky").await;
    assert_eq!(state, CallState::Archived);
    assert_eq!(view["state"], "ARCHIVED");
    assert_eq!(view["attempts"], 3);
    assert_eq!(view["failures"], 2);
    assert!(view["last_error"].as_str().unwrap().contains("slow 2"), "{view}");
    let expected = SimulatedAi::expected_transcript(["d1", "d2", "d3"].into_iter());
    assert_eq!(view["transcript"], expected.as_str());
    assert_eq!(view["sentiment"]["label"], SimulatedAi::sentiment_of(&expected).label.as_str());
    assert!(view["finished_at"].is_string());
    assert_eq!(ai.attempts(&call), [1, 2, 3]);

    // Each failure scheduled a retry (the backoff), recorded as an event.
    let mut retries = Vec::new();
    while retries.len() < 2 {
        if let FeedItem::Event(e) = events.next().await.expect("feed")
            && let EventBody::AttemptFailed { attempt, retry_at, .. } = &e.body
        {
            retries.push((*attempt, retry_at.is_some()));
        }
    }
    assert_eq!(retries, [(1, true), (2, true)]);
}

#[tokio::test]
async fn a_permanent_error_fails_the_call_at_once() {
    let ai = Arc::new(ScriptedAi::new());
    let call = id("doomed");
    ai.script(&call, [Step::Fail(AiError::permanent("unsupported codec"))]);
    let app = TestApp::with_ai(ai.clone(), fast_retry(5));

    let (state, view) = run_call(&app, "doomed").await;
    assert_eq!(state, CallState::Failed);
    assert_eq!(view["attempts"], 1);
    assert!(view["last_error"].as_str().unwrap().contains("unsupported codec"), "{view}");
    assert!(view.get("transcript").is_none_or(|t| t.is_null()));
    assert_eq!(ai.attempts(&call), [1]);
}

#[tokio::test]
async fn exhausted_retries_fail_with_the_last_error_and_redrive_recovers() {
    let ai = Arc::new(ScriptedAi::new());
    let call = id("tired");
    ai.script(&call, (1..=3).map(|n| Step::Fail(AiError::unavailable(format!("outage {n}")))));
    let app = TestApp::with_ai(ai.clone(), fast_retry(3));

    let (state, view) = run_call(&app, "tired").await;
    assert_eq!(state, CallState::Failed);
    assert_eq!(view["attempts"], 3);
    assert_eq!(view["failures"], 3);
    assert!(view["last_error"].as_str().unwrap().contains("outage 3"), "{view}");
    let failed = app.get("/v1/calls?state=FAILED").await.json();
    assert_eq!(failed["calls"][0]["call_id"], "tired");

    // Re-drive: back to COMPLETED, the script is used up so the next attempt succeeds.
    let mut events = app.gateway.feed(None).await.expect("feed");
    let retry = app.request(Method::POST, "/v1/calls/tired/retry", None, None).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    assert_eq!(retry.json()["state"], "COMPLETED");
    assert_eq!(wait_terminal(&mut events, &call).await, CallState::Archived);
    let view = app.call("tired").await;
    assert_eq!(view["state"], "ARCHIVED");
    assert_eq!(view["attempts"], 4, "attempts never reset");
    assert_eq!(ai.attempts(&call), [1, 2, 3, 4]);

    // An ARCHIVED call cannot be re-driven.
    let again = app.request(Method::POST, "/v1/calls/tired/retry", None, None).await;
    assert_eq!((again.status, again.error_code().as_str()), (StatusCode::CONFLICT, "invalid_transition"));
}

/// `GET /v1/processor` shows the processor's gauges; a server without one answers 404,
/// and the route wants the supervisor role.
#[tokio::test]
async fn processor_status_shows_its_gauges() {
    let app = TestApp::with_ai(Arc::new(ScriptedAi::new()), fast_retry(3));
    let before = app.get("/v1/processor").await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    let before = before.json();
    assert_eq!(before["concurrency"], 64);
    assert_eq!((before["ai_requests_in_flight"].as_u64(), before["ai_requests_peak"].as_u64()), (Some(0), Some(0)));
    assert!(before["worker_id"].as_str().is_some_and(|w| !w.is_empty()), "{before}");

    let (state, _) = run_call(&app, "gauged").await;
    assert_eq!(state, CallState::Archived);
    let after = app.get("/v1/processor").await.json();
    assert_eq!(after["ai_requests_in_flight"], 0);
    assert_eq!(after["attempts_in_flight"], 0);
    assert_eq!(after["ai_requests_peak"], 1, "one call, one request at a time: {after}");

    let none = TestApp::new().get("/v1/processor").await;
    assert_eq!((none.status, none.error_code()), (StatusCode::NOT_FOUND, "no_processor".to_owned()));

    let keyed = TestApp::with_keys(&["ingest:ingest-key-0001", "supervisor:super-key-0001"]);
    let refused = keyed.request(Method::GET, "/v1/processor", None, Some("ingest-key-0001")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let allowed = keyed.request(Method::GET, "/v1/processor", None, Some("super-key-0001")).await;
    assert_eq!(allowed.status, StatusCode::NOT_FOUND, "authorized, but no processor runs there");
}
