//! `DeepgramAi` against a mock `/v1/listen`.

use std::sync::Arc;

use futures::FutureExt;
use pbx_ai::{ApiKey, DeepgramAi, DeepgramConfig};
use pbx_core::ai::{Segment, SentimentLabel, Transcriber};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::errors::{Suite, deepgram_error};
use crate::{KEY, audio, request};

const PATH: &str = "/v1/listen";

fn deepgram(base_url: String, config: DeepgramConfig) -> DeepgramAi {
    DeepgramAi::new(DeepgramConfig { base_url, api_key: config.api_key.or(Some(ApiKey::new("dg-key"))), ..config })
        .unwrap()
}

fn suite() -> Suite {
    Suite {
        provider: "deepgram",
        path: PATH,
        call: Arc::new(|base_url, api_key, timeout| {
            async move {
                let dg = deepgram(base_url, DeepgramConfig { api_key, timeout, ..Default::default() });
                dg.transcribe(&request(audio(1, 0.5))).await.map(drop)
            }
            .boxed()
        }),
        error_body: deepgram_error,
        key_optional: false,
        openai: false,
    }
}

crate::error_classes!(suite());

fn utterance(start: f64, end: f64, channel: u8, transcript: &str, score: Option<f64>) -> Value {
    let mut u = json!({"start": start, "end": end, "confidence": 0.98, "channel": channel,
                       "transcript": transcript, "words": [], "id": "u-1"});
    if let Some(score) = score {
        let label = if score >= 0.333 {
            "positive"
        } else if score <= -0.333 {
            "negative"
        } else {
            "neutral"
        };
        u["sentiment"] = json!(label);
        u["sentiment_score"] = json!(score);
    }
    u
}

fn answer(channels: &[&str], utterances: Vec<Value>, average: Option<(&str, f64)>) -> Value {
    let channels: Vec<Value> = channels
        .iter()
        .map(|t| json!({"alternatives": [{"transcript": t, "confidence": 0.99, "words": []}]}))
        .collect();
    let mut results = json!({"channels": channels, "utterances": utterances});
    if let Some((sentiment, score)) = average {
        results["sentiments"] = json!({
            "segments": [{"text": "x", "start_word": 0, "end_word": 3, "sentiment": sentiment, "sentiment_score": score}],
            "average": {"sentiment": sentiment, "sentiment_score": score},
        });
    }
    json!({"metadata": {"request_id": "req-1", "duration": 2.0, "channels": channels.len()}, "results": results})
}

fn seg(start: f64, end: f64, text: &str, channel: Option<u8>) -> Segment {
    Segment { start, end, text: text.into(), channel }
}

#[tokio::test]
async fn sends_the_documented_request_and_reads_utterances_and_sentiment() {
    let server = MockServer::start().await;
    let body = answer(
        &["I am furious. Nothing works."],
        vec![utterance(0.1, 0.9, 0, "I am furious.", Some(-0.8)), utterance(1.0, 1.8, 0, "Nothing works.", Some(-0.5))],
        Some(("negative", -0.65)),
    );
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(query_param("model", "nova-3"))
        .and(query_param("punctuate", "true"))
        .and(query_param("utterances", "true"))
        .and(query_param("sentiment", "true"))
        .and(query_param_is_missing("multichannel"))
        .and(query_param_is_missing("language"))
        .and(header("authorization", "Token dg-secret"))
        .and(header("content-type", "audio/wav"))
        .and(header("idempotency-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    let dg = deepgram(server.uri(), DeepgramConfig { api_key: Some(ApiKey::new("dg-secret")), ..Default::default() });
    let input = audio(1, 2.0);
    let transcript = dg.transcribe(&request(input.clone())).await.unwrap();
    assert_eq!(transcript.text, "I am furious. Nothing works.");
    assert_eq!(transcript.segments, [seg(0.1, 0.9, "I am furious.", None), seg(1.0, 1.8, "Nothing works.", None)]);
    let sentiment = transcript.sentiment.expect("Deepgram's sentiment");
    assert_eq!((sentiment.overall.label, sentiment.overall.score), (SentimentLabel::Negative, -0.65));
    assert!(sentiment.channels.is_empty());
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].body, pbx_core::media::wav_bytes(&input).unwrap(), "the body is the call's WAV");
}

