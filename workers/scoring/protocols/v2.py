"""The ``v2`` protocol: the Open Inference Protocol (KServe v2, Triton, MLServer,
Seldon Core 2), over REST.

Ready: ``GET /v2/health/ready`` and ``GET /v2/models/{name}[/versions/{v}]/ready``
both answer 200. Scoring: ``POST /v2/models/{name}[/versions/{v}]/infer`` with the
mini-batch as input tensors, in one of two layouts (catalog ``v2.layout``):

* ``tensor`` (default): one 2-D tensor ``[rows, columns]`` of every model column,
  named ``v2.input_name``, of ``v2.datatype`` (FP32, FP64, INT64 or BYTES);
* ``columns``: one 1-D tensor per column, named after it (``v2.datatypes`` may give
  a column its own datatype).

An empty CSV cell goes into an FP32/FP64 tensor as JSON ``null`` (MLServer reads it
as NaN, so a model with an imputer scores it; a server that cannot take it answers
4xx), into a BYTES tensor as ``""``; an INT64 tensor cannot hold it: the rows are
refused. ``NaN`` itself is not JSON and is never sent.

Each output tensor (all of them, or those ``v2.outputs`` asks for, in that order)
becomes output columns: a ``[rows]`` tensor one column named after it, a
``[rows, k]`` tensor ``<name>_0`` ... ``<name>_{k-1}``. A tensor whose first
dimension is not the batch's rows, or whose data does not fill its shape, is an
error: nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

from scorefleet.errors import ContractMismatch, ModelError, RowsRefused
from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores, column_names, scores_from_rows
from workers.scoring.contract import Column, Contract
from workers.scoring.protocols import wire
from workers.scoring.protocols.answers import check_keys, option, parse_json
from workers.scoring.protocols.base import HttpCheck, ModelProtocol, Readiness
from workers.scoring.protocols.calls import check_status, retrying, row_note, with_deadline
from workers.scoring.values import INT64_MAX, INT64_MIN, json_number

DATATYPES = ("FP32", "FP64", "INT64", "BYTES")
#: the Python types (from Batch.as_rows) a datatype takes unchanged: numbers as typed
#: per column (finite), None as JSON null in a float tensor
_FITS: dict[str, tuple[type, ...]] = {
    "FP32": (float, int, type(None)),
    "FP64": (float, int, type(None)),
    "INT64": (int,),
    "BYTES": (str,),
}
#: the largest finite FP32
FP32_MAX = 3.4028234663852886e38
LAYOUTS = ("tensor", "columns")


@dataclass(frozen=True)
class V2Options:
    model_name: str
    model_version: str = ""
    layout: str = "tensor"
    datatype: str = "FP64"
    datatypes: Mapping[str, str] = field(default_factory=dict)
    input_name: str = "input-0"
    outputs: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> str:
        path = f"/v2/models/{quote(self.model_name, safe='')}"
        if self.model_version:
            path += f"/versions/{quote(self.model_version, safe='')}"
        return path


def _datatype(value: Any, key: str) -> str:
    if value not in DATATYPES:
        raise ValueError(f"{key} must be one of {', '.join(DATATYPES)}, not {value!r}")
    return str(value)


def _to(datatype: str, value: Any) -> Any:
    """One cell as a tensor element of ``datatype``; ValueError if it cannot be. Text
    is a number only when it is a JSON number (:func:`json_number`: ``1_000``,
    ``nan`` or ``١٢`` are not), and a number must fit the tensor's type exactly
    enough to mean the same: an INT64 a whole number within 64 bits, an FP32 a
    finite number within its range."""
    if value is None:  # an empty cell (JSON null)
        if datatype in ("FP32", "FP64"):
            return None  # JSON null: MLServer reads it as NaN, an imputer scores it
        if datatype == "BYTES":
            return ""
        raise ValueError("an empty cell")
    if datatype == "BYTES":
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, bool):
        raise ValueError(f"{_shown(value)} is not a number")
    number = json_number(value) if isinstance(value, str) else value
    if not isinstance(number, int | float):
        raise ValueError(f"{_shown(value)} is not a number")
    if datatype == "INT64":
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(f"{_shown(value)} is not an integer")
        whole = int(number)
        if not INT64_MIN <= whole <= INT64_MAX:
            raise ValueError(f"{_shown(value)} is beyond 64-bit integers")
        return whole
    if not math.isfinite(number):
        raise ValueError(f"{_shown(value)} is not a finite number")
    if datatype == "FP32" and abs(number) > FP32_MAX:
        raise ValueError(f"{_shown(value)} is beyond the range of FP32")
    return number


def _shown(value: Any) -> str:
    """A cell as an error names it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class V2Protocol(ModelProtocol):
    name: ClassVar[str] = "v2"
    options_key: ClassVar[str | None] = "v2"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {
            "model_name",
            "model_version",
            "layout",
            "datatype",
            "datatypes",
            "input_name",
            "outputs",
            "parameters",
        }
    )
    options: V2Options

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> V2Options:
        check_keys(raw, cls.option_names)
        name = option(raw, "model_name", str, "")
        if not name:
            raise ValueError("model_name is required (the name the server serves the model as)")
        layout = option(raw, "layout", str, "tensor")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        datatypes = option(raw, "datatypes", dict, {})
        outputs = option(raw, "outputs", list, [])
        if not all(isinstance(o, str) and o for o in outputs):
            raise ValueError("outputs must be a list of output tensor names")
        return V2Options(
            model_name=name,
            model_version=str(option(raw, "model_version", str, "")),
            layout=layout,
            datatype=_datatype(raw.get("datatype", "FP64"), "datatype"),
            datatypes={str(k): _datatype(v, f"datatypes.{k}") for k, v in datatypes.items()},
            input_name=option(raw, "input_name", str, "input-0"),
            outputs=tuple(outputs),
            parameters=option(raw, "parameters", dict, {}),
        )

    @classmethod
    def readiness(cls, spec: ModelSpec) -> Readiness:
        """The server, then the model (the one a pod probe checks: the last)."""
        path = cls.options_of(spec).model_path
        return Readiness((HttpCheck("/v2/health/ready"), HttpCheck(f"{path}/ready")))

    # -------------------------------------------------------------- metadata
    def model_contract(self) -> Contract | None:
        """The model's inputs from its metadata (``GET /v2/models/{name}[/versions/v]``:
        each input's name, datatype and shape). With the ``tensor`` layout the file's
        columns fill the input ``v2.input_name`` by position (its shape's second
        dimension says how many); with ``columns`` each input is a column of that name.
        None when the server lists no inputs (MLServer without them in its
        model-settings.json) or has no metadata."""
        opts = self.options
        reply = with_deadline(
            self.limits,
            "its metadata",
            self.http,
            lambda: self.http.request(
                "GET",
                opts.model_path,
                body=None,
                headers={"Accept": "application/json"},
                span="its metadata",
                sent=64 * 1024,
            ),
        )
        if reply.status != 200:
            return None
        try:
            inputs = json.loads(reply.body).get("inputs") or []
        except (ValueError, AttributeError):
            return None
        inputs = [i for i in inputs if isinstance(i, dict) and isinstance(i.get("name"), str)]
        return _metadata_contract(opts, inputs, self.spec.image) if inputs else None

    # --------------------------------------------------------------- scoring
    def score(self, batch: Batch) -> Scores:
        try:
            body = self.fast_request(batch)
        except wire.Fallback:
            body = json.dumps(self.request(batch), separators=(",", ":"), allow_nan=False).encode()
        return retrying(
            self.limits,
            batch.span,
            lambda: with_deadline(
                self.limits, batch.span, self.http, lambda: self._once(body, batch)
            ),
        )

    def request(self, batch: Batch) -> dict[str, Any]:
        """The inference request for ``batch``; RowsRefused names a cell the tensor
        cannot hold (an empty cell, text in a number tensor)."""
        opts = self.options
        rows = batch.as_rows()
        names = column_names(batch.columns)
        if rows and len(rows[0]) != len(names):
            raise RowsRefused(
                f"{batch.span} have {len(rows[0])} fields, the model's {len(names)} columns "
                "need one each"
            )
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in names]
        if opts.layout == "tensor":
            typed = [
                self._column(batch, col, n, opts.datatype)
                for col, n in zip(columns, names, strict=True)
            ]
            inputs = [
                {
                    "name": opts.input_name,
                    "shape": [batch.rows, len(names)],
                    "datatype": opts.datatype,
                    "data": [v for row in zip(*typed, strict=True) for v in row],
                }
            ]
        else:
            inputs = []
            for col, name in zip(columns, names, strict=True):
                dt = opts.datatypes.get(name, opts.datatype)
                data = self._column(batch, col, name, dt)
                inputs.append({"name": name, "shape": [batch.rows], "datatype": dt, "data": data})
        req: dict[str, Any] = {"inputs": inputs}
        if opts.outputs:
            req["outputs"] = [{"name": o} for o in opts.outputs]
        if opts.parameters:
            req["parameters"] = dict(opts.parameters)
        return req

    def fast_request(self, batch: Batch) -> bytes:
        """:meth:`request` as JSON bytes, built from the CSV mini-batch by pyarrow and
        orjson (:mod:`.wire`); :class:`~.wire.Fallback` when only :meth:`request` can
        build it exactly (a cell a tensor cannot hold: it names the cell)."""
        opts = self.options
        columns = wire.typed_columns(batch)
        names = column_names(batch.columns)
        if opts.layout == "tensor":
            data = [_fast_column(c, opts.datatype) for c in columns]
            inputs = [
                {
                    "name": opts.input_name,
                    "shape": [batch.rows, len(names)],
                    "datatype": opts.datatype,
                    "data": wire.flat(data),
                }
            ]
        else:
            inputs = []
            for col, name in zip(columns, names, strict=True):
                dt = opts.datatypes.get(name, opts.datatype)
                data = _fast_column(col, dt)
                inputs.append({"name": name, "shape": [batch.rows], "datatype": dt, "data": data})
        req: dict[str, Any] = {"inputs": inputs}
        if opts.outputs:
            req["outputs"] = [{"name": o} for o in opts.outputs]
        if opts.parameters:
            req["parameters"] = dict(opts.parameters)
        return wire.dumps(req)

    def _column(self, batch: Batch, values: list[Any], column: str, dt: str) -> list[Any]:
        """One column's values as ``dt`` elements: as they are when as_rows typed them
        so already (the usual case: no work per cell), else converted cell by cell."""
        kinds = _FITS[dt]
        if all(type(v) in kinds for v in values) and _in_range(values, dt):
            return values
        return [self._cell(batch, i, v, column, dt) for i, v in enumerate(values)]

    @staticmethod
    def _cell(batch: Batch, i: int, value: Any, column: str, dt: str) -> Any:
        try:
            return _to(dt, value)
        except (ValueError, TypeError) as exc:
            raise RowsRefused(
                f"data row {batch.first_row + i}, column {column!r}: {exc} cannot go into "
                f"a {dt} tensor (v2.datatype / v2.datatypes in the catalog)"
            ) from None

    def _once(self, body: bytes, batch: Batch) -> Scores:
        span = batch.span
        reply = self.http.request(
            "POST",
            f"{self.options.model_path}/infer",
            body=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            span=span,
        )
        if reply.status != 200:
            check_status(reply, span, batch.first_row)
        try:
            answer = wire.loads(reply.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            answer = parse_json(reply.body, span)  # the reference's error
        return self.scores(answer, batch)

    def scores(self, answer: Any, batch: Batch) -> Scores:
        span = batch.span
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise ModelError(f"the model's answer for {span} has no outputs: {_short(answer)}")
        by_name = {str(o.get("name")): o for o in outputs if isinstance(o, dict)}
        wanted = self.options.outputs or tuple(by_name)
        header: list[str] = []
        columns: list[list[Any]] = []
        for name in wanted:
            tensor = by_name.get(name)
            if tensor is None:
                raise ModelError(
                    f"the model's answer for {span} has no output {name!r} "
                    f"(it has {', '.join(by_name)})"
                )
            header_part, cols = _columns_of(tensor, name, batch.rows, span)
            header += header_part
            columns += cols
        rows = [list(r) for r in zip(*columns, strict=True)]
        return scores_from_rows(rows, header)


def _in_range(values: list[Any], dt: str) -> bool:
    """Every number of a column (of types the tensor takes) is within its range."""
    if dt == "INT64":
        return all(INT64_MIN <= v <= INT64_MAX for v in values)
    if dt == "FP32":
        return all(v is None or abs(v) <= FP32_MAX for v in values)
    if dt == "FP64":
        return all(v is None or math.isfinite(v) for v in values)
    return True


def _columns_of(
    tensor: Mapping[str, Any], name: str, rows: int, span: str
) -> tuple[list[str], list[list[Any]]]:
    shape = tensor.get("shape")
    data = tensor.get("data")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and d >= 0 for d in shape)
    ):
        raise ModelError(f"output {name!r} for {span} has no valid shape: {shape!r}")
    if shape[0] != rows:
        raise RowsRefused(
            f"the model answered {shape[0]} result rows for {span} ({rows} rows) in output "
            f"{name!r}; every input row needs exactly one result row, in order"
        )
    if isinstance(data, list) and data and isinstance(data[0], list):
        data = [x for part in data for x in (part if isinstance(part, list) else [part])]
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    if not isinstance(data, list) or len(data) != rows * width:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ModelError(
            f"output {name!r} for {span} has shape {shape} but {got} values{row_note(0)}"
        )
    if len(shape) == 1:
        return [name], [data]
    return (
        [f"{name}_{k}" for k in range(width)],
        [data[k::width] for k in range(width)],
    )


