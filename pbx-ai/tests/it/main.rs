//! pbx-ai's integration tests, one binary: contract tests against a local mock server
//! (the exact request, every error class), VADER, and one end-to-end run against the
//! real local Whisper server (`PBX_WHISPER_TESTS=1`).

mod deepgram;
mod errors;
mod openai_sentiment;
mod openai_transcriber;
mod vader;
mod whisper;

use std::sync::Arc;

use pbx_core::CallId;
use pbx_core::ai::TranscriptionRequest;
use pbx_core::media::{MediaFormat, PcmAudio};
use wiremock::Request;

/// The call every test transcribes.
pub(crate) const CALL: &str = "CA-test-1";
/// Its attempt number.
pub(crate) const ATTEMPT: u32 = 3;
/// `<call>:<attempt>`.
pub(crate) const KEY: &str = "CA-test-1:3";

pub(crate) fn call_id() -> CallId {
    CALL.parse().unwrap()
}

/// `seconds` of 8 kHz audio in 20 ms frames, each channel a distinct ramp so a test
/// can tell channels and positions apart.
pub(crate) fn audio(channels: u8, seconds: f64) -> PcmAudio {
    let frames = (8000.0 * seconds) as usize;
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        for c in 0..channels {
            let base = if c == 0 { 1 } else { -1 };
            samples.push(base * ((i % 30_000) as i16 + 1));
        }
    }
    PcmAudio { sample_rate: 8000, channels, frame_samples: 160, samples, stats: Default::default() }
}

pub(crate) fn request(audio: PcmAudio) -> TranscriptionRequest {
    let format = MediaFormat::TELEPHONY.with_channels(audio.channels).unwrap();
    TranscriptionRequest { call_id: call_id(), attempt: ATTEMPT, source_format: format, audio: Arc::new(audio) }
}

/// A base URL where nothing listens: a port bound, then released.
pub(crate) fn refused_base_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

pub(crate) fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub(crate) struct FormPart {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) data: Vec<u8>,
}

impl FormPart {
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.data).unwrap()
    }
}

/// The parts of a multipart request (a small parser: enough for reqwest's bodies).
pub(crate) fn form(request: &Request) -> Vec<FormPart> {
    let content_type = header(request, "content-type").expect("content-type");
    let boundary = content_type.split("boundary=").nth(1).expect("multipart boundary").trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &request.body;
    let mut parts = Vec::new();
    let positions: Vec<usize> = find_all(body, delimiter.as_bytes());
    for pair in positions.windows(2) {
        let chunk = &body[pair[0] + delimiter.len()..pair[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let split = find_all(chunk, b"\r\n\r\n")[0];
        let head = std::str::from_utf8(&chunk[..split]).unwrap();
        let data = chunk[split + 4..].to_vec();
        let mut part = FormPart { name: String::new(), filename: None, content_type: None, data };
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                part.name = attribute(line, "name").unwrap_or_default();
                part.filename = attribute(line, "filename");
            } else if lower.starts_with("content-type:") {
                part.content_type = Some(line["content-type:".len()..].trim().to_owned());
            }
        }
        parts.push(part);
    }
    parts
}

pub(crate) fn field<'a>(parts: &'a [FormPart], name: &str) -> Option<&'a FormPart> {
    parts.iter().find(|p| p.name == name)
}

fn attribute(line: &str, name: &str) -> Option<String> {
    let needle = format!("; {name}=\"");
    let start = line.find(&needle)? + needle.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

/// A PCM16 WAV's format and samples (the canonical 44-byte header, or any chunk
/// layout with `fmt ` before `data`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wav {
    pub(crate) sample_rate: u32,
    pub(crate) channels: u16,
    pub(crate) samples: Vec<i16>,
}

pub(crate) fn read_wav(bytes: &[u8]) -> Wav {
    assert_eq!(&bytes[0..4], b"RIFF", "not a RIFF file");
    assert_eq!(&bytes[8..12], b"WAVE", "not a WAVE file");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (mut pos, mut format) = (12, None);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            assert_eq!(u16_at(body), 1, "not PCM");
            assert_eq!(u16_at(body + 14), 16, "not 16-bit");
            format = Some((u16_at(body + 2), u32_at(body + 4)));
        } else if id == b"data" {
            let (channels, sample_rate) = format.expect("fmt before data");
            let end = (body + len).min(bytes.len());
            let samples = bytes[body..end].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
            return Wav { sample_rate, channels, samples };
        }
        pos = body + len + (len & 1);
    }
    panic!("no data chunk");
}
