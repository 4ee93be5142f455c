"""The check of a :class:`~.sample.FileSample` against a :class:`~.spec.Contract`:
every misfit (:func:`problems`), the message the ``.error`` and ``scorefleet check``
carry (:func:`message`), and :func:`require`, which raises it."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scorefleet.errors import ContractMismatch
from workers.scoring.contract.sample import FileSample
from workers.scoring.contract.spec import TYPES, Column, Contract

_LIST_AT_MOST = 40


@dataclass(frozen=True)
class Problem:
    #: missing | extra | order | count | mistyped | empty
    what: str
    column: str
    detail: str = ""


_NUMBER_TYPES = (int, float, decimal.Decimal)


def _parses(kind: type, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def fits(expected: str, value: Any, *, text: bool) -> bool:
    """Does a (non-empty) value fit a contract type? ``text``: it is CSV text, which
    the model reads (a number in a CSV file is text that reads as one)."""
    if expected == "any" or value is None:
        return True
    if isinstance(value, bool):
        return expected in ("boolean", "string") and (expected == "boolean" or text)
    if expected == "number":
        return isinstance(value, _NUMBER_TYPES) or (
            text and isinstance(value, str) and _parses(float, value)
        )
    if expected == "integer":
        return isinstance(value, int) or (text and isinstance(value, str) and _parses(int, value))
    if expected == "boolean":
        return isinstance(value, str) and text and value.strip().lower() in ("true", "false")
    if expected == "string":
        return isinstance(value, str) or text
    if expected == "datetime":
        return isinstance(value, str | dt.date | dt.datetime)
    return isinstance(value, bytes | str)  # binary


def _type_fits(expected: str, found: str) -> bool:
    """Does a column of type ``found`` (a file's schema) fit ``expected``?"""
    if expected == "any" or found == "any":
        return True
    allowed = {
        "number": ("number", "integer"),
        "integer": ("integer",),
        "boolean": ("boolean",),
        "string": ("string",),
        "datetime": ("datetime", "string"),
        "binary": ("binary", "string"),
    }
    return found in allowed.get(expected, ())


def _value_shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_column(col: Column, at: int, sample: FileSample) -> list[Problem]:
    """The values (or the schema type) of the model's column number ``at`` against
    ``col``."""
    found: list[Problem] = []
    name = _name(sample, at)
    if sample.types:
        kind = sample.types[at]
        if not _type_fits(col.type, kind):
            held = TYPES.get(kind, "nested values") if kind else "nested values"
            found.append(
                Problem("mistyped", name, f"holds {held}; the model takes {TYPES[col.type]}")
            )
        if not col.nullable and sample.nulls and sample.nulls[at]:
            found.append(Problem("empty", name, f"has {sample.nulls[at]:,d} empty value(s)"))
        return found
    cells = sample.values[at] if at < len(sample.values) else ()
    bad = next(((r, v) for r, v in cells if not fits(col.type, v, text=sample.text)), None)
    if bad is not None:
        row, value = bad
        found.append(
            Problem(
                "mistyped",
                name,
                f"{_value_shown(value)} on data row {row} is not {TYPES[col.type]}",
            )
        )
    if not col.nullable:
        empty = next((r for r, v in cells if v is None), None)
        if empty is not None:
            found.append(Problem("empty", name, f"empty on data row {empty}"))
    return found


def _name(sample: FileSample, at: int) -> str:
    name = sample.model[at]
    return name if sample.named and name else f"column {at + 1}"


def problems(contract: Contract, sample: FileSample) -> list[Problem]:
    """Every way the file's columns do not fit ``contract``, in the order: missing,
    extra, order, count, then each column's types."""
    if contract.positional or not sample.named:
        return _by_position(contract, sample)
    found: list[Problem] = []
    sent = set(sample.model)
    for col in contract.columns:
        if col.name not in sent and col.required:
            why = (
                "the file has it, but model_columns/drop_columns leaves it out"
                if col.name in sample.columns
                else "the file has no such column"
            )
            found.append(Problem("missing", col.name, why))
    names = set(contract.names)
    if contract.closed:
        found += [Problem("extra", c) for c in sample.model if c not in names]
    if contract.ordered:
        given = [c for c in sample.model if c in names]
        wanted = [c for c in contract.names if c in sent]
        if given != wanted and not any(p.what == "missing" for p in found):
            found.append(Problem("order", "", f"{_listing(given)}, not {_listing(wanted)}"))
    for col in contract.columns:
        if col.name in sent:
            found += _check_column(col, sample.model.index(col.name), sample)
    return found


def _by_position(contract: Contract, sample: FileSample) -> list[Problem]:
    found: list[Problem] = []
    want, have = len(contract.columns), len(sample.model)
    required = sum(1 for c in contract.columns if c.required)
    if have < required or (have > want and (contract.closed or contract.positional)):
        found.append(
            Problem("count", "", f"the model takes {want} column(s), the file gives {have}")
        )
    for at, col in enumerate(contract.columns[: len(sample.model)]):
        found += _check_column(col, at, sample)
    return found


# --------------------------------------------------------------------- messages
def _listing(columns: Sequence[str]) -> str:
    shown = ", ".join(c if c else "''" for c in columns[:_LIST_AT_MOST])
    more = len(columns) - _LIST_AT_MOST
    return (shown + (f" and {more} more" if more > 0 else "")) or "(none)"


def message(contract: Contract, sample: FileSample, found: Sequence[Problem]) -> str:
    """The ``.error``'s text for ``found``: each problem, the file's columns beside what
    the model takes, and what would fix it (a tag, the file, the catalog entry)."""
    lines = [f"the file's columns do not fit the model's inputs ({contract.source}):"]
    for p in found:
        if p.what == "missing":
            lines.append(f"  missing:  {p.column} ({p.detail})")
        elif p.what == "extra":
            lines.append(f"  extra:    {p.column} (the model takes no other columns)")
        elif p.what == "order":
            lines.append(f"  order:    the model reads its columns by position: {p.detail}")
        elif p.what == "count":
            lines.append(f"  count:    {p.detail}")
        else:
            lines.append(f"  {p.what + ':':9} {p.column}: {p.detail}")
    if sample.named:
        lines.append(f"the file's columns: {_listing(sample.columns)}")
    else:
        lines.append(f"the file's columns: {len(sample.columns)}, unnamed (no header row)")
    if sample.left_out:
        lines.append(f"the model is sent:  {_listing(sample.model)}")
    takes = ", ".join(c.shown() for c in contract.columns[:_LIST_AT_MOST])
    if contract.positional and len(set(contract.columns)) == 1:
        first = contract.columns[0].shown().removeprefix("(by position) ")
        takes = f"{len(contract.columns)} column(s) by position, each {first}"
    elif contract.positional:
        takes = f"{len(contract.columns)} column(s) by position: {takes}"
    lines.append(f"the model takes:    {takes}")
    lines.append("to fix it:")
    lines += [f"  - {hint}" for hint in _hints(contract, sample, found)]
    return "\n".join(lines)


def _hints(contract: Contract, sample: FileSample, found: Sequence[Problem]) -> list[str]:
    what = {p.what for p in found}
    hints: list[str] = []
    missing = [p for p in found if p.what == "missing"]
    if not sample.named and not contract.positional:
        hints.append(
            "give the file a header row naming its columns (or set SCOREFLEET_CSV_HEADER="
            "present if its first row is the header)"
        )
    left_out = [p.column for p in missing if p.column in sample.columns]
    if left_out:
        hints.append(
            f"stop leaving out {', '.join(left_out)} (the file's model_columns/drop_columns "
            "tag, or the image's catalog entry)"
        )
    absent = [p.column for p in missing if p.column not in sample.columns]
    if absent:
        hints.append(f"add {', '.join(absent)} to the file")
    extra = [p.column for p in found if p.what == "extra"]
    if extra:
        hints.append(
            f"tag the file drop_columns={' '.join(extra)} (or model_columns="
            f"{' '.join(c for c in contract.names if c in sample.model)}) to leave the "
            "others out"
        )
    if "count" in what:
        hints.append(
            "send the model exactly its columns: tag the file model_columns=<its columns, "
            "in order> or drop_columns=<the others>"
        )
    if "order" in what:
        hints.append(
            "tag the file model_columns="
            + " ".join(c for c in contract.names if c in sample.model)
            + " (the model is sent them in that order)"
        )
    if what & {"mistyped", "empty"}:
        hints.append("correct those values in the file")
    if contract.remedy:
        hints.append(f"or, if the model does take such files: {contract.remedy}")
    return hints


def require(contract: Contract | None, sample: FileSample | None) -> None:
    """Raise :class:`ContractMismatch` unless the sample fits the contract (nothing to
    check without either)."""
    if contract is None or sample is None:
        return
    found = problems(contract, sample)
    if found:
        raise ContractMismatch(message(contract, sample, found))
