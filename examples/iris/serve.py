"""Iris reference model server (SageMaker / MLflow container contract).

Standalone: stdlib ``http.server`` plus scikit-learn, pandas and numpy.

    python examples/iris/serve.py --port 8080 [--host 127.0.0.1] [--model PATH]

Endpoints:
  GET  /ping         200 "ok" (the model is loaded before the port is bound)
  POST /invocations  Content-Type: text/csv, 4 numeric feature columns, with
                     or without a header line.  Responds text/csv
                     ``label,probability`` (one line per data row, in order),
                     or JSON when the client sends ``Accept: application/json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import pandas as pd
from model import FEATURES, load_or_train

N_FEATURES = len(FEATURES)
CSV_HEADER = b"label,probability\n"
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024  # SageMaker batch transform max payload
SHUTDOWN_GRACE_SECONDS = 5.0
UTF8_BOM = b"\xef\xbb\xbf"

_log_lock = threading.RLock()  # re-entrant: log() is also called from a signal handler


def log(message: str) -> None:
    """Write one line to stderr (atomically with respect to other threads)."""
    with _log_lock:
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()


class HttpError(Exception):
    """Answered with ``status`` and the (one-line) message as text/plain."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HttpError):
    """Client error: answered with HTTP 400."""

    status = 400


# --------------------------------------------------------------------------
# CSV parsing
# --------------------------------------------------------------------------


_FIRST_LINE = re.compile(rb"[ \t\r\n]*([^\r\n]*)")


def _first_nonblank_line(body: bytes) -> bytes:
    match = _FIRST_LINE.match(body)  # never copies more than the first line
    return match.group(1) if match else b""


def has_header(body: bytes) -> bool:
    """A header is present when the first line's first field is non-empty and
    does not parse as a float."""
    line = _first_nonblank_line(body)
    first = line.split(b",", 1)[0].strip().strip(b'"').strip()
    if not first:
        return False
    try:
        float(first)
    except ValueError:
        return True
    return False


def _fast_shape_ok(body: bytes) -> bool:
    """Cheap O(n) check (C speed) that every line has exactly 4 fields.

    Valid only for bodies without quotes and without blank lines; anything
    else fails the check and goes through the exact (slower) validation.
    """
    if b'"' in body:
        return False
    trimmed = body.strip()  # leading/trailing blank lines are harmless
    lines = trimmed.count(b"\n") + 1
    return trimmed.count(b",") == (N_FEATURES - 1) * lines


