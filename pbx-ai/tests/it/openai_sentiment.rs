//! `OpenAiSentiment` against a mock `/v1/chat/completions`, and composed with a
//! transcriber through `ComposedAi`.

use std::sync::Arc;

use futures::FutureExt;
use pbx_ai::{
    ApiKey, OpenAiSentiment, OpenAiSentimentConfig, OpenAiTranscriber, OpenAiTranscriberConfig, SYSTEM_PROMPT,
};
use pbx_core::ai::{AiClient, AiErrorKind, ComposedAi, SentimentAnalyzer, SentimentLabel};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::errors::{Suite, openai_error};
use crate::{KEY, audio, call_id, request};

const PATH: &str = "/v1/chat/completions";

fn analyzer(base_url: String, config: OpenAiSentimentConfig) -> OpenAiSentiment {
    OpenAiSentiment::new(OpenAiSentimentConfig { base_url, ..config }).unwrap()
}

fn suite() -> Suite {
    Suite {
        provider: "openai",
        path: PATH,
        call: Arc::new(|base_url, api_key, timeout| {
            async move {
                let a = analyzer(base_url, OpenAiSentimentConfig { api_key, timeout, ..Default::default() });
                a.analyze(&call_id(), KEY, "The line keeps dropping.").await.map(drop)
            }
            .boxed()
        }),
        error_body: openai_error,
        key_optional: true,
        openai: true,
    }
}

crate::error_classes!(suite());

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59},
    })
}

#[tokio::test]
async fn sends_a_strict_json_schema_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("authorization", "Bearer sk-chat"))
        .and(header("idempotency-key", KEY))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(r#"{"label":"NEGATIVE","score":-0.8}"#)))
        .expect(1)
        .mount(&server)
        .await;
    let a = analyzer(
        server.uri(),
        OpenAiSentimentConfig {
            api_key: Some(ApiKey::new("sk-chat")),
            model: "gpt-4.1-mini".into(),
            ..Default::default()
        },
    );
    let s = a.analyze(&call_id(), KEY, "I hate this.").await.unwrap();
    assert_eq!((s.label, s.score), (SentimentLabel::Negative, -0.8));

    let body: Value = server.received_requests().await.unwrap()[0].body_json().unwrap();
    assert_eq!(body["model"], "gpt-4.1-mini");
    assert_eq!(body["messages"][0], json!({"role": "system", "content": SYSTEM_PROMPT}));
    assert_eq!(body["messages"][1], json!({"role": "user", "content": "I hate this."}));
    let format = &body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    assert!(format["json_schema"]["name"].is_string());
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["properties"]["label"]["enum"], json!(["POSITIVE", "NEUTRAL", "NEGATIVE"]));
    assert_eq!(schema["properties"]["score"]["type"], "number");
    assert_eq!(schema["required"], json!(["label", "score"]));
    assert_eq!(schema["additionalProperties"], false);
}

#[tokio::test]
async fn invalid_ratings_are_unparsable_answers() {
    for content in [r#"{"label":"FURIOUS","score":-0.8}"#, r#"{"label":"NEGATIVE","score":-3}"#, "I think negative"] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion(content)))
            .mount(&server)
            .await;
        let e = analyzer(server.uri(), Default::default()).analyze(&call_id(), KEY, "text").await.unwrap_err();
        assert_eq!(e.kind(), AiErrorKind::Unavailable, "{e}");
        assert!(e.message().contains("not a valid sentiment rating"), "{e}");
    }
}

#[tokio::test]
async fn refusals_are_permanent_and_empty_text_is_not_sent() {
    let server = MockServer::start().await;
    let refusal = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                         "refusal": "I'm sorry, I can't assist with that."}, "finish_reason": "stop"}]});
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal))
        .expect(1)
        .mount(&server)
        .await;
    let a = analyzer(server.uri(), Default::default());
    let e = a.analyze(&call_id(), KEY, "text").await.unwrap_err();
    assert_eq!(e.kind(), AiErrorKind::Permanent, "{e}");
    let s = a.analyze(&call_id(), KEY, " ").await.unwrap();
    assert_eq!((s.label, s.score), (SentimentLabel::Neutral, 0.0));
}

/// Rates by keyword, echoing the key it was sent so the test can see per-channel keys.
fn rater(request: &Request) -> ResponseTemplate {
    let body: Value = request.body_json().unwrap();
    let text = body["messages"][1]["content"].as_str().unwrap();
    let rating = if text.contains("dead") && !text.contains("Hello") {
        r#"{"label":"NEGATIVE","score":-0.7}"#
    } else if text.contains("dead") {
        r#"{"label":"NEUTRAL","score":0.0}"#
    } else {
        r#"{"label":"POSITIVE","score":0.6}"#
    };
    ResponseTemplate::new(200).set_body_json(completion(rating))
}

#[tokio::test]
async fn composes_with_the_transcriber_per_channel() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(|r: &Request| {
            let wav = crate::read_wav(&crate::field(&crate::form(r), "file").unwrap().data);
            let text = if wav.samples[0] > 0 { "Hello, happy to help." } else { "My line is dead." };
            ResponseTemplate::new(200).set_body_json(json!({"text": text}))
        })
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path(PATH)).respond_with(rater).mount(&server).await;
    let transcriber = OpenAiTranscriber::new(OpenAiTranscriberConfig {
        base_url: server.uri(),
        model: "gpt-4o-mini-transcribe".into(),
        ..Default::default()
    })
    .unwrap();
    let ai = ComposedAi::new(Arc::new(transcriber), Arc::new(analyzer(server.uri(), Default::default())));
    assert_eq!(ai.describe(), "openai+openai");
    let transcript = ai.transcribe(&request(audio(2, 1.0))).await.unwrap();
    assert_eq!(transcript.text, "Hello, happy to help. My line is dead.");
    let analysis = ai.analyze_sentiment(&call_id(), KEY, &transcript).await.unwrap();
    assert_eq!(analysis.overall.label, SentimentLabel::Neutral);
    let channels: Vec<_> = analysis.channels.iter().map(|c| (c.channel, c.sentiment.label)).collect();
    assert_eq!(channels, [(0, SentimentLabel::Positive), (1, SentimentLabel::Negative)]);
    let keys: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == PATH)
        .map(|r| crate::header(r, "idempotency-key").unwrap().to_owned())
        .collect();
    assert_eq!(keys, [KEY.to_owned(), format!("{KEY}:ch0"), format!("{KEY}:ch1")]);
}
