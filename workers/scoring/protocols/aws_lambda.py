"""The ``lambda`` protocol: AWS Lambda container images, run unchanged.

An image built ``FROM`` the Lambda Python base image (``CMD ["app.handler"]``) runs
outside Lambda with the Runtime Interface Emulator on port 8080:
``POST /2015-03-31/functions/function/invocations`` with the event as the body
answers the handler's return value. There is no health endpoint: ready means the
port accepts a connection (plus, if the catalog gives ``lambda.probe_event``, that
event is invoked and must not fail).

One record per invocation, sent concurrently (at most ``limits.pool_size`` at once),
the record wrapped as the image expects (``lambda.event``):

* ``body-string`` (default, what API Gateway sends): ``{"body": "<record as JSON>"}``
* ``body-object``: ``{"body": {<record>}}``
* ``bare``: the record itself.

An empty CSV cell is JSON ``null``. An answer with ``statusCode``/``body`` is
unwrapped (a non-2xx status is an error with its body in the ``.error``; the body is
parsed as JSON when it is a string); then ``lambda.response`` points into it and
``shape`` / ``columns`` / ``names`` say how the prediction becomes columns
(``response: "prediction"`` + ``columns: ["label", "probability"]``). A handler
that raised (the emulator answers ``{"errorMessage", "errorType", ...}``) refused
its record: its message goes into the ``.error``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scorefleet.errors import ModelError, ModelUnavailable, RowsRefused
from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores, scores_from_rows
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
from workers.scoring.protocols.base import HttpCheck, ModelProtocol, PortCheck, Readiness
from workers.scoring.protocols.calls import (
    CallLimits,
    check_status,
    fan_out,
    server_error,
    snippet,
)

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
EVENTS = ("body-string", "body-object", "bare")
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class LambdaOptions:
    event: str = "body-string"
    response: tuple[str, ...] = ()
    columns: AnswerColumns = field(default_factory=AnswerColumns)
    probe_event: Any = None


def wrap(record: Mapping[str, Any], event: str, dumps: Callable[[Any], str] | None = None) -> Any:
    """The event of one record (``dumps``: how a ``body-string`` is written; the json
    module's compact JSON unless the record's values came from the fast path)."""
    if event == "bare":
        return dict(record)
    if event == "body-object":
        return {"body": dict(record)}
    if dumps is not None:
        return {"body": dumps(dict(record))}
    return {"body": json.dumps(record, separators=(",", ":"))}


def _fast_text(value: Any) -> str:
    return wire.dumps(value).decode("utf-8")


class LambdaProtocol(ModelProtocol):
    name: ClassVar[str] = "lambda"
    options_key: ClassVar[str | None] = "lambda"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"event", "response", "shape", "columns", "names", "probe_event"}
    )
    options: LambdaOptions

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> LambdaOptions:
        check_keys(raw, cls.option_names)
        event = option(raw, "event", str, "body-string")
        if event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, not {event!r}")
        return LambdaOptions(
            event=event,
            response=split_pointer(option(raw, "response", str, "")),
            columns=AnswerColumns.parse(raw),
            probe_event=raw.get("probe_event"),
        )

    @classmethod
    def readiness(cls, spec: ModelSpec) -> Readiness:
        """No health endpoint: the port, and the probe event when the catalog gives one
        (run by :meth:`ready`: its answer must not be the handler's error)."""
        if cls.options_of(spec).probe_event is None:
            return Readiness((PortCheck(),))
        event = HttpCheck(INVOKE_PATH, "POST", shown="an answer to the probe event")
        return Readiness((PortCheck(), event))

    def __init__(self, endpoint: str, spec: ModelSpec, limits: CallLimits) -> None:
        super().__init__(endpoint, spec, limits)
        self._fanout = ThreadPoolExecutor(limits.pool_size, thread_name_prefix="lambda-invoke")

    def close(self) -> None:
        self._fanout.shutdown(wait=False, cancel_futures=True)
        super().close()

    def ready(self, timeout: float) -> bool:
        if not self.http.accepts(timeout):
            return False
        if self.options.probe_event is None:
            return True
        body = json.dumps(self.options.probe_event).encode("utf-8")
        reply = self.http.probe("POST", INVOKE_PATH, timeout, body=body)
        if reply is None or reply.status != 200:
            return False
        try:
            self._unwrap(json.loads(reply.body), "the probe event")
        except (ValueError, ModelError, ModelUnavailable):
            return False
        return True

    # --------------------------------------------------------------- scoring
    def score(self, batch: Batch) -> Scores:
        try:
            records = wire.records_of(batch.columns, wire.values_of(wire.typed_columns(batch)))
            fast = True
        except wire.Fallback:
            records, fast = batch.as_records(), False
        calls = [
            functools.partial(self._invoke, rec, batch.first_row + i, fast)
            for i, rec in enumerate(records)
        ]
        preds = fan_out(self._fanout, self.limits, self.http, batch.span, calls)
        header, rows = rows_of(self.options.columns, preds, batch.first_row)
        return scores_from_rows(rows, header)

    def _invoke(self, record: Mapping[str, Any], row: int, fast: bool = False) -> Any:
        span = f"data row {row}"
        if fast:  # finite numbers, text, null: orjson writes what json would
            body = wire.dumps(wrap(record, self.options.event, _fast_text))
        else:
            body = json.dumps(wrap(record, self.options.event), separators=(",", ":")).encode()
        reply = self.http.request("POST", INVOKE_PATH, body=body, headers=_JSON, span=span)
        check_status(reply, span, 1)  # the emulator itself (a 5xx: it is unwell)
        try:
            answer = wire.loads(reply.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            answer = parse_json(reply.body, span)  # the reference's error
        value = self._unwrap(answer, span)
        pred = resolve(value, self.options.response)
        if is_missing(pred):
            raise ModelError(
                f"the handler's answer for {span} has no "
                f"{'.'.join(self.options.response)!r}: {snippet(json.dumps(value))}"
            )
        return pred

    @staticmethod
    def _unwrap(answer: Any, span: str) -> Any:
        """The handler's return value: an error, an API Gateway style answer
        (``statusCode``/``body``), or the value itself."""
        if isinstance(answer, dict) and "errorMessage" in answer and "statusCode" not in answer:
            kind = answer.get("errorType") or "an error"
            raise RowsRefused(
                f"the handler raised {kind} for {span}: {snippet(str(answer['errorMessage']))}"
            )
        if not isinstance(answer, dict) or "statusCode" not in answer:
            return answer
        status = answer.get("statusCode")
        body = answer.get("body")
        text = body if isinstance(body, str) else json.dumps(body)
        if not isinstance(status, int) or isinstance(status, bool):
            raise ModelError(f"the handler answered {span} with statusCode {status!r}")
        if status == 429 or status >= 500:
            raise server_error(status, text, f"the handler answered {status} for {span}")
        if not 200 <= status < 300:
            raise RowsRefused(f"the handler rejected {span} with {status}: {snippet(text)}")
        if isinstance(body, str):
            try:
                return json.loads(body)
            except ValueError:
                return body  # a plain text answer: one value
        return body
