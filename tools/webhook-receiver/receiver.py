"""A webhook receiver for pbx's tests: verifies every request with the PyPI
`standardwebhooks` package (not pbx's code) and records it.

    receiver.py --secret whsec_... [--secret whsec_...] [--fail-first N] [--status CODE]
                [--port P] [--location URL]

Listens on 127.0.0.1 (port P, default a free one), prints `listening <port>` on stdout, then one JSON
line per request on stdout:
    {"n": 1, "answered": 503, "webhook_id": "...", "verified": [true, false], "body": {...}}
`verified[i]` says whether secret i verifies the request (each one alone, as a receiver
that holds only that secret would). The first N requests are answered 503 with
`Retry-After: 0`; the rest with --status (default 204). Stops on stdin EOF.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

args_parser = argparse.ArgumentParser()
args_parser.add_argument("--secret", action="append", required=True)
args_parser.add_argument("--fail-first", type=int, default=0)
args_parser.add_argument("--status", type=int, default=204)
args_parser.add_argument("--port", type=int, default=0)
args_parser.add_argument("--location", help="a Location header to send (with a 3xx --status)")
args = args_parser.parse_args()
hooks = [Webhook(s) for s in args.secret]
lock = threading.Lock()
count = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        headers = {k: v for k, v in self.headers.items()}
        verified = []
        for hook in hooks:
            try:
                hook.verify(body, headers)
                verified.append(True)
            except WebhookVerificationError:
                verified.append(False)
        with lock:
            count += 1
            n = count
            status = 503 if n <= args.fail_first else args.status
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "0")
            if args.location:
                self.send_header("Location", args.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body
            record = {
                "n": n,
                "path": self.path,
                "answered": status,
                "webhook_id": self.headers.get("webhook-id"),
                "content_type": self.headers.get("Content-Type"),
                "verified": verified,
                "body": parsed,
            }
            print(json.dumps(record), flush=True)

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print(f"listening {server.server_address[1]}", flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
