//! The OpenAPI document against the server and the README: the README's curl examples
//! and error paragraph name only what the document declares, every 405 carries
//! `Allow`, constraints the core enforces are written down. (schemathesis and a
//! generated client check the rest against the running binary: tools/api-check/run.sh.)

use std::collections::BTreeSet;

use poem::http::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;

const README: &str = include_str!("../../../README.md");

/// Routes the binary serves outside the OpenAPI document.
const OUTSIDE_THE_DOCUMENT: [&str; 3] = ["/metrics", "/docs", "/openapi.json"];

async fn spec() -> Value {
    let app = TestApp::new();
    let reply = app.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

/// The document's path template `path` matches, if any (literal segments win).
fn template_of<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let asked: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter(|template| {
            let segments: Vec<&str> = template.split('/').collect();
            segments.len() == asked.len()
                && segments.iter().zip(&asked).all(|(t, a)| t == a || (t.starts_with('{') && !a.is_empty()))
        })
        .max_by_key(|template| template.split('/').map(|s| !s.starts_with('{')).collect::<Vec<_>>())
        .map(String::as_str)
}

/// Splits a shell command into words, honouring quotes and backslashes.
fn words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None | Some('"'), '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, '\'' | '"') => (quote, in_word) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            (_, c) => (word, in_word) = (word + &c.to_string(), true),
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Every curl command of the README: code-block lines (continuations joined) and
/// inline code spans.
fn readme_curls() -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in README.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let code = line.split(" # ").next().unwrap_or_default();
            if let Some(start) = code.strip_suffix('\\') {
                pending.push_str(start);
                continue;
            }
            pending.push_str(code);
            commands.push(std::mem::take(&mut pending));
        } else {
            commands.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    commands.into_iter().filter(|c| c.trim_start().starts_with("curl ")).collect()
}

/// The method and path a curl command sends.
fn request_of(command: &str) -> (Method, String) {
    let words = words(command);
    let flag = |names: &[&str]| words.iter().position(|w| names.contains(&w.as_str())).map(|i| words[i + 1].clone());
    let data = flag(&["-d", "--data", "--data-raw", "--data-binary"]).is_some();
    let method = match flag(&["-X", "--request"]) {
        Some(m) => m.parse().expect("method"),
        None if data => Method::POST,
        None => Method::GET,
    };
    let url = words.iter().find(|w| w.contains("localhost:") || w.starts_with("http")).expect("a URL");
    let url = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let path = url.split_once('/').map_or("", |(_, p)| p).split('?').next().unwrap_or_default();
    (method, format!("/{path}"))
}

#[tokio::test]
async fn every_readme_curl_names_an_operation_of_the_document() {
    let spec = spec().await;
    let curls = readme_curls();
    assert!(curls.len() >= 10, "found only {} curl examples in README.md: {curls:?}", curls.len());
    for command in &curls {
        let (method, path) = request_of(command);
        if OUTSIDE_THE_DOCUMENT.contains(&path.as_str()) {
            continue;
        }
        let template = template_of(&spec, &path).unwrap_or_else(|| panic!("README: {path} is not in the spec"));
        let operation = &spec["paths"][template][method.as_str().to_ascii_lowercase()];
        assert!(operation.is_object(), "README: {method} {path} ({template}) is not an operation of the spec");
    }
}

#[test]
fn curl_commands_are_read_as_curl_sends_them() {
    assert_eq!(
        request_of("curl -s -X POST localhost:8000/ingest/call-1 -H 'content-type: application/json' -d '{}'"),
        (Method::POST, "/ingest/call-1".into())
    );
    assert_eq!(
        request_of("curl -s 'localhost:8000/v1/calls?state=FAILED&limit=50'"),
        (Method::GET, "/v1/calls".into())
    );
    assert_eq!(request_of("curl -d \"{\\\"a\\\": 1}\" http://h:1/x"), (Method::POST, "/x".into()));
    assert_eq!(request_of("curl -N localhost:8000/v1/events"), (Method::GET, "/v1/events".into()));
}

/// The README's error paragraph names exactly the error statuses the document declares
/// (and 405, which answers the methods no operation takes).
#[tokio::test]
async fn the_readme_error_paragraph_names_every_declared_status() {
    let spec = spec().await;
    let declared: BTreeSet<u16> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .flat_map(|op| op["responses"].as_object().unwrap().keys())
        .filter_map(|status| status.parse::<u16>().ok())
        .filter(|status| *status >= 400)
        .collect();
    let start = README.find("Errors are JSON").expect("README: the error paragraph");
    let paragraph = README[start..].split("\n\n").next().unwrap();
    let named: BTreeSet<u16> = paragraph
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| n.len() == 3 && (n.starts_with('4') || n.starts_with('5')))
        .map(|n| n.parse().unwrap())
        .filter(|status| *status != 405)
        .collect();
    assert_eq!(named, declared, "README's error paragraph vs the spec:\n{paragraph}");
}

/// Every error answer is declared as `{"error", "message"}`; a 503 with `Retry-After`.
#[tokio::test]
async fn every_error_response_is_an_error_body() {
    let spec = spec().await;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    continue;
                }
                let schema = &response["content"]["application/json; charset=utf-8"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                if status == "503" {
                    assert!(response["headers"]["RETRY-AFTER"]["required"] == true, "{method} {path} 503");
                }
            }
        }
    }
    let body = &spec["components"]["schemas"]["ErrorBody"];
    assert_eq!(body["required"], serde_json::json!(["error", "message"]));
}