def _fast_column(column: wire.Column, dt: str) -> list[Any]:
    """A typed column as ``dt`` elements, when the reference sends it as it is (every
    value already of a type ``dt`` takes, :data:`_FITS`); else the reference converts
    it cell by cell (or refuses a cell, naming it)."""
    if dt == "FP64" and column.kind in ("int", "float"):
        return column.values
    if dt == "FP32" and column.kind in ("int", "float") and column.magnitude <= FP32_MAX:
        return column.values
    if dt == "INT64" and column.kind == "int" and not column.nulls:
        return column.values
    if dt == "BYTES" and column.kind == "text" and not column.nulls:
        return column.values
    raise wire.Fallback(f"a {column.kind} column into a {dt} tensor")


#: what each v2 datatype holds (a contract type), and whether scorefleet can send an
#: empty cell in it (JSON null in a float tensor, "" in BYTES)
_KINDS = {"BOOL": ("boolean", False), "BYTES": ("any", True)}


def _kind(datatype: str) -> tuple[str, bool]:
    if datatype.startswith("FP"):
        return "number", True
    if datatype.startswith(("INT", "UINT")):
        return "integer", False
    return _KINDS.get(datatype, ("any", True))


def _metadata_contract(
    opts: V2Options, inputs: list[dict[str, Any]], image: str
) -> Contract | None:
    """The contract of a model's metadata inputs, as this entry's options send them
    (None: a tensor whose width it does not say); :class:`ContractMismatch` when the
    options send what the model does not take."""
    source = f"the model's own metadata, GET {opts.model_path}"
    remedy = (
        f"change the v2 options of {image} in the model catalog (layout, input_name, "
        "datatype, datatypes) to what the model's metadata says"
    )
    by_name = {str(i["name"]): i for i in inputs}

    def sent_as(name: str, datatype: str) -> None:
        said = str(by_name[name].get("datatype") or "")
        if said and said != datatype:
            key = "v2.datatype" if opts.layout == "tensor" else f"v2.datatypes.{name}"
            raise ContractMismatch(
                f"the model's metadata (GET {opts.model_path}) says its input {name!r} is "
                f"{said}, but the model catalog sends {datatype} for {image}: set {key} "
                f"to {said}"
            )

    if opts.layout == "tensor":
        tensor = by_name.get(opts.input_name)
        if tensor is None:
            names = ", ".join(repr(n) for n in by_name)
            fix = (
                f"set v2.input_name to {next(iter(by_name))!r}"
                if len(by_name) == 1
                else "set v2.layout to columns (one input per column)"
            )
            raise ContractMismatch(
                f"the model's metadata (GET {opts.model_path}) lists its inputs {names}, "
                f"not {opts.input_name!r}, which the model catalog sends for {image}: {fix}"
            )
        sent_as(opts.input_name, opts.datatype)
        shape = tensor.get("shape") or []
        width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else -1
        if width < 1:
            return None  # [-1, -1]: any number of columns
        kind, nullable = _kind(opts.datatype)
        tensor_columns = (Column("", kind, nullable=nullable),) * width
        return Contract(tensor_columns, closed=True, positional=True, source=source, remedy=remedy)
    columns: list[Column] = []
    for name in by_name:
        datatype = opts.datatypes.get(name, opts.datatype)
        sent_as(name, datatype)
        kind, nullable = _kind(datatype)
        columns.append(Column(name, kind, nullable=nullable))
    return Contract(tuple(columns), closed=True, source=source, remedy=remedy)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:300] + "..."
