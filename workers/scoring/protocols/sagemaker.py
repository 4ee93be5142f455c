"""The ``sagemaker`` protocol (the default): the SageMaker / MLflow container contract.

``GET /ping`` answers 200 when the model is ready; ``POST /invocations`` with
``Content-Type: text/csv`` scores a mini-batch (the input's header line first unless
the catalog says ``send_header: false``). The answer may be CSV (``response_header:
true`` when its first line names the columns), or JSON (``{"predictions": [...]}`` or
a bare list). Its Content-Type must say CSV or JSON, or the catalog names the format
with ``response_format``: nothing is silently read as CSV.

Options (catalog ``sagemaker: {...}``, or at the top level of the entry, where
catalogs have always given them): ``send_header``, ``response_header``,
``response_format``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from scorefleet.errors import ModelError
from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores, scores_from_rows
from workers.scoring.protocols.answers import AnswerColumns, check_keys, option, rows_of
from workers.scoring.protocols.base import ModelProtocol
from workers.scoring.protocols.calls import check_count, check_status, retrying, with_deadline

CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})
#: What the catalog's ``response_format`` may say for a model that mislabels its answers.
RESPONSE_FORMATS = ("csv", "json")


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


def normalise(data: bytes) -> bytes:
    """Drop trailing blank lines and make sure the last row ends with a newline."""
    if data.endswith(b"\n") and not data.endswith((b"\n\n", b"\n\r\n")):
        return data  # the usual case: no copy
    data = data.rstrip(b"\r\n")
    return data + b"\n" if data else b""


def json_rows(payload: Any, first_row: int = 1) -> Scores:
    """A JSON answer (``{"predictions": [...]}`` or a list) as result rows: objects
    become columns named by the first one's keys (every prediction must have those
    keys and no other), lists one column per item, a value one column; each value as
    the model answered it (workers/scoring/values.py)."""
    preds = payload.get("predictions") if isinstance(payload, dict) else payload
    if not isinstance(preds, list):
        raise ModelError(
            "the model answered JSON without a list of predictions "
            '(expected {"predictions": [...]} or a list)'
        )
    header, rows = rows_of(AnswerColumns(), preds, first_row)
    names = header if preds and isinstance(preds[0], dict) else None
    return scores_from_rows(rows, names)


def _names(line: bytes | None) -> tuple[str, ...] | None:
    if not line:
        return None
    row = next(csv.reader(io.StringIO(line.decode("utf-8", errors="replace"))), [])
    return tuple(row)


@dataclass(frozen=True)
class SageMakerOptions:
    #: send the input's header row with every mini-batch
    send_header: bool = True
    #: the model's CSV answer starts with a header row (kept once in the .scoreout)
    response_header: bool = False
    #: "csv" or "json" for a model whose Content-Type does not say (empty: it must)
    response_format: str = ""


_OPTIONS = frozenset({"send_header", "response_header", "response_format"})


class SageMakerProtocol(ModelProtocol):
    name: ClassVar[str] = "sagemaker"
    options_key: ClassVar[str | None] = "sagemaker"
    option_names: ClassVar[frozenset[str]] = _OPTIONS
    entry_keys: ClassVar[frozenset[str]] = _OPTIONS
    options: SageMakerOptions

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> SageMakerOptions:
        check_keys(raw, cls.option_names)
        response_format = raw.get("response_format", "")
        if "response_format" in raw and response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be csv or json, not {response_format!r}")
        return SageMakerOptions(
            send_header=option(raw, "send_header", bool, True),
            response_header=option(raw, "response_header", bool, False),
            response_format=str(response_format),
        )

    @classmethod
    def sends_header(cls, spec: ModelSpec) -> bool:
        return bool(cls.options_of(spec).send_header)

    def score(self, batch: Batch) -> Scores:
        payload = batch.as_csv(header=self.options.send_header)
        return retrying(
            self.limits,
            batch.span,
            lambda: with_deadline(
                self.limits, batch.span, self.http, lambda: self._once(payload, batch)
            ),
        )

    def _once(self, payload: bytes, batch: Batch) -> Scores:
        span = batch.span
        reply = self.http.request(
            "POST",
            "/invocations",
            body=payload,
            headers={"Content-Type": "text/csv", "Accept": "text/csv, application/json"},
            span=span,
        )
        check_status(reply, span, batch.first_row)
        fmt = self._format(reply.ctype, span)
        if fmt == "json":
            try:
                answer = json.loads(reply.body)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                raise ModelError(f"the model answered invalid JSON for {span}: {exc}") from exc
            preds = answer.get("predictions") if isinstance(answer, dict) else answer
            if isinstance(preds, list):
                check_count(len(preds), batch.rows, span)
            return json_rows(answer, batch.first_row)
        data = normalise(reply.body)
        header: bytes | None = None
        if self.options.response_header and data:
            nl = data.index(b"\n") + 1
            header, data = data[:nl], data[nl:]
        n = count_records(data)
        check_count(n, batch.rows, span)
        return Scores(rows=n, csv=data, header=_names(header), csv_header=header)

    def _format(self, ctype: str, span: str) -> str:
        if self.options.response_format:
            return self.options.response_format
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