#[tokio::test]
async fn stereo_asks_multichannel_and_tags_channels() {
    let server = MockServer::start().await;
    let body = answer(
        &["Thank you for calling. Happy to help.", "This is awful."],
        vec![
            utterance(1.5, 2.0, 0, "Happy to help.", Some(0.9)),
            utterance(0.0, 1.0, 0, "Thank you for calling.", Some(0.7)),
            utterance(0.5, 1.2, 1, "This is awful.", Some(-0.9)),
        ],
        Some(("neutral", 0.1)),
    );
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(query_param("multichannel", "true"))
        .and(query_param("language", "en-US"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    let dg = deepgram(server.uri(), DeepgramConfig { language: Some("en-US".into()), ..Default::default() });
    let input = audio(2, 2.0);
    let transcript = dg.transcribe(&request(input.clone())).await.unwrap();
    assert_eq!(
        transcript.segments,
        [
            seg(0.0, 1.0, "Thank you for calling.", Some(0)),
            seg(0.5, 1.2, "This is awful.", Some(1)),
            seg(1.5, 2.0, "Happy to help.", Some(0)),
        ]
    );
    assert_eq!(transcript.text, "Thank you for calling. This is awful. Happy to help.");
    let sentiment = transcript.sentiment.unwrap();
    assert_eq!(sentiment.overall.label, SentimentLabel::Neutral);
    let by_channel: Vec<(u8, SentimentLabel)> =
        sentiment.channels.iter().map(|c| (c.channel, c.sentiment.label)).collect();
    assert_eq!(by_channel, [(0, SentimentLabel::Positive), (1, SentimentLabel::Negative)]);
    // Channel 0: (0.7 * 1.0 + 0.9 * 0.5) / 1.5, weighted by duration.
    assert!((sentiment.channels[0].sentiment.score - (0.7 + 0.45) / 1.5).abs() < 1e-9);
    let wav = crate::read_wav(&server.received_requests().await.unwrap()[0].body);
    assert_eq!((wav.channels, wav.samples), (2, input.samples), "one interleaved stereo upload");
}

#[tokio::test]
async fn no_sentiment_for_other_languages_and_channel_fallback() {
    let server = MockServer::start().await;
    // No utterances and no sentiment in the answer: one segment per channel.
    let body = json!({"metadata": {}, "results": {"channels": [{"alternatives": [{"transcript": "Guten Tag."}]}]}});
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(query_param("language", "de"))
        .and(query_param_is_missing("sentiment"))
        .and(query_param("model", "nova-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&server)
        .await;
    let dg = deepgram(
        server.uri(),
        DeepgramConfig { model: "nova-2".into(), language: Some("de".into()), ..Default::default() },
    );
    let transcript = dg.transcribe(&request(audio(1, 1.5))).await.unwrap();
    assert_eq!(transcript.text, "Guten Tag.");
    assert_eq!(transcript.segments, [seg(0.0, 1.5, "Guten Tag.", None)]);
    assert_eq!(transcript.sentiment, None);
}

#[tokio::test]
async fn invalid_sentiment_is_an_unparsable_answer() {
    let server = MockServer::start().await;
    let body = answer(&["hm"], vec![], Some(("ecstatic", 0.5)));
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let dg = deepgram(server.uri(), DeepgramConfig::default());
    let e = dg.transcribe(&request(audio(1, 0.5))).await.unwrap_err();
    assert!(e.is_retryable() && e.message().contains("ecstatic"), "{e}");
}
