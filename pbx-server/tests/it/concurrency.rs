//! Concurrent requests over HTTP: nothing lost, nothing doubled, nothing after hang-up.

use std::collections::BTreeSet;
use std::sync::Arc;

use poem::http::StatusCode;
use tokio::task::JoinSet;

use crate::helpers::{TestApp, id};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_packets_to_one_call_are_all_stored() {
    let app = Arc::new(TestApp::new());
    let mut requests = JoinSet::new();
    for seq in 1..=500u64 {
        let app = app.clone();
        requests.spawn(async move { app.ingest("busy", seq).await });
    }
    let mut out_of_order = 0;
    while let Some(reply) = requests.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let body = reply.json();
        assert_eq!(body["status"], "accepted");
        out_of_order += u64::from(body["order"] == "out_of_order");
    }
    let call = app.call("busy").await;
    let ordering = &call["ordering"];
    assert_eq!(ordering["received"], 500);
    assert_eq!(ordering["highest"], 500);
    assert_eq!(ordering["missing"], 0);
    assert_eq!(ordering["duplicates"], 0);
    assert_eq!(ordering["out_of_order"], out_of_order);
    let stored: Vec<u64> = app.gateway.packets(&id("busy")).await.unwrap().iter().map(|p| p.sequence).collect();
    assert_eq!(stored, (1..=500).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_packet_twice_at_once_is_stored_once() {
    let app = Arc::new(TestApp::new());
    for call in 0..50 {
        let call = format!("twice-{call}");
        let (a, b) = {
            let (a1, a2, c1, c2) = (app.clone(), app.clone(), call.clone(), call.clone());
            (tokio::spawn(async move { a1.ingest(&c1, 1).await }), tokio::spawn(async move { a2.ingest(&c2, 1).await }))
        };
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
        let mut statuses =
            [a.json()["status"].as_str().unwrap().to_owned(), b.json()["status"].as_str().unwrap().to_owned()];
        statuses.sort();
        assert_eq!(statuses, ["accepted", "duplicate"], "{call}");
        let ordering = app.call(&call).await["ordering"].clone();
        assert_eq!((ordering["received"].as_u64(), ordering["duplicates"].as_u64()), (Some(1), Some(1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hang_up_racing_ingestion_never_loses_an_acknowledged_packet() {
    let app = Arc::new(TestApp::new());
    assert_eq!(app.ingest("race", 1).await.status, StatusCode::OK);
    let mut requests = JoinSet::new();
    for seq in 2..=300u64 {
        let ingest = app.clone();
        requests.spawn(async move { (seq, ingest.ingest("race", seq).await) });
        if seq == 150 {
            let app = app.clone();
            requests.spawn(async move { (0, app.complete("race").await) });
        }
    }
    let mut acknowledged = BTreeSet::from([1u64]);
    while let Some(joined) = requests.join_next().await {
        let (seq, reply) = joined.unwrap();
        match (seq, reply.status) {
            (0, status) => assert_eq!(status, StatusCode::OK, "hang-up: {}", reply.text),
            (_, StatusCode::OK) => {
                acknowledged.insert(seq);
            }
            (_, StatusCode::CONFLICT) => assert_eq!(reply.error_code(), "call_closed"),
            (_, status) => panic!("packet {seq}: unexpected {status} {}", reply.text),
        }
    }
    let stored: BTreeSet<u64> = app.gateway.packets(&id("race")).await.unwrap().iter().map(|p| p.sequence).collect();
    assert_eq!(stored, acknowledged, "every 200 is stored and nothing else");
    assert_eq!(app.call("race").await["state"], "COMPLETED");
    // After the hang-up answered, every packet is refused.
    for seq in 301..=310 {
        let reply = app.ingest("race", seq).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::CONFLICT, "call_closed"));
    }
}
