"""A model server that takes a fixed time per call and serves one call at a time:
the shape of a Lambda or SAS container in front of a remote or GPU model (issue 25).

    python bench/fixed_model.py --port N [--seconds 0.02]

The SageMaker contract: ``GET /ping``; ``POST /invocations`` (CSV with a header line)
sleeps ``--seconds`` and answers one score per data row (``0.5``). One call at a
time: a second call waits until the first is answered, as in a single-concurrency
container.
Standard library only.
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: one call at a time: connections are served side by side (keep-alive from several
#: clients), calls in turn, as a single-concurrency container queues them
TURN = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seconds = 0.02

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200 if self.path == "/ping" else 404, b"ok", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with TURN:
            time.sleep(self.seconds)
        rows = body.count(b"\n") - 1  # the header line
        self._send(200, b"0.5\n" * rows, "text/csv")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--seconds", type=float, default=0.02)
    a = ap.parse_args()
    Handler.seconds = a.seconds
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
