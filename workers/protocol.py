"""The model protocol: the SageMaker / MLflow container contract.

``GET /ping`` answers 200 when the model is ready; ``POST /invocations`` with
``Content-Type: text/csv`` scores a mini-batch. The answer may be CSV, or JSON
(``{"predictions": [...]}`` or a bare list). It must hold exactly one result row
per input row, in order: anything else is an error and nothing is written.

Errors are sorted for the retry logic: connection problems, timeouts, 429 and
5xx are transient (retried here a few times, then by the task); other 4xx answers
and wrong row counts are permanent.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from tasks.errors import ModelError, ModelUnavailable

log = logging.getLogger(__name__)

_MAX_ERROR_BODY = 600


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
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.response_header = response_header
        self.attempts = attempts
        self.backoff = backoff
        self.pool = urllib3.HTTPConnectionPool(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            maxsize=pool_size,
            block=True,
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
            retries=False,
        )

    def close(self) -> None:
        self.pool.close()

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            r = self.pool.request("GET", "/ping", timeout=timeout, retries=False)
        except Urllib3Error:
            return False
        return r.status == 200

    def invoke(self, payload: bytes, first_row: int, rows: int) -> Answer:
        """Score one mini-batch; retry transient failures a few times first."""
        span = f"rows {first_row}-{first_row + rows - 1}"
        for attempt in range(1, self.attempts + 1):
            try:
                return self._invoke_once(payload, rows, span)
            except ModelUnavailable as exc:
                if attempt == self.attempts:
                    raise
                delay = random.uniform(0, self.backoff * 2 ** (attempt - 1))
                log.warning("model call for %s failed (%s); retrying in %.2fs", span, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _invoke_once(self, payload: bytes, rows: int, span: str) -> Answer:
        try:
            r = self.pool.urlopen(
                "POST",
                "/invocations",
                body=payload,
                headers={"Content-Type": "text/csv", "Accept": "text/csv, application/json"},
                retries=False,
                preload_content=True,
            )
        except Urllib3Error as exc:
            raise ModelUnavailable(f"the model did not answer for {span}: {exc}") from exc
        body: bytes = r.data
        if r.status == 429 or r.status >= 500:
            raise ModelUnavailable(
                f"the model answered HTTP {r.status} for {span}: {_snippet(body)}"
            )
        if r.status != 200:
            raise ModelError(f"the model rejected {span} with HTTP {r.status}: {_snippet(body)}")
        ctype = (r.headers.get("Content-Type") or "text/csv").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data, n, header = _json_rows(json.loads(body))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ModelError(f"the model answered invalid JSON for {span}: {exc}") from exc
        elif ctype in {"text/csv", "text/plain", "application/octet-stream"}:
            data = _normalise(body)
            header = None
            if self.response_header and data:
                nl = data.index(b"\n") + 1
                header, data = data[:nl], data[nl:]
            n = count_records(data)
        else:
            raise ModelError(f"the model answered with unsupported content type {ctype!r}")
        if n != rows:
            raise ModelError(
                f"the model answered {n} result rows for {span} ({rows} rows); "
                "every input row needs exactly one result row, in order"
            )
        return Answer(data=data, rows=n, header=header)


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
