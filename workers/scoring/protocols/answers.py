"""JSON answers into result rows: pointers, and how one prediction becomes columns.

Shared by the protocols whose models answer JSON (``json``, ``lambda``): the catalog
names a *pointer* into the answer (``predictions``, ``prediction.label``; dots or
slashes between the steps, digits index lists) and how a prediction becomes columns
(``shape``): ``scalar`` (one column), ``list`` (one column per item), ``object``
(its keys, or the ``columns`` the catalog picks, each itself a pointer), or
``auto`` (by what the first prediction is).
"""

from __future__ import annotations

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
    """How predictions become result columns."""

    shape: str = "auto"
    #: output column names; for ``object`` the pointers to pick (their last step names
    #: the column unless ``names`` says otherwise)
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
        return cls(shape, columns, names)

    def header(self, first: Any) -> tuple[str, ...] | None:
        """The output columns' names, from the options and the first prediction."""
        if self.names:
            return self.names
        shape = self._shape_of(first)
        if shape == "object":
            keys = self.columns or tuple(str(k) for k in first)
            return tuple(split_pointer(k)[-1] if split_pointer(k) else k for k in keys)
        if self.columns:
            return self.columns
        if shape == "list":
            return tuple(f"prediction_{i}" for i in range(len(first)))
        return ("prediction",)

    def _shape_of(self, value: Any) -> str:
        if self.shape != "auto":
            return self.shape
        if isinstance(value, dict):
            return "object"
        if isinstance(value, list):
            return "list"
        return "scalar"

    def row(self, value: Any, width: int, row: int) -> list[Any]:
        """One prediction as ``width`` values (``row``: its data row, for messages)."""
        shape = self._shape_of(value)
        if shape == "object":
            if not isinstance(value, dict):
                raise ModelError(
                    f"the prediction for data row {row} is not an object: {_short(value)}"
                )
            keys = self.columns or tuple(value)
            out = []
            for key in keys:
                got = resolve(value, split_pointer(key)) if self.columns else value[key]
                if got is _MISSING:
                    raise ModelError(
                        f"the prediction for data row {row} has no {key!r}: {_short(value)}"
                    )
                out.append(got)
        elif shape == "list":
            if not isinstance(value, list):
                raise ModelError(
                    f"the prediction for data row {row} is not a list: {_short(value)}"
                )
            out = list(value)
        else:
            if isinstance(value, dict | list):
                raise ModelError(
                    f"the prediction for data row {row} is not a single value: {_short(value)} "
                    "(say how it becomes columns: shape list|object)"
                )
            out = [value]
        if len(out) != width:
            raise ModelError(
                f"the prediction for data row {row} has {len(out)} values where the first had "
                f"{width}: {_short(value)}"
            )
        return out


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
