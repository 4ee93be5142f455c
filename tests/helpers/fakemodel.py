"""A misbehaving model server for tests (stdlib only, starts in ~50 ms).

    python tests/helpers/fakemodel.py --port N --mode MODE

Modes:
  ok          one result row per input row: "<row number>,<field count>"
  crash       prints a line with a planted secret and exits 3 before listening
  fail-once   answers HTTP 500 to the first /invocations, then behaves like ok
  fail-n      answers HTTP 503 (busy) to the first --fails /invocations, then like ok
  raise       a model with a bug: HTTP 500 with its Python traceback, every time
  few-rows    answers one row fewer than it was sent
  never-ready listens, but /ping always answers 503
  leak400     answers HTTP 400 with credentials in the body
  refuse      answers like hash, but HTTP 400 for any mini-batch with a field "BAD"
              (naming the first such row of the request), as a model refuses a value;
              with --delay, that long per 1,000 rows it scores
  slow        like ok, but sleeps --delay seconds per request
  json        like ok, but answers {"predictions": [...]} as JSON
  hash        one row per input row: "<12 hex of sha1(row)>,<field count>" (the same
              whatever the batching; honours --delay)
  drip        like ok, but sends its answer one byte every --delay seconds (a model
              that holds a mini-batch far longer than any one socket timeout)

--log FILE (hash and refuse): appends "<first field of the first row> <rows>" for
each mini-batch it scores, so a test can count the rows scored per file (issue 26:
rows scored twice after a worker dies).

--only-first PATH: of several processes started with the same PATH, the first to
create it runs its mode; every other one crashes at start (exit 4) with a log line
naming its port (one replica of a file that fails to start).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"calls": 0}
#: Credentials a careless model writes to its output (the tests check they never
#: reach an .error file or a log line).
LEAKED_KEY_ID = "AKIAQWERTYUIOPASDFGH"
LEAKED_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzzPLANTED"
LOCK = threading.Lock()
#: What the "raise" model answers (as FastAPI's debug mode or a Flask error handler does).
TRACEBACK = b"""Traceback (most recent call last):
  File "/opt/model/app.py", line 31, in invocations
    features = [float(v) for v in row]
ValueError: could not convert string to float: ''
"""


def records(body: bytes) -> list[list[str]]:
    """The CSV records of a request (quoted newlines respected), header dropped."""
    rows = [r for r in csv.reader(io.StringIO(body.decode("utf-8"), newline="")) if r]
    if rows and rows[0] and not rows[0][0][:1].isdigit() and rows[0][0][:1] not in ("-", "."):
        rows = rows[1:]  # header
    return rows


def hash_row(fields: list[str]) -> bytes:
    """The 'hash' model's answer for one input record."""
    digest = hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:12]
    return f"{digest},{len(fields)}\n".encode()


class Handler(BaseHTTPRequestHandler):
    mode = "ok"
    delay = 0.0
    fails = 0
    log_path = ""

    def _scored(self, rows: list[list[str]]) -> None:
        if self.log_path and rows:
            with LOCK, open(self.log_path, "a") as f:
                f.write(f"{rows[0][0]} {len(rows)}\n")

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("fakemodel: " + (format % args) + "\n")

    def _send(self, status: int, body: bytes, ctype: str = "text/csv") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/ping":
            self._send(404, b"not found", "text/plain")
        elif self.mode == "never-ready":
            self._send(503, b"warming up forever", "text/plain")
        else:
            self._send(200, b"ok", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with LOCK:
            STATE["calls"] += 1
            calls = STATE["calls"]
        if self.mode == "fail-once" and calls == 1:
            self._send(500, b"transient model failure (call %d)" % calls, "text/plain")
            return
        if self.mode == "fail-n" and calls <= self.fails:
            self._send(503, b"model busy, try again (call %d)" % calls, "text/plain")
            return
        if self.mode == "raise":
            self._send(500, TRACEBACK, "text/plain")
            return
        if self.mode == "leak400":
            msg = f"bad row; connecting with token={LEAKED_SECRET} as {LEAKED_KEY_ID}"
            self._send(400, msg.encode(), "text/plain")
            return
        if self.mode in ("slow", "hash"):
            time.sleep(self.delay)
        rows = records(body)
        if self.mode == "refuse":
            bad = next((i for i, r in enumerate(rows, 1) if "BAD" in r), None)
            if bad is not None:
                msg = f"cannot score record {bad} of the request: value BAD is not a number"
                self._send(400, msg.encode(), "text/plain")
                return
            time.sleep(self.delay * len(rows) / 1000)
            self._scored(rows)
            self._send(200, b"".join(hash_row(r) for r in rows))
            return
        if self.mode == "few-rows":
            rows = rows[:-1]
        if self.mode == "json":
            preds = [[i, len(r)] for i, r in enumerate(rows, 1)]
            self._send(200, json.dumps({"predictions": preds}).encode(), "application/json")
            return
        if self.mode == "hash":
            self._scored(rows)
            self._send(200, b"".join(hash_row(r) for r in rows))
            return
        if self.mode == "drip":
            answer = b"".join(b"%d,%d\n" % (i, len(r)) for i, r in enumerate(rows, 1))
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            for i in range(len(answer)):
                self.wfile.write(answer[i : i + 1])
                self.wfile.flush()
                time.sleep(self.delay)
            return
        self._send(200, b"".join(b"%d,%d\n" % (i, len(r)) for i, r in enumerate(rows, 1)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--fails", type=int, default=0)
    ap.add_argument("--log", default="")
    ap.add_argument("--only-first", default="")
    args = ap.parse_args()
    if args.only_first:
        try:
            os.close(os.open(args.only_first, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            print(f"fatal: replica on port {args.port} lost the race for its GPU", flush=True)
            return 4
    if args.mode == "crash":
        secret = os.environ.get("FAKEMODEL_SECRET", "")
        print(f"loading weights with password={secret or 'hunter2-secret'}", flush=True)
        print(f"using key {LEAKED_KEY_ID} / aws_secret_access_key={LEAKED_SECRET}", flush=True)
        print("fatal: weights file is corrupt", file=sys.stderr, flush=True)
        return 3
    Handler.mode = args.mode
    Handler.delay = args.delay
    Handler.fails = args.fails
    Handler.log_path = args.log
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"fakemodel {args.mode} listening on {args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
