"""The ``json`` protocol: JSON HTTP APIs -- a team's Flask/FastAPI app, KServe v1
(``:predict``), TF Serving REST, BentoML, MLflow's ``/invocations`` in JSON.

Options (catalog ``json: {...}``):

* ``path``: where to POST (``/v1/models/iris:predict``); required.
* ``ready_path`` (default ``/``), ``ready_method`` (GET), ``ready_contains`` (text
  the ready answer must hold, e.g. ``pong``): ready is a 200 answer that holds it.
* ``request``: the request's shape --
  ``instances`` (``{"instances": [...]}``, each row a list or an object as
  ``instances_as`` says: ``lists`` default, ``objects``), ``records`` (a bare list
  of objects), ``dataframe_split`` (``{"dataframe_split": {"columns": [...],
  "data": [[...]]}}``), or ``single`` (one record per request, as an object,
  sent concurrently, at most ``limits.pool_size`` at once).
* ``response``: a pointer to the predictions in the answer (``predictions``;
  empty: the answer itself); for ``single`` the pointer leads to one prediction.
* ``shape`` / ``columns`` / ``names``: how a prediction becomes columns
  (workers/scoring/protocols/answers.py).

An empty CSV cell is JSON ``null``; numbers are sent as numbers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scorefleet.errors import ModelError
from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores, column_names, scores_from_rows
from workers.scoring.protocols import wire
from workers.scoring.protocols.answers import (
    AnswerColumns,
    check_keys,
    is_missing,
    option,
    parse_json,
    resolve,
    rows_of,
    split_pointer,
)
from workers.scoring.protocols.base import HttpCheck, ModelProtocol, Readiness
from workers.scoring.protocols.calls import (
    CallLimits,
    check_count,
    check_status,
    fan_out,
    retrying,
    with_deadline,
)

REQUESTS = ("instances", "records", "dataframe_split", "single")
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True)
class JsonOptions:
    path: str
    ready_path: str = "/"
    ready_method: str = "GET"
    ready_contains: str = ""
    request: str = "instances"
    instances_as: str = "lists"
    response: tuple[str, ...] = ("predictions",)
    columns: AnswerColumns = field(default_factory=AnswerColumns)


def parse_readiness(raw: Mapping[str, Any], default_path: str) -> tuple[str, str, str]:
    path = option(raw, "ready_path", str, default_path)
    method = option(raw, "ready_method", str, "GET").upper()
    if method not in ("GET", "POST", "HEAD"):
        raise ValueError(f"ready_method must be GET, POST or HEAD, not {method!r}")
    if not path.startswith("/"):
        raise ValueError(f"ready_path must start with '/', not {path!r}")
    return path, method, option(raw, "ready_contains", str, "")


class JsonProtocol(ModelProtocol):
    name: ClassVar[str] = "json"
    options_key: ClassVar[str | None] = "json"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {
            "path",
            "ready_path",
            "ready_method",
            "ready_contains",
            "request",
            "instances_as",
            "response",
            "shape",
            "columns",
            "names",
        }
    )
    options: JsonOptions

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> JsonOptions:
        check_keys(raw, cls.option_names)
        path = option(raw, "path", str, "")
        if not path.startswith("/"):
            raise ValueError("path is required: where to POST, e.g. /v1/models/iris:predict")
        request = option(raw, "request", str, "instances")
        if request not in REQUESTS:
            raise ValueError(f"request must be one of {', '.join(REQUESTS)}, not {request!r}")
        instances_as = option(raw, "instances_as", str, "lists")
        if instances_as not in ("lists", "objects"):
            raise ValueError(f"instances_as must be lists or objects, not {instances_as!r}")
        ready_path, ready_method, ready_contains = parse_readiness(raw, "/")
        default_response = "" if request == "single" else "predictions"
        return JsonOptions(
            path=path,
            ready_path=ready_path,
            ready_method=ready_method,
            ready_contains=ready_contains,
            request=request,
            instances_as=instances_as,
            response=split_pointer(option(raw, "response", str, default_response)),
            columns=AnswerColumns.parse(raw),
        )

    @classmethod
    def readiness(cls, spec: ModelSpec) -> Readiness:
        o = cls.options_of(spec)
        return Readiness((HttpCheck(o.ready_path, o.ready_method, o.ready_contains),))

    def __init__(self, endpoint: str, spec: ModelSpec, limits: CallLimits) -> None:
        super().__init__(endpoint, spec, limits)
        self._fanout: ThreadPoolExecutor | None = None
        if self.options.request == "single":
            self._fanout = ThreadPoolExecutor(limits.pool_size, thread_name_prefix="json-row")

    def close(self) -> None:
        if self._fanout is not None:
            self._fanout.shutdown(wait=False, cancel_futures=True)
        super().close()

    # --------------------------------------------------------------- scoring
    def score(self, batch: Batch) -> Scores:
        if self.options.request == "single":
            return self._score_single(batch)
        try:
            body = wire.dumps(self.fast_body(batch))
        except wire.Fallback:
            body = json.dumps(self.request_body(batch), separators=(",", ":")).encode("utf-8")

        def once() -> Scores:
            answer = self._post(body, batch.span, batch.first_row)
            preds = resolve(answer, self.options.response)
            if not isinstance(preds, list):
                raise ModelError(
                    f"the model's answer for {batch.span} has no list of predictions at "
                    f"{'.'.join(self.options.response) or 'its top level'}: "
                    f"{_short(answer)}"
                )
            check_count(len(preds), batch.rows, batch.span)
            return self._rows(preds, batch.first_row)

        return retrying(
            self.limits, batch.span, lambda: with_deadline(self.limits, batch.span, self.http, once)
        )

    def request_body(self, batch: Batch) -> Any:
        o = self.options
        if o.request == "records":
            return batch.as_records()
        if o.request == "dataframe_split":
            return {
                "dataframe_split": {
                    "columns": column_names(batch.columns),
                    "data": batch.as_rows(),
                }
            }
        rows: list[Any] = batch.as_records() if o.instances_as == "objects" else batch.as_rows()
        return {"instances": rows}

    def fast_body(self, batch: Batch) -> Any:
        """:meth:`request_body`, its values typed by pyarrow (:mod:`.wire`); raises
        :class:`~.wire.Fallback` when only :meth:`request_body` can type them exactly."""
        o = self.options
        columns = wire.values_of(wire.typed_columns(batch))
        if o.request == "records" or (o.request == "instances" and o.instances_as == "objects"):
            records = wire.records_of(batch.columns, columns)
            return records if o.request == "records" else {"instances": records}
        rows = wire.rows_of(columns)
        if o.request == "dataframe_split":
            return {"dataframe_split": {"columns": column_names(batch.columns), "data": rows}}
        return {"instances": rows}

    def records(self, batch: Batch) -> tuple[list[dict[str, Any]], bool]:
        """The batch's records (one request each, ``single``), typed fast when it can
        (then True: their numbers are finite, orjson writes them)."""
        try:
            columns = wire.values_of(wire.typed_columns(batch))
            return wire.records_of(batch.columns, columns), True
        except wire.Fallback:
            return batch.as_records(), False

    def _post(self, body: bytes, span: str, first_row: int) -> Any:
        reply = self.http.request("POST", self.options.path, body=body, headers=_JSON, span=span)
        check_status(reply, span, first_row)
        try:
            return wire.loads(reply.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return parse_json(reply.body, span)  # the reference's error

    def _rows(self, preds: list[Any], first_row: int) -> Scores:
        header, rows = rows_of(self.options.columns, preds, first_row)
        return scores_from_rows(rows, header)

    # ------------------------------------------- one record per request
    def _score_single(self, batch: Batch) -> Scores:
        """Each record its own request (:func:`fan_out`); nothing is written unless
        every row has its prediction."""
        assert self._fanout is not None
        records, fast = self.records(batch)
        calls = [
            functools.partial(self._one, rec, batch.first_row + i, fast)
            for i, rec in enumerate(records)
        ]
        preds = fan_out(self._fanout, self.limits, self.http, batch.span, calls)
        return self._rows(preds, batch.first_row)

    def _one(self, record: Mapping[str, Any], row: int, fast: bool = False) -> Any:
        span = f"data row {row}"
        body = wire.dumps(record) if fast else json.dumps(record, separators=(",", ":")).encode()
        answer = self._post(body, span, 1)
        pred = resolve(answer, self.options.response)
        if is_missing(pred):
            raise ModelError(
                f"the model's answer for {span} has no "
                f"{'.'.join(self.options.response)!r}: {_short(answer)}"
            )
        return pred


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:300] + "..."
