//! `OpenAiTranscriber` against a mock `/v1/audio/transcriptions`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use pbx_ai::{ApiKey, OpenAiTranscriber, OpenAiTranscriberConfig, ResponseFormat};
use pbx_core::ai::{Segment, Transcriber};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::errors::{Suite, openai_error};
use crate::{ATTEMPT, CALL, KEY, audio, field, form, read_wav, request};

const PATH: &str = "/v1/audio/transcriptions";

fn transcriber(base_url: String, config: OpenAiTranscriberConfig) -> OpenAiTranscriber {
    OpenAiTranscriber::new(OpenAiTranscriberConfig { base_url, ..config }).unwrap()
}

fn suite() -> Suite {
    Suite {
        provider: "openai",
        path: PATH,
        call: Arc::new(|base_url, api_key, timeout| {
            async move {
                let t = transcriber(base_url, OpenAiTranscriberConfig { api_key, timeout, ..Default::default() });
                t.transcribe(&request(audio(1, 0.5))).await.map(drop)
            }
            .boxed()
        }),
        error_body: openai_error,
        key_optional: true,
        openai: true,
    }
}

crate::error_classes!(suite());

fn verbose(text: &str, segments: &[(f64, f64, &str)]) -> serde_json::Value {
    let segments: Vec<_> = segments
        .iter()
        .enumerate()
        .map(|(id, (start, end, text))| {
            json!({"id": id, "seek": 0, "start": start, "end": end, "text": text, "tokens": [1, 2],
                   "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01})
        })
        .collect();
    json!({"task": "transcribe", "language": "english", "duration": 1.0, "text": text, "segments": segments})
}

fn seg(start: f64, end: f64, text: &str, channel: Option<u8>) -> Segment {
    Segment { start, end, text: text.into(), channel }
}

#[tokio::test]
async fn sends_the_documented_request_and_reads_verbose_json() {
    let server = MockServer::start().await;
    let answer = verbose(" All circuits are busy now.", &[(0.0, 1.2, " All circuits"), (1.2, 2.3, " are busy now.")]);
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("authorization", "Bearer sk-test-1"))
        .and(header("idempotency-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&server)
        .await;
    let config = OpenAiTranscriberConfig {
        model: "whisper-1".into(),
        api_key: Some(ApiKey::new("sk-test-1")),
        language: Some("en".into()),
        prompt: Some("Acme Telecom".into()),
        temperature: Some(0.2),
        ..Default::default()
    };
    let t = transcriber(server.uri(), config);
    let input = audio(1, 2.0);
    let transcript = t.transcribe(&request(input.clone())).await.unwrap();

    assert_eq!(transcript.text, "All circuits are busy now.");
    assert_eq!(transcript.segments, [seg(0.0, 1.2, "All circuits", None), seg(1.2, 2.0, "are busy now.", None)]);
    assert_eq!(transcript.sentiment, None);

    let requests = server.received_requests().await.unwrap();
    let r = &requests[0];
    assert!(crate::header(r, "content-type").unwrap().starts_with("multipart/form-data; boundary="));
    let parts = form(r);
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["file", "model", "response_format", "language", "prompt", "temperature"]);
    let file = field(&parts, "file").unwrap();
    assert_eq!(file.filename.as_deref(), Some(format!("{CALL}.wav").as_str()));
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
    let wav = read_wav(&file.data);
    assert_eq!((wav.sample_rate, wav.channels), (8000, 1));
    assert_eq!(wav.samples, input.samples, "the call's PCM, unchanged");
    assert_eq!(file.data, pbx_core::media::wav_bytes(&input).unwrap());
    assert_eq!(field(&parts, "model").unwrap().text(), "whisper-1");
    assert_eq!(field(&parts, "response_format").unwrap().text(), "verbose_json");
    assert_eq!(field(&parts, "language").unwrap().text(), "en");
    assert_eq!(field(&parts, "prompt").unwrap().text(), "Acme Telecom");
    assert_eq!(field(&parts, "temperature").unwrap().text(), "0.2");
}

#[tokio::test]
async fn repeats_rebuild_the_request_with_the_same_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(verbose("hi", &[(0.0, 0.5, "hi")])))
        .expect(3)
        .mount(&server)
        .await;
    let t = transcriber(server.uri(), OpenAiTranscriberConfig::default());
    let req = request(audio(1, 0.5));
    t.transcribe(&req).await.unwrap();
    t.transcribe(&req).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].body.len(), requests[1].body.len());
    for r in &requests {
        assert_eq!(crate::header(r, "idempotency-key"), Some(KEY));
        assert!(crate::header(r, "authorization").is_none());
        assert_eq!(read_wav(&field(&form(r), "file").unwrap().data).samples.len(), 4000);
    }
    // Another attempt of the same call: another key.
    let mut next = req.clone();
    next.attempt = ATTEMPT + 1;
    t.transcribe(&next).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(crate::header(&requests[2], "idempotency-key"), Some(format!("{CALL}:{}", ATTEMPT + 1).as_str()));
}

