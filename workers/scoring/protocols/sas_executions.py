"""The ``sas-executions`` protocol: the model containers of the tool scorefleet
replaces (SAS-style "executions").

* Ready: ``GET /`` answers ``pong`` (``GET /ping`` answers 500 on these servers).
* ``POST /executions``: a multipart form upload of a CSV file (field ``file``, a file
  name ending ``.csv``) answers ``201 {"id": "<token>"}``.
* ``GET /query/<token>``: 404 until the scored CSV is ready, then 200 with it (as an
  attachment).
* ``GET /query/<token>/log``: the scoring log.

Each mini-batch (with its header line) is its own execution, polled with backoff
(``sas.poll_initial`` doubling up to ``sas.poll_max`` seconds) within the
mini-batch's one deadline. The scored CSV may carry a header and the input's
columns: ``sas.columns`` names the answer's columns (default: every column of the
scored file that is not an input column). When anything fails after the execution
was created, the tail of its log (``sas.log_lines``) goes into the ``.error``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from urllib3 import encode_multipart_formdata

from scorefleet.errors import ModelError, PipelineError, RowsRefused
from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores, column_names
from workers.scoring.protocols.answers import check_keys, option
from workers.scoring.protocols.base import HttpCheck, ModelProtocol, Readiness
from workers.scoring.protocols.calls import (
    check_count,
    check_status,
    current_deadline,
    retrying,
    snippet,
    with_deadline,
)
from workers.scoring.protocols.sagemaker import count_records


@dataclass(frozen=True)
class SasOptions:
    columns: tuple[str, ...] = ()
    header: bool = True
    file_name: str = "batch.csv"
    poll_initial: float = 0.05
    poll_max: float = 2.0
    log_lines: int = 20


class SasExecutionsProtocol(ModelProtocol):
    name: ClassVar[str] = "sas-executions"
    options_key: ClassVar[str | None] = "sas"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"columns", "header", "file_name", "poll_initial", "poll_max", "log_lines"}
    )
    options: SasOptions

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> SasOptions:
        check_keys(raw, cls.option_names)
        columns = option(raw, "columns", list, [])
        if not all(isinstance(c, str) and c for c in columns):
            raise ValueError("columns must be a list of the scored file's column names")
        header = option(raw, "header", bool, True)
        if columns and not header:
            raise ValueError("columns name columns of a scored file with a header (header: true)")
        file_name = option(raw, "file_name", str, "batch.csv")
        if not file_name.endswith(".csv") or "/" in file_name or '"' in file_name:
            raise ValueError("file_name must be a plain file name ending .csv")
        poll_initial = option(raw, "poll_initial", float, 0.05)
        poll_max = option(raw, "poll_max", float, 2.0)
        if not 0 < poll_initial <= poll_max <= 60:
            raise ValueError("expected 0 < poll_initial <= poll_max <= 60 seconds")
        log_lines = option(raw, "log_lines", int, 20)
        if not 0 <= log_lines <= 1000:
            raise ValueError("log_lines must be between 0 and 1000")
        return SasOptions(tuple(columns), header, file_name, poll_initial, poll_max, log_lines)

    @classmethod
    def readiness(cls, spec: ModelSpec) -> Readiness:
        """``GET /`` answers pong (``GET /ping`` answers 500 on these servers)."""
        return Readiness((HttpCheck("/", contains="pong"),))

    def ready(self, timeout: float) -> bool:
        """As :meth:`readiness` says, and the answer is pong itself (maybe quoted)."""
        reply = self.http.probe("GET", "/", timeout)
        return (
            reply is not None
            and reply.status == 200
            and reply.body.decode("utf-8", "replace").strip().strip('"').lower() == "pong"
        )

    # --------------------------------------------------------------- scoring
    def score(self, batch: Batch) -> Scores:
        payload = batch.as_csv(header=True)
        return retrying(
            self.limits,
            batch.span,
            lambda: with_deadline(
                self.limits, batch.span, self.http, lambda: self._execution(payload, batch)
            ),
        )

    def _execution(self, payload: bytes, batch: Batch) -> Scores:
        span = batch.span
        body, ctype = encode_multipart_formdata(
            {"file": (self.options.file_name, payload, "text/csv")}
        )
        reply = self.http.request(
            "POST",
            "/executions",
            body=body,
            headers={"Content-Type": ctype, "Accept": "application/json"},
            span=span,
        )
        check_status(reply, span, batch.first_row, ok=(200, 201, 202))
        token = _token(reply.body, span)
        try:
            scored = self._wait(token, span, len(payload))
            check_status(scored, span, batch.first_row)
            return self._answer(scored.body, batch)
        except PipelineError as exc:
            tail = self._log_tail(token, span)
            if tail:
                exc.model_logs = (exc.model_logs + "\n" if exc.model_logs else "") + tail
            raise

    def _wait(self, token: str, span: str, sent: int) -> Any:
        path = f"/query/{quote(token, safe='')}"
        delay = self.options.poll_initial
        deadline = current_deadline()
        while True:
            reply = self.http.request(
                "GET", path, body=None, headers={"Accept": "text/csv"}, span=span, sent=sent
            )
            if reply.status != 404:
                return reply
            left = deadline.left() if deadline is not None else delay
            if left <= 0:
                raise self.http.late(span)
            time.sleep(min(delay, left))
            delay = min(delay * 2, self.options.poll_max)

    def _log_tail(self, token: str, span: str) -> str:
        """The execution's log, last lines ('' when it has none or cannot be read:
        the failure being reported matters more)."""
        if self.options.log_lines == 0:
            return ""
        path = f"/query/{quote(token, safe='')}/log"
        reply = self.http.probe("GET", path, min(5.0, self.limits.timeout))
        if reply is None or reply.status != 200:
            return ""
        lines = reply.body.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-self.options.log_lines :])

    def _answer(self, scored: bytes, batch: Batch) -> Scores:
        span = batch.span
        try:
            text = scored.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ModelError(f"the scored file for {span} is not UTF-8: {exc}") from exc
        records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        if not self.options.header:
            data = text.encode("utf-8")
            data = data if data.endswith(b"\n") or not data else data + b"\n"
            check_count(count_records(data), batch.rows, span)
            return Scores(rows=batch.rows, csv=data)
        if not records:
            raise RowsRefused(f"the scored file for {span} is empty (no header, no rows)")
        names, rows = records[0], records[1:]
        check_count(len(rows), batch.rows, span)
        picks = self._picks(names, batch, span)
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        for row in rows:
            w.writerow([row[i] if i < len(row) else "" for i in picks])
        return Scores(
            rows=len(rows),
            csv=out.getvalue().encode("utf-8"),
            header=tuple(names[i] for i in picks),
        )

    def _picks(self, names: list[str], batch: Batch, span: str) -> list[int]:
        if self.options.columns:
            missing = [c for c in self.options.columns if c not in names]
            if missing:
                raise ModelError(
                    f"the scored file for {span} has no column {', '.join(map(repr, missing))} "
                    f"(sas.columns in the catalog; it has {', '.join(names)})"
                )
            return [names.index(c) for c in self.options.columns]
        inputs = set(column_names(batch.columns))
        picks = [i for i, n in enumerate(names) if n not in inputs]
        if not picks:
            raise ModelError(
                f"the scored file for {span} holds only the input's columns "
                f"({', '.join(names)}); name the answer's columns with sas.columns"
            )
        return picks


def _token(body: bytes, span: str) -> str:
    try:
        token = json.loads(body).get("id")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str | int) or isinstance(token, bool) or str(token) == "":
        raise ModelError(
            f"the model answered POST /executions for {span} without an id: {snippet(body)}"
        )
    return str(token)
