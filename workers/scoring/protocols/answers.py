"""JSON answers into result rows: pointers, and how one prediction becomes columns.

Shared by the protocols whose models answer JSON (``json``, ``lambda``): the catalog
names a *pointer* into the answer (``predictions``, ``prediction.label``; dots or
slashes between the steps, digits index lists) and how a prediction becomes columns
(``shape``): ``scalar`` (one column), ``list`` (one column per item), ``object``
(its keys, or the ``columns`` the catalog picks, each itself a pointer), or
``auto`` (by what the first prediction is).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scorefleet.errors import ModelError
from scorefleet.settings.declare import unknown_key

SHAPES = ("auto", "scalar", "list", "object")
_MISSING = object()


@functools.lru_cache(maxsize=256)
def split_pointer(pointer: str) -> tuple[str, ...]:
    """``predictions``, ``prediction.label``, ``/outputs/0`` -> its steps."""
    text = pointer.strip().strip("/")
    if not text:
        return ()
    sep = "/" if "/" in text else "."
    return tuple(step for step in text.split(sep))


def resolve(value: Any, steps: Sequence[str]) -> Any:
    """Follow ``steps`` into ``value``; ``_MISSING`` when a step is not there."""
    for step in steps:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def is_missing(value: Any) -> bool:
    return value is _MISSING


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"the model answered invalid JSON for {what}: {exc}") from exc


@dataclass(frozen=True)
class AnswerColumns:
    """How predictions become result columns.

    ``columns`` are pointers into each prediction, an object or a list alike
    (``label``, ``scores.0``, ``0.score``); each names its column by its last step
    (by the whole pointer when two last steps are the same), unless ``names`` renames
    them. Without ``columns``, ``shape`` says how a prediction becomes columns:
    ``scalar`` one column, ``list`` one column per item, ``object`` one per key (the
    first prediction's keys, which every prediction must have, and no other), ``auto``
    by what the first prediction is. A value that is itself an object or a list is
    written as its JSON text. A pointer that leads nowhere, a prediction of another
    shape or width: a :class:`ModelError` naming the data row, never a guessed cell.
    """

    shape: str = "auto"
    #: pointers into each prediction, one per output column
    columns: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> AnswerColumns:
        shape = raw.get("shape", "auto")
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
        columns = _strings(raw.get("columns", []), "columns")
        names = _strings(raw.get("names", []), "names")
        if names and columns and len(names) != len(columns):
            raise ValueError("names must name each of the columns")
        if columns and shape == "scalar":
            raise ValueError(
                "columns point into a prediction that is an object or a list; with shape "
                "scalar there is nothing to point into (rename the column with names)"
            )
        for pointer in columns:
            if not split_pointer(pointer):
                raise ValueError(f"columns: {pointer!r} points nowhere")
        if len(set(names)) != len(names):
            raise ValueError("names must be different from each other")
        return cls(shape, columns, names)

    def header(self, first: Any) -> tuple[str, ...] | None:
        """The output columns' names, from the options and the first prediction."""
        if self.names:
            return self.names
        if self.columns:
            return pointer_names(self.columns)
        shape = self._shape_of(first)
        if shape == "object":
            return tuple(str(k) for k in first) if isinstance(first, dict) else ()
        if shape == "list":
            n = len(first) if isinstance(first, list) else 0
            return tuple(f"prediction_{i}" for i in range(n))
        return ("prediction",)

    def _shape_of(self, value: Any) -> str:
        if self.shape != "auto":
            return self.shape
        if isinstance(value, dict):
            return "object"
        if isinstance(value, list):
            return "list"
        return "scalar"

    def row(self, value: Any, width: int, row: int, keys: Sequence[str] = ()) -> list[Any]:
        """One prediction as ``width`` values (``row``: its data row, for messages;
        ``keys``: an ``object`` prediction's keys, the first prediction's)."""
        shape = self._shape_of(value)
        if shape == "object" and not isinstance(value, dict):
            raise ModelError(f"the prediction for data row {row} is not an object: {_short(value)}")
        if shape == "list" and not isinstance(value, list):
            raise ModelError(f"the prediction for data row {row} is not a list: {_short(value)}")
        if self.columns:
            out = self._picked(value, row)
        elif shape == "object":
            out = self._keyed(value, row, keys or tuple(value))
        elif shape == "list":
            out = list(value)
        else:
            if isinstance(value, dict | list):
                raise ModelError(
                    f"the prediction for data row {row} is not a single value: {_short(value)} "
                    "(say how it becomes columns: shape list|object, or columns)"
                )
            out = [value]
        if len(out) != width:
            raise ModelError(
                f"the prediction for data row {row} has {len(out)} values where the first had "
                f"{width}: {_short(value)}"
            )
        return out

    def _picked(self, value: Any, row: int) -> list[Any]:
        if not isinstance(value, dict | list):
            raise ModelError(
                f"the prediction for data row {row} is a single value, but columns "
                f"{', '.join(map(repr, self.columns))} point into it: {_short(value)}"
            )
        out = []
        for pointer in self.columns:
            got = resolve(value, split_pointer(pointer))
            if got is _MISSING:
                raise ModelError(
                    f"the prediction for data row {row} has nothing at {pointer!r} "
                    f"(columns): {_short(value)}"
                )
            out.append(got)
        return out

    @staticmethod
    def _keyed(value: dict[str, Any], row: int, keys: Sequence[str]) -> list[Any]:
        missing = [k for k in keys if k not in value]
        extra = [k for k in value if k not in keys]
        if missing or extra:
            what = (
                f"has no {', '.join(map(repr, missing))}"
                if missing
                else f"has {', '.join(map(repr, extra))}, which the first prediction has not"
            )
            raise ModelError(
                f"the prediction for data row {row} {what}: {_short(value)} (every "
                "prediction needs the first one's keys; pick some with columns)"
            )
        return [value[k] for k in keys]


def pointer_names(pointers: Sequence[str]) -> tuple[str, ...]:
    """Column names of pointers: each its last step, or, where two last steps are the
    same (``0.score``, ``1.score``), the whole pointer."""
    last = [split_pointer(p)[-1] for p in pointers]
    return tuple(
        name if last.count(name) == 1 else ".".join(split_pointer(p))
        for name, p in zip(last, pointers, strict=True)
    )


def rows_of(
    cols: AnswerColumns, preds: Sequence[Any], first_row: int
) -> tuple[tuple[str, ...] | None, list[list[Any]]]:
    """Predictions (one per input row) as the output's names and rows."""
    if not preds:
        return None, []
    if cols.shape == "auto" and not cols.columns:  # the first prediction decides
        cols = dataclasses.replace(cols, shape=cols._shape_of(preds[0]))
    header = cols.header(preds[0])
    keys = tuple(preds[0]) if isinstance(preds[0], dict) and not cols.columns else ()
    width = len(header or ())
    return header, [cols.row(p, width, first_row + i, keys) for i, p in enumerate(preds)]


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of names")
    return tuple(value)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


def option(raw: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    """One option of a protocol's catalog object, of type ``kind``."""
    value = raw.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{key} must be a {kind.__name__}, not {value!r}")
    return value


def check_keys(raw: Mapping[str, Any], known: Iterable[str]) -> None:
    """ValueError naming every key of ``raw`` that is no option, each with the nearest
    known one."""
    names = frozenset(known)
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError("; ".join(unknown_key(k, names, "option") for k in unknown))
