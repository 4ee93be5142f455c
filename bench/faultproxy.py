"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the emulator, for the chaos
run: point the workers' ``AWS_ENDPOINT_URL`` at it and, for a few seconds at a time,
S3 answers every request with ``503 SlowDown`` or ``500 InternalError`` (as S3 does
under load), before the request reaches the emulator. SQS and SNS requests (they go
to the same endpoint) pass untouched; so does everything outside a fault window.

    proxy = FaultProxy(upstream_port).start(); ...; proxy.fail_s3(503, seconds=3)
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
}
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.until = 0.0
        self.status = 503
        self.failed = 0  # S3 requests answered with a fault
        self.forwarded = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_s3(self, status: int, seconds: float) -> None:
        """Every S3 request fails with ``status`` for the next ``seconds``."""
        with self._lock:
            self.status, self.until = status, time.monotonic() + seconds

    def fault_for(self, method: str, path: str, headers: Any) -> int | None:
        is_sqs_or_sns = "X-Amz-Target" in headers or (method == "POST" and path in ("/", ""))
        with self._lock:
            if is_sqs_or_sns or time.monotonic() >= self.until:
                self.forwarded += 1
                return None
            self.failed += 1
            return self.status


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:  # keep the chunked framing (aws-chunked bodies rely on it): send as is
            line = h.rfile.readline()
            out += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = h.rfile.readline()
                    out += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(out)
            out += h.rfile.read(size + 2)
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n else b""


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _upstream(self) -> http.client.HTTPConnection:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                local.conn = conn
            return conn

        def _relay(self) -> None:
            body = _read_body(self)
            status = proxy.fault_for(self.command, self.path.split("?")[0], self.headers)
            if status is not None:
                code, message = FAULTS[status]
                xml = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                self.wfile.write(xml)
                return
            conn = self._upstream()
            for attempt in (1, 2):
                try:
                    conn.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for k, v in self.headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (http.client.HTTPException, OSError):
                    conn.close()  # a stale keep-alive connection: once more on a new one
                    if attempt == 2:
                        raise
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            length = resp.getheader("Content-Length")
            if self.command == "HEAD":
                self.send_header("Content-Length", length or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler
