"""The model protocol: the SageMaker / MLflow container contract.

``GET /ping`` answers 200 when the model is ready; ``POST /invocations`` with
``Content-Type: text/csv`` scores a mini-batch. The answer may be CSV, or JSON
(``{"predictions": [...]}`` or a bare list). It must hold exactly one result row
per input row, in order: anything else is an error and nothing is written.

Errors are sorted for the retry logic: connection problems, timeouts, 429 and
5xx are transient (retried here a few times, then by the task); other 4xx answers
and wrong row counts are permanent.

Bounded: ``timeout`` is a deadline for the whole call (a model that sends its answer
a byte at a time is cut off when it is up, not after one socket timeout per byte),
and an answer may be at most ``max_answer_ratio`` times the request (never less than
``max_answer_floor``), so no model can hold a worker for hours or exhaust its
memory. The answer's Content-Type must say CSV or JSON (or the catalog names the
format with ``response_format``): nothing is silently read as CSV.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError as Urllib3Error

from scorefleet.errors import ModelError, ModelUnavailable

log = logging.getLogger(__name__)

_MAX_ERROR_BODY = 600
_READ = 64 * 1024
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})
#: What the catalog's ``response_format`` may say for a model that mislabels its answers.
RESPONSE_FORMATS = ("csv", "json")

_call = threading.local()


class _Deadline:
    """Ends one model call when its time is up, wherever it is blocked: the socket of
    the call's connection is shut down, so a read that trickles in never ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _call.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _call.deadline = None

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            # kept here: http.client hands the socket to the response (conn.sock = None)
            # when the answer ends with the connection
            self._sock = conn.sock or self._sock
            if self.expired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


class _DeadlineConnection(HTTPConnection):
    """A pooled connection that the running call's :class:`_Deadline` can cut."""

    def _guard(self) -> None:
        deadline: _Deadline | None = getattr(_call, "deadline", None)
        if deadline is not None:
            deadline.attach(self)

    def connect(self) -> None:
        super().connect()
        self._guard()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._guard()
        super().request(*args, **kwargs)


@dataclass(frozen=True)
class Answer:
    data: bytes  # CSV rows, each ending with a newline, no header
    rows: int
    header: bytes | None  # the model's header row, if it sent one


def count_records(data: bytes) -> int:
    """Newline-terminated CSV records (a newline inside quotes does not count)."""
    if b'"' not in data:
        return data.count(b"\n")
    records, in_quotes, pos = 0, False, 0
    while (nl := data.find(b"\n", pos)) >= 0:
        if data.count(b'"', pos, nl) % 2:
            in_quotes = not in_quotes
        if not in_quotes:
            records += 1
        pos = nl + 1
    return records


def _normalise(data: bytes) -> bytes:
    """Drop trailing blank lines and make sure the last row ends with a newline."""
    if data.endswith(b"\n") and not data.endswith((b"\n\n", b"\n\r\n")):
        return data  # the usual case: no copy
    data = data.rstrip(b"\r\n")
    return data + b"\n" if data else b""


def _json_rows(payload: Any) -> tuple[bytes, int, bytes | None]:
    preds = payload.get("predictions") if isinstance(payload, dict) else payload
    if not isinstance(preds, list):
        raise ModelError(
            "the model answered JSON without a list of predictions "
            '(expected {"predictions": [...]} or a list)'
        )
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    header: list[str] | None = None
    for p in preds:
        if isinstance(p, dict):
            if header is None:
                header = [str(k) for k in p]
            w.writerow([p.get(k, "") for k in header])
        elif isinstance(p, list | tuple):
            w.writerow(p)
        else:
            w.writerow([p])
    head = (",".join(header) + "\n").encode() if header else None
    return out.getvalue().encode("utf-8"), len(preds), head


class InvocationsClient:
    """Talks to one model container. Thread-safe; keeps ``pool_size`` connections."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        pool_size: int,
        response_header: bool = False,
        attempts: int = 3,
        backoff: float = 0.5,
        max_answer_ratio: float = 20.0,
        max_answer_floor: int = 1024 * 1024,
        response_format: str = "",
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.response_header = response_header
        self.attempts = attempts
        self.backoff = backoff
        self.max_answer_ratio = max_answer_ratio
        self.max_answer_floor = max_answer_floor
        self.response_format = response_format
        self.pool = urllib3.HTTPConnectionPool(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            maxsize=pool_size,
            block=True,
            timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
            retries=False,
        )
        self.pool.ConnectionCls = _DeadlineConnection

    def close(self) -> None:
        self.pool.close()

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            r = self.pool.request("GET", "/ping", timeout=timeout, retries=False)
        except Urllib3Error:
            return False
        return r.status == 200

    def invoke(self, payload: bytes, first_row: int, rows: int, span: str | None = None) -> Answer:
        """Score one mini-batch (``span``: its rows as the user numbers them, e.g.
        ``data rows 5-9 (lines 6-10)``); retry transient failures a few times first."""
        span = span or f"data rows {first_row}-{first_row + rows - 1}"
        for attempt in range(1, self.attempts + 1):
            try:
                return self._invoke_once(payload, rows, span, first_row)
            except ModelUnavailable as exc:
                if attempt == self.attempts:
                    raise
                delay = random.uniform(0, self.backoff * 2 ** (attempt - 1))
                log.warning("model call for %s failed (%s); retrying in %.2fs", span, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _invoke_once(self, payload: bytes, rows: int, span: str, first_row: int = 1) -> Answer:
        late = ModelUnavailable(
            f"the model did not finish its answer for {span} within {self.timeout:g}s "
            "(SCOREFLEET_MODEL_TIMEOUT, for the whole answer)"
        )
        with _Deadline(self.timeout) as deadline:
            try:
                status, ctype, body = self._post(payload, span)
            except (Urllib3Error, OSError) as exc:
                if deadline.expired:
                    raise late from exc
                raise ModelUnavailable(f"the model did not answer for {span}: {exc}") from exc
        if deadline.expired:  # cut off, though what came looked complete
            raise late
        if status == 429 or status >= 500:
            raise ModelUnavailable(f"the model answered HTTP {status} for {span}: {_snippet(body)}")
        if status != 200:
            # the model numbers rows from the start of its mini-batch, not of the file
            note = (
                f" (the model counts rows from the start of this mini-batch: its row 1 is "
                f"data row {first_row} of the file)"
                if first_row > 1
                else ""
            )
            raise ModelError(
                f"the model rejected {span} with HTTP {status}: {_snippet(body)}{note}"
            )
        fmt = self._format(ctype, span)
        if fmt == "json":
            try:
                data, n, header = _json_rows(json.loads(body))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                raise ModelError(f"the model answered invalid JSON for {span}: {exc}") from exc
        else:
            data = _normalise(body)
            header = None
            if self.response_header and data:
                nl = data.index(b"\n") + 1
                header, data = data[:nl], data[nl:]
            n = count_records(data)
        if n != rows:
            raise ModelError(
                f"the model answered {n} result rows for {span} ({rows} rows); "
                "every input row needs exactly one result row, in order"
            )
        return Answer(data=data, rows=n, header=header)

    def _post(self, payload: bytes, span: str) -> tuple[int, str, bytes]:
        """POST the batch; (status, media type, body), the body read within the cap."""
        r = self.pool.urlopen(
            "POST",
            "/invocations",
            body=payload,
            headers={"Content-Type": "text/csv", "Accept": "text/csv, application/json"},
            retries=False,
            preload_content=False,
            decode_content=False,
        )
        try:
            cap = max(self.max_answer_floor, int(self.max_answer_ratio * len(payload)))
            encoding = (r.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise ModelError(
                    f"the model answered {span} with Content-Encoding {encoding!r}, "
                    "which scorefleet does not ask for; answer uncompressed"
                )
            declared = r.headers.get("Content-Length", "")
            if r.status == 200 and declared.isdigit() and int(declared) > cap:
                raise ModelError(self._too_big(span, int(declared), len(payload), cap))
            body = bytearray()
            for chunk in r.stream(_READ):
                body += chunk
                if len(body) > cap:
                    raise ModelError(self._too_big(span, len(body), len(payload), cap, more=True))
            ctype = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            return r.status, ctype, bytes(body)
        except BaseException:
            r.close()  # not reused: the rest of the answer is unread
            raise
        finally:
            r.release_conn()

    def _too_big(self, span: str, size: int, sent: int, cap: int, *, more: bool = False) -> str:
        return (
            f"the model's answer for {span} is {'more than ' if more else ''}{size:,d} bytes, "
            f"larger than {cap:,d} bytes: SCOREFLEET_MAX_ANSWER_RATIO={self.max_answer_ratio:g} "
            f"times the {sent:,d}-byte request, at least SCOREFLEET_MAX_ANSWER_FLOOR_MB="
            f"{self.max_answer_floor / 1024 / 1024:g}; raise one of them if the model "
            "really answers that much, or send smaller mini-batches (SCOREFLEET_MAX_PAYLOAD_MB)"
        )

    def _format(self, ctype: str, span: str) -> str:
        if self.response_format:
            return self.response_format
        if ctype in CSV_TYPES:
            return "csv"
        if ctype == "application/json" or ctype.endswith("+json"):
            return "json"
        said = f"Content-Type {ctype!r}" if ctype else "no Content-Type"
        raise ModelError(
            f"the model answered {span} with {said}; it must answer text/csv or "
            "application/json (or set response_format: csv|json for this image in "
            "SCOREFLEET_MODEL_CATALOG)"
        )


def ping(url: str, timeout: float = 3.0) -> bool:
    """One ``GET /ping`` of the model at ``url``: does it answer 200?"""
    client = InvocationsClient(url, timeout=timeout, pool_size=1)
    try:
        return client.ping(timeout=timeout)
    finally:
        client.close()


def _snippet(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip().replace("\n", " | ")
    return text[:_MAX_ERROR_BODY] + ("..." if len(text) > _MAX_ERROR_BODY else "")
