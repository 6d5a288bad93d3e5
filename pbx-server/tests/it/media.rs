//! Call media over HTTP: base64 audio and the seed's text, channels, declared
//! formats, and the streamed WAV recording.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use poem::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

/// A 20 ms mu-law frame (160 bytes) of `byte`.
fn frame(byte: u8) -> String {
    BASE64.encode([byte; 160])
}

async fn post_json(app: &TestApp, call: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let reply = app.post(&format!("/ingest/{call}"), &body.to_string()).await;
    let value = serde_json::from_str(&reply.text).unwrap_or(serde_json::Value::Null);
    (reply.status, value)
}

/// The recording's status, headers and bytes.
async fn recording(app: &TestApp, call: &str) -> (StatusCode, poem::http::HeaderMap, Vec<u8>) {
    let resp = app.client.request(Method::GET, format!("/v1/calls/{call}/recording.wav")).send().await;
    let status = resp.0.status();
    let headers = resp.0.headers().clone();
    let body = resp.0.into_body().into_vec().await.expect("body");
    (status, headers, body)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[tokio::test]
async fn the_seed_text_is_still_accepted_and_reads_back() {
    let app = TestApp::new();
    let (status, ack) = post_json(&app, "seed", json!({"sequence":1,"data":"audio_chunk_1","timestamp":123.45})).await;
    assert_eq!((status, ack["status"].as_str()), (StatusCode::OK, Some("accepted")));
    let view = app.call("seed").await;
    assert_eq!(view["media_format"], "mulaw/8000/1");
    assert_eq!(view["media_format_declared"], false);
    assert_eq!(view["channels"].as_array().map(Vec::len), Some(1));
    // Resent as is: a duplicate, so the text was kept exactly.
    let (_, ack) = post_json(&app, "seed", json!({"sequence":1,"data":"audio_chunk_1","timestamp":123.45})).await;
    assert_eq!(ack["status"], "duplicate");
    // The same bytes as base64 audio are other data: a conflict.
    let as_audio = BASE64.encode("audio_chunk_1");
    let (status, err) = post_json(&app, "seed", json!({"sequence":1,"data":as_audio,"timestamp":123.45})).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    // Text plays as silence: one frame of it.
    let (status, _, wav) = recording(&app, "seed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(wav.len(), 44 + 160 * 2);
    assert!(wav[44..].iter().all(|&b| b == 0));
}

#[tokio::test]
async fn a_91_frame_call_with_one_missing_plays_for_1_82_s() {
    let app = TestApp::new();
    for seq in (1..=91u64).filter(|&s| s != 40) {
        let (status, _) =
            post_json(&app, "call-91", json!({"sequence":seq,"data":frame(seq as u8),"timestamp":seq as f64 * 0.02}))
                .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, wav) = recording(&app, "call-91").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "audio/wav");
    assert_eq!(headers.get("content-disposition").unwrap(), "attachment; filename=\"call-91.wav\"");
    assert_eq!(headers.get("content-length").unwrap().to_str().unwrap(), wav.len().to_string());
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(&wav[8..12], b"WAVE");
    assert_eq!(u16_at(&wav, 22), 1, "mono");
    assert_eq!(u32_at(&wav, 24), 8000);
    assert_eq!(u16_at(&wav, 34), 16, "16-bit");
    let data = u32_at(&wav, 40) as usize;
    assert_eq!(data, wav.len() - 44);
    let seconds = data as f64 / 2.0 / 8000.0;
    assert!((seconds - 1.82).abs() < 1e-9, "{seconds} s");
    // Frame 40 is silence; frame 41 is the decoded mu-law code 41 (not silence).
    let frame_at = |n: usize| &wav[44 + (n - 1) * 320..44 + n * 320];
    assert!(frame_at(40).iter().all(|&b| b == 0));
    let sample = i16::from_le_bytes([frame_at(41)[0], frame_at(41)[1]]);
    assert_eq!(sample, pbx_core::media::g711::mulaw_to_linear(41));
}

#[tokio::test]
async fn two_channels_have_their_own_sequences_and_a_stereo_recording() {
    let app = TestApp::new();
    for seq in 1..=3u64 {
        for channel in [0, 1] {
            let byte = if channel == 0 { 0x10 } else { 0x90 };
            let body = json!({"sequence":seq,"data":frame(byte),"timestamp":0.0,"channel":channel});
            let (status, ack) = post_json(&app, "both", body).await;
            assert_eq!((status, ack["order"].as_str()), (StatusCode::OK, Some("in_order")), "{seq}/{channel}");
        }
    }
    let view = app.call("both").await;
    let channels = view["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 2);
    assert_eq!((channels[0]["received"].as_u64(), channels[1]["received"].as_u64()), (Some(3), Some(3)));
    let (_, _, wav) = recording(&app, "both").await;
    assert_eq!(u16_at(&wav, 22), 2, "stereo");
    assert_eq!(wav.len(), 44 + 3 * 160 * 2 * 2);
    let left = i16::from_le_bytes([wav[44], wav[45]]);
    let right = i16::from_le_bytes([wav[46], wav[47]]);
    assert_eq!(
        (left, right),
        (pbx_core::media::g711::mulaw_to_linear(0x10), pbx_core::media::g711::mulaw_to_linear(0x90))
    );
    // Channel 2 does not exist.
    let (status, err) =
        post_json(&app, "both", json!({"sequence":4,"data":frame(1),"timestamp":0.0,"channel":2})).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_packet")));
}

#[tokio::test]
async fn the_first_packet_declares_the_format_once() {
    let app = TestApp::new();
    let l16 = BASE64.encode([0u8, 1, 2, 3]);
    let body = json!({"sequence":1,"data":l16,"timestamp":0.0,"media_format":"l16/16000/1"});
    assert_eq!(post_json(&app, "wide", body).await.0, StatusCode::OK);
    let view = app.call("wide").await;
    assert_eq!(
        (view["media_format"].as_str(), view["media_format_declared"].as_bool()),
        (Some("l16/16000/1"), Some(true))
    );
    let (_, _, wav) = recording(&app, "wide").await;
    assert_eq!(u32_at(&wav, 24), 16000);
    assert_eq!(&wav[44..48], &[0, 1, 2, 3], "l16 passes through");
    // The same again is fine; another is a 409; a malformed one a 400.
    let again = json!({"sequence":2,"data":l16,"timestamp":0.0,"media_format":"l16/16000/1"});
    assert_eq!(post_json(&app, "wide", again).await.0, StatusCode::OK);
    let other = json!({"sequence":3,"data":l16,"timestamp":0.0,"media_format":"mulaw/8000/1"});
    let (status, err) = post_json(&app, "wide", other).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::CONFLICT, Some("format_conflict")));
    let bad = json!({"sequence":3,"data":l16,"timestamp":0.0,"media_format":"mulaw/11025/1"});
    let (status, err) = post_json(&app, "wide", bad).await;
    assert_eq!((status, err["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_media_format")));
    assert!(err["message"].as_str().unwrap().contains("11025"), "{err}");
    // Nothing of the refused packets was stored.
    assert_eq!(app.call("wide").await["ordering"]["received"], 2);
}