#[tokio::test]
async fn gpt_4o_models_ask_for_json_and_get_one_untimed_segment() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"text": "Hello, how can I help?", "usage": {"type": "tokens", "total_tokens": 9}}),
            ),
        )
        .mount(&server)
        .await;
    let t =
        transcriber(server.uri(), OpenAiTranscriberConfig { model: "gpt-4o-transcribe".into(), ..Default::default() });
    assert_eq!(t.response_format(), ResponseFormat::Json);
    let transcript = t.transcribe(&request(audio(1, 1.5))).await.unwrap();
    assert_eq!(transcript.text, "Hello, how can I help?");
    assert_eq!(transcript.segments, [seg(0.0, 1.5, "Hello, how can I help?", None)]);
    let parts = form(&server.received_requests().await.unwrap()[0]);
    assert_eq!(field(&parts, "response_format").unwrap().text(), "json");
    assert_eq!(field(&parts, "model").unwrap().text(), "gpt-4o-transcribe");
    assert!(field(&parts, "language").is_none() && field(&parts, "prompt").is_none());
    assert!(field(&parts, "temperature").is_none());
}

#[tokio::test]
async fn empty_audio_is_not_sent() {
    let t = transcriber(crate::refused_base_url(), OpenAiTranscriberConfig::default());
    let transcript = t.transcribe(&request(audio(1, 0.0))).await.unwrap();
    assert_eq!(transcript, Default::default());
}

/// Answers each piece with `part<i>` at 0.1 .. 0.2 s, `i` read from its key.
fn piece_responder(request: &Request) -> ResponseTemplate {
    let key = crate::header(request, "idempotency-key").unwrap();
    let part = key.rsplit(":part").next().unwrap();
    let text = format!("part{part}");
    ResponseTemplate::new(200).set_body_json(verbose(&text, &[(0.1, 0.2, &text)]))
}

#[tokio::test]
async fn long_calls_are_split_at_frame_boundaries() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(PATH)).respond_with(piece_responder).mount(&server).await;
    let max = 8192;
    let t = transcriber(server.uri(), OpenAiTranscriberConfig { max_upload_bytes: max, ..Default::default() });
    let input = audio(1, 1.0); // 16 000 bytes of samples: does not fit in 8 KiB
    let transcript = t.transcribe(&request(input.clone())).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    let mut joined = Vec::new();
    let mut offsets = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        assert!(r.body.len() <= max, "request {i}: {} bytes > {max}", r.body.len());
        assert_eq!(crate::header(r, "idempotency-key"), Some(format!("{KEY}:part{i}").as_str()));
        let wav = read_wav(&field(&form(r), "file").unwrap().data);
        if i + 1 < requests.len() {
            assert_eq!(wav.samples.len() % 160, 0, "piece {i} ends on a frame boundary");
        }
        offsets.push(joined.len() as f64 / 8000.0);
        joined.extend(wav.samples);
    }
    assert_eq!(joined, input.samples, "the pieces are the call, in order");

    let expected: Vec<Segment> =
        offsets.iter().enumerate().map(|(i, o)| seg(o + 0.1, o + 0.2, &format!("part{i}"), None)).collect();
    assert_eq!(transcript.segments, expected);
    let text: Vec<String> = (0..requests.len()).map(|i| format!("part{i}")).collect();
    assert_eq!(transcript.text, text.join(" "));
}