/// A method a path does not take is a 405 with `Allow` naming the ones it does.
#[tokio::test]
async fn every_405_says_what_is_allowed() {
    let spec = spec().await;
    let app = TestApp::new();
    for (template, ops) in spec["paths"].as_object().unwrap() {
        let path = template.replace("{call_id}", "c1");
        let mut allowed: Vec<String> = ops.as_object().unwrap().keys().map(|m| m.to_ascii_uppercase()).collect();
        if allowed.contains(&"GET".to_owned()) {
            allowed.push("HEAD".into());
        }
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::TRACE] {
            if allowed.contains(&method.to_string()) {
                continue;
            }
            let resp = app.client.request(method.clone(), &path).send().await;
            assert_eq!(resp.0.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let allow = resp.0.headers().get("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow"));
            assert_eq!(allow.to_str().unwrap(), allowed.join(", "), "{method} {path}");
            let body: Value = serde_json::from_str(&resp.0.into_body().into_string().await.unwrap()).unwrap();
            assert_eq!(body["error"], "method_not_allowed");
        }
    }
}

/// What pbx-core enforces is written in the schema.
#[tokio::test]
async fn enforced_constraints_are_in_the_schema() {
    let spec = spec().await;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["name"] == "call_id" {
                    let schema = &param["schema"];
                    assert_eq!(schema["pattern"], "^[A-Za-z0-9._:-]+$", "{method} {path}");
                    assert_eq!((schema["minLength"].as_u64(), schema["maxLength"].as_u64()), (Some(1), Some(128)));
                }
            }
        }
    }
    let packet = &spec["components"]["schemas"]["PacketIn"]["properties"];
    assert_eq!(packet["sequence"]["minimum"], 1.0);
    assert_eq!(packet["timestamp"]["minimum"], 0.0);
    assert_eq!((packet["channel"]["minimum"].as_f64(), packet["channel"]["maximum"].as_f64()), (Some(0.0), Some(1.0)));
    assert!(packet["media_format"]["pattern"].as_str().unwrap().contains("mulaw"));
    let list = spec["paths"]["/v1/calls"]["get"]["parameters"].as_array().unwrap();
    let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!((limit["schema"]["minimum"].as_f64(), limit["schema"]["maximum"].as_f64()), (Some(1.0), Some(1000.0)));
    // What a call view sends as null is nullable.
    let view = &spec["components"]["schemas"]["CallView"]["properties"];
    for field in ["next_attempt_at", "lease", "last_error", "transcript", "sentiment", "audio", "completed_at"] {
        assert_eq!(view[field]["nullable"], true, "CallView.{field}");
    }
    assert_eq!(spec["components"]["schemas"]["CallPageView"]["properties"]["next_cursor"]["nullable"], true);
}

/// The values pbx-core refuses are outside the schema: the server answers 400 where the
/// schema says so, and accepts the edges the schema allows.
#[tokio::test]
async fn the_schema_edges_are_the_server_edges() {
    let app = TestApp::new();
    let ok = |seq: &str, ts: &str, channel: &str| {
        format!(r#"{{"sequence":{seq},"data":"x","timestamp":{ts},"channel":{channel}}}"#)
    };
    let max_id = "a".repeat(128);
    for (path, body, status) in [
        (format!("/ingest/{max_id}"), ok("1", "0", "0"), StatusCode::OK),
        ("/ingest/e1".into(), ok("9223372036854775807", "0", "1"), StatusCode::OK),
        ("/ingest/e2".into(), ok("1", "0", "null"), StatusCode::OK),
        ("/ingest/e3".into(), ok("0", "0", "0"), StatusCode::BAD_REQUEST),
        ("/ingest/e4".into(), ok("1", "-0.5", "0"), StatusCode::BAD_REQUEST),
        ("/ingest/e5".into(), ok("1", "0", "2"), StatusCode::BAD_REQUEST),
        (format!("/ingest/{max_id}a"), ok("1", "0", "0"), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(app.post(&path, &body).await.status, status, "{path} {body}");
    }
    for (query, status) in [
        ("limit=1", StatusCode::OK),
        ("limit=1000", StatusCode::OK),
        ("limit=0", StatusCode::BAD_REQUEST),
        ("limit=1001", StatusCode::BAD_REQUEST),
        ("state=&cursor=", StatusCode::OK),
        ("state=ARCHIVED", StatusCode::OK),
        ("state=archived", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(app.get(&format!("/v1/calls?{query}")).await.status, status, "{query}");
    }
}

/// No `allOf` member only repeats its parent (openapi-python-client drops such models).
#[tokio::test]
async fn no_schema_repeats_itself_in_all_of() {
    fn walk(value: &Value, at: &str) {
        match value {
            Value::Object(schema) => {
                for member in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
                    let Some(entries) = member.as_object() else { continue };
                    let repeats =
                        !entries.contains_key("$ref") && entries.iter().all(|(k, v)| schema.get(k) == Some(v));
                    assert!(!repeats, "{at}: {member}");
                }
                schema.iter().for_each(|(k, v)| walk(v, &format!("{at}/{k}")));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, at)),
            _ => {}
        }
    }
    walk(&spec().await, "#");
}