#[tokio::test]
async fn a_recording_of_an_unknown_call_is_404() {
    let app = TestApp::new();
    let (status, _, body) = recording(&app, "nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: serde_json::Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(err["error"], "not_found");
}

/// A recording longer than a store page (500 packets) on two tracks, with gaps on both
/// sides of a page boundary: every slot holds its own frame (or silence), in order.
#[tokio::test]
async fn a_long_stereo_recording_streams_across_pages() {
    let app = TestApp::new();
    let frames = 1234u64;
    let missing =
        |channel: u64, seq: u64| (channel == 0 && (seq == 500 || seq == 501)) || (channel == 1 && seq == 1001);
    // A code per (channel, sequence) that never decodes to silence.
    let code = |channel: u64, seq: u64| (1 + (seq * 7 + channel * 3) % 120) as u8;
    for channel in [0u64, 1] {
        let seqs: Vec<u64> = (1..=frames).filter(|&s| !missing(channel, s)).collect();
        for chunk in seqs.chunks(1000) {
            let batch: Vec<serde_json::Value> = chunk
                .iter()
                .map(|&s| json!({"sequence":s,"data":BASE64.encode([code(channel, s); 160]),"timestamp":0.0,"channel":channel}))
                .collect();
            let reply = app.post("/v1/calls/long/packets/batch", &serde_json::Value::from(batch).to_string()).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        }
    }
    let (status, headers, wav) = recording(&app, "long").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(wav.len() as u64, 44 + frames * 160 * 2 * 2);
    assert_eq!(headers.get("content-length").unwrap().to_str().unwrap(), wav.len().to_string());
    for seq in 1..=frames {
        let at = 44 + ((seq - 1) * 160 * 4) as usize;
        let left = i16::from_le_bytes([wav[at], wav[at + 1]]);
        let right = i16::from_le_bytes([wav[at + 2], wav[at + 3]]);
        let expect = |channel| {
            if missing(channel, seq) { 0 } else { pbx_core::media::g711::mulaw_to_linear(code(channel, seq)) }
        };
        assert_eq!((left, right), (expect(0), expect(1)), "slot {seq}");
    }
}