/// Tells the channels apart by their samples (channel 0 is positive, 1 negative).
fn channel_responder(request: &Request) -> ResponseTemplate {
    let wav = read_wav(&field(&form(request), "file").unwrap().data);
    assert_eq!(wav.channels, 1, "one channel per request");
    let key = crate::header(request, "idempotency-key").unwrap();
    let body = if wav.samples[0] > 0 {
        assert_eq!(key, format!("{KEY}:ch0"));
        verbose(
            "Hello, thanks for calling. Bye now.",
            &[(0.0, 0.5, " Hello, thanks for calling."), (1.0, 1.4, " Bye now.")],
        )
    } else {
        assert_eq!(key, format!("{KEY}:ch1"));
        verbose("My line is dead.", &[(0.6, 0.9, " My line is dead.")])
    };
    ResponseTemplate::new(200).set_body_json(body)
}

#[tokio::test]
async fn stereo_calls_are_sent_per_channel_and_merged_by_time() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(PATH)).respond_with(channel_responder).expect(2).mount(&server).await;
    let t = transcriber(server.uri(), OpenAiTranscriberConfig::default());
    let input = audio(2, 1.5);
    let transcript = t.transcribe(&request(input.clone())).await.unwrap();
    assert_eq!(
        transcript.segments,
        [
            seg(0.0, 0.5, "Hello, thanks for calling.", Some(0)),
            seg(0.6, 0.9, "My line is dead.", Some(1)),
            seg(1.0, 1.4, "Bye now.", Some(0)),
        ]
    );
    assert_eq!(transcript.text, "Hello, thanks for calling. My line is dead. Bye now.");
    assert_eq!(transcript.channels(), [0, 1]);
    let mut uploaded: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| read_wav(&field(&form(r), "file").unwrap().data).samples)
        .collect();
    uploaded.sort_by_key(|s| std::cmp::Reverse(s[0]));
    assert_eq!(uploaded, [input.channel(0), input.channel(1)]);
}

#[tokio::test]
async fn stereo_long_calls_split_each_channel() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path(PATH)).respond_with(piece_responder).mount(&server).await;
    let t = transcriber(server.uri(), OpenAiTranscriberConfig { max_upload_bytes: 8192, ..Default::default() });
    let transcript = t.transcribe(&request(audio(2, 1.0))).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    let mut keys: Vec<String> =
        requests.iter().map(|r| crate::header(r, "idempotency-key").unwrap().to_owned()).collect();
    keys.sort();
    let per_channel = requests.len() / 2;
    let mut expected: Vec<String> =
        (0..2).flat_map(|c| (0..per_channel).map(move |i| format!("{KEY}:ch{c}:part{i}"))).collect();
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(transcript.segments.len(), requests.len());
    // Merged by start: the two channels' pieces alternate, channel 0 first.
    let channels: Vec<Option<u8>> = transcript.segments.iter().map(|s| s.channel).collect();
    assert_eq!(channels[..4], [Some(0), Some(1), Some(0), Some(1)]);
    assert!(transcript.segments.windows(2).all(|w| w[0].start <= w[1].start));
}

#[tokio::test]
async fn segments_without_times_or_text_are_handled() {
    let server = MockServer::start().await;
    // A self-hosted server that ignores verbose_json, then one with blank segments.
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"text": " just text "})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(verbose("", &[(0.0, 1.0, "  ")])))
        .mount(&server)
        .await;
    let t =
        transcriber(server.uri(), OpenAiTranscriberConfig { timeout: Duration::from_secs(5), ..Default::default() });
    let transcript = t.transcribe(&request(audio(1, 1.0))).await.unwrap();
    assert_eq!(transcript.text, "just text");
    assert_eq!(transcript.segments, [seg(0.0, 1.0, "just text", None)]);
    let silent = t.transcribe(&request(audio(1, 1.0))).await.unwrap();
    assert_eq!((silent.text.as_str(), silent.segments.len()), ("", 0));
}