def _validate_with_csv_module(body: bytes, header: bool) -> int:
    """Exact validation of the field count of every line; returns the number
    of data rows.  Used when the fast check is inconclusive."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte offset {exc.start})") from None
    data_row = 0
    seen_header = not header
    try:
        for fields in csv.reader(io.StringIO(text, newline="")):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line: skipped, like pandas does
            if not seen_header:
                seen_header = True
                if len(fields) != N_FEATURES:
                    raise BadRequest(
                        f"header has {len(fields)} columns, expected {N_FEATURES}: "
                        + ",".join(FEATURES)
                    )
                continue
            data_row += 1
            if len(fields) != N_FEATURES:
                raise BadRequest(
                    f"row {data_row}: expected {N_FEATURES} columns, got {len(fields)}"
                )
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None
    return data_row


def _locate_non_numeric(body: bytes, header: bool, fallback: str) -> str:
    """Find the first non-numeric cell (1-based data row) for the error message."""
    try:
        frame = pd.read_csv(
            io.BytesIO(body), header=0 if header else None, dtype=str, index_col=False
        )
    except ValueError:
        return fallback
    names = [str(c).strip() for c in frame.columns] if header else None
    for pos in range(frame.shape[1]):
        raw = frame.iloc[:, pos]
        numeric = pd.to_numeric(raw, errors="coerce")
        bad = numeric.isna().to_numpy() & raw.notna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            column = names[pos] if names else f"column {pos + 1} ({FEATURES[pos]})"
            value = str(raw.iloc[row])
            if len(value) > 40:
                value = value[:37] + "..."
            return f"row {row + 1}, {column}: non-numeric value {value!r}"
    return fallback


def _header_problem(columns: list[str]) -> str:
    """Describe why a header does not name the 4 features."""
    duplicates, unexpected = [], []
    for name in columns:
        base, dot, suffix = name.rpartition(".")  # pandas renames duplicates "x" -> "x.1"
        if dot and suffix.isdigit() and base.lower() in FEATURES:
            duplicates.append(base)
        elif name.lower() not in FEATURES:
            unexpected.append(name)
    parts = []
    if unexpected:
        parts.append("unexpected columns: " + ", ".join(unexpected))
    if duplicates:
        parts.append("duplicate columns: " + ", ".join(duplicates))
    if not parts:
        parts.append("header does not name the 4 features")
    return "; ".join(parts) + f" (expected {','.join(FEATURES)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_csv(body: bytes) -> np.ndarray:
    """Parse a text/csv request body into an (n, 4) float64 array in FEATURES
    order.  Empty fields become NaN.  Raises BadRequest on client errors."""
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    if not body.strip():
        raise BadRequest("empty body")
    header = has_header(body)

    expected_rows: int | None = None
    if not _fast_shape_ok(body):
        expected_rows = _validate_with_csv_module(body, header)

    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            header=0 if header else None,
            dtype=float,
            index_col=False,
            skip_blank_lines=True,
            engine="c",
        )
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8") from None
    except pd.errors.ParserError as exc:
        raise BadRequest(f"malformed CSV: {_first_line(exc)}") from None
    except ValueError as exc:  # e.g. "could not convert string to float: 'x'"
        raise BadRequest(_locate_non_numeric(body, header, _first_line(exc))) from None

    if frame.shape[1] != N_FEATURES:
        raise BadRequest(f"expected {N_FEATURES} columns, got {frame.shape[1]}")
    if expected_rows is not None and len(frame) != expected_rows:
        raise BadRequest("malformed CSV: inconsistent row structure")

    if header:
        names = [str(c).strip().lower() for c in frame.columns]
        if sorted(names) != sorted(FEATURES):
            raise BadRequest(_header_problem([str(c).strip() for c in frame.columns]))
        frame.columns = names
        frame = frame[FEATURES]

    values: np.ndarray = frame.to_numpy(dtype=np.float64, copy=False)
    infinite = np.isinf(values)
    if infinite.any():
        rows, cols = np.nonzero(infinite)
        raise BadRequest(f"row {int(rows[0]) + 1}, {FEATURES[int(cols[0])]}: infinite value")
    return values


# --------------------------------------------------------------------------
# Scoring and response formatting
# --------------------------------------------------------------------------


class Scorer:
    """Wraps the fitted pipeline; thread-safe for concurrent predict calls."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes: list[str] = [str(c) for c in model.classes_]
        self._label_bytes = [c.encode("utf-8") for c in self.classes]
        self._label_len = np.array([len(b) for b in self._label_bytes], dtype=np.int64)

    def score(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (class index, max probability) per row."""
        if len(values) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        proba = self.model.predict_proba(values)
        idx = proba.argmax(axis=1)
        return idx, proba[np.arange(len(idx)), idx]

    def to_csv(self, idx: np.ndarray, prob: np.ndarray) -> bytes:
        """Vectorised ``label,%.6f\\n`` lines, written straight into a byte
        buffer (about 10x faster than per-row string formatting)."""
        if len(idx) == 0:
            return CSV_HEADER
        lens = self._label_len[idx] + 10  # label + ",d.dddddd\n"
        ends = np.cumsum(lens)
        starts = ends - lens
        buf = np.empty(len(CSV_HEADER) + int(ends[-1]), dtype=np.uint8)
        buf[: len(CSV_HEADER)] = np.frombuffer(CSV_HEADER, dtype=np.uint8)
        starts += len(CSV_HEADER)
        for k, label in enumerate(self._label_bytes):
            rows = starts[idx == k]
            for j, ch in enumerate(label):
                buf[rows + j] = ch
        pos = starts + self._label_len[idx]
        micros = np.rint(prob * 1e6).astype(np.int64)  # probability in [0, 1]
        buf[pos] = ord(",")
        buf[pos + 1] = ord("0") + micros // 1_000_000
        buf[pos + 2] = ord(".")
        frac = micros % 1_000_000
        for j in range(6):
            buf[pos + 3 + j] = ord("0") + (frac // 10 ** (5 - j)) % 10
        buf[pos + 9] = ord("\n")
        return buf.tobytes()

    def to_json(self, idx: np.ndarray, prob: np.ndarray) -> bytes:
        labels = self.classes
        predictions = [
            {"label": labels[i], "probability": round(p, 6)}
            for i, p in zip(idx.tolist(), prob.tolist(), strict=True)
        ]
        return json.dumps({"predictions": predictions}, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


class IrisServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], scorer: Scorer, max_body: int) -> None:
        self.scorer = scorer
        self.max_body = max_body
        self._active = 0
        self._active_cond = threading.Condition()
        super().__init__(address, Handler)

    def request_started(self) -> None:
        with self._active_cond:
            self._active += 1

    def request_finished(self) -> None:
        with self._active_cond:
            self._active -= 1
            self._active_cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being processed (idle keep-alive
        connections do not count)."""
        with self._active_cond:
            return self._active_cond.wait_for(lambda: self._active == 0, timeout)


class Handler(BaseHTTPRequestHandler):
    server: IrisServer
    protocol_version = "HTTP/1.1"  # keep-alive for batch senders
    server_version = "iris-model/1.0"
    timeout = 120  # idle / slow-client socket timeout, seconds

    def log_message(self, format: str, *args: Any) -> None:
        pass  # replaced by one line per request in _log_request

    def _log_request(self, status: int, rows: int | None, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000
        path = self.path.split("?", 1)[0]
        rows_text = "-" if rows is None else str(rows)
        log(f"{self.command} {path} {status} rows={rows_text} {ms:.1f}ms")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, status: int, message: str, **kwargs: Any) -> None:
        one_line = " ".join(message.split())
        self._send(status, (one_line + "\n").encode("utf-8"), **kwargs)

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked).  Raises HttpError
        (and marks the connection for closing) when it cannot be read."""
        max_body = self.server.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise BadRequest("malformed chunked encoding") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > max_body:
                    self.close_connection = True
                    raise HttpError(f"body larger than {max_body} bytes", 413)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)  # CRLF after the chunk
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise BadRequest("invalid Content-Length")
        if length > max_body:
            self.close_connection = True
            raise HttpError(f"body larger than {max_body} bytes", 413)
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            raise BadRequest("incomplete body")
        return body

    def _wants_json(self) -> bool:
        accept = self.headers.get("Accept", "").lower()
        if "application/json" not in accept:
            return False
        return "text/csv" not in accept or accept.index("application/json") < accept.index(
            "text/csv"
        )

    def do_GET(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        if path == "/ping":
            self._send_text(200, "ok")
            status = 200
        elif path == "/invocations":
            self._send_text(405, "use POST /invocations", extra_headers={"Allow": "POST"})
            status = 405
        else:
            self._send_text(404, f"not found: {path}")
            status = 404
        self._log_request(status, None, started)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        self.server.request_started()
        status, rows = 500, None
        try:
            body = self._read_body()  # always drain it: keeps keep-alive in sync
            if path != "/invocations":
                raise HttpError(f"not found: {path}", 404)
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";", 1)[0].strip().lower() != "text/csv":
                shown = content_type or "(none)"
                raise HttpError(f"unsupported content type {shown!r}; use text/csv", 415)
            values = parse_csv(body)
            rows = len(values)
            scorer = self.server.scorer
            idx, prob = scorer.score(values)
            if self._wants_json():
                payload, ctype = scorer.to_json(idx, prob), "application/json"
            else:
                payload, ctype = scorer.to_csv(idx, prob), "text/csv; charset=utf-8"
            status = 200
            self._send(status, payload, content_type=ctype)
        except HttpError as exc:
            status = exc.status
            self._send_text(status, str(exc))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            status = 499  # client went away (logged only)
        except Exception as exc:
            status = 500
            log(f"error handling {self.command} {path}:\n{traceback.format_exc().rstrip()}")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send_text(status, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.server.request_finished()
            self._log_request(status, rows, started)

    def _method_not_allowed(self) -> None:
        self.close_connection = True
        self._send_text(405, f"method {self.command} not allowed")

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def _default_port() -> int:
    for name in ("SAGEMAKER_BIND_TO_PORT", "PORT"):
        value = os.environ.get(name)
        if value:
            return int(value)
    return 8080


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the iris reference model.")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve"],
        help="ignored; accepted for the SageMaker `docker run IMAGE serve` convention",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_default_port(),
        help="port (default: $SAGEMAKER_BIND_TO_PORT, $PORT, else 8080; 0 = any free port)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("IRIS_HOST") or "0.0.0.0",
        help="bind address (default: $IRIS_HOST or 0.0.0.0)",
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("IRIS_MODEL_PATH") or None,
        help="joblib artifact; trained (and saved there) if missing. "
        "Default: $IRIS_MODEL_PATH, else train in memory",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(os.environ.get("IRIS_MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES),
        help="reject larger request bodies with 413",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # Load (and warm up) the model before binding: a successful /ping means ready.
    started = time.perf_counter()
    scorer = Scorer(load_or_train(args.model))
    scorer.to_csv(*scorer.score(parse_csv(b"5.1,3.5,1.4,0.2\n,,,\n")))  # warm-up
    load_ms = (time.perf_counter() - started) * 1000

    server = IrisServer((args.host, args.port), scorer, args.max_body_bytes)
    bound_host, port = server.server_address[:2]
    host = bound_host.decode() if isinstance(bound_host, bytes) else bound_host
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log(f"received {signal.Signals(signum).name}, shutting down")
            # shutdown() blocks until serve_forever returns: call it off-thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    source = args.model if args.model else "trained in memory"
    log(f"iris model loaded ({source}) in {load_ms:.0f}ms")
    log(f"iris model listening on {host}:{port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()  # stop accepting; in-flight requests may finish
        if not server.wait_idle(SHUTDOWN_GRACE_SECONDS):
            log("shutdown grace period expired with requests in flight")
        log("iris model stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
