"""How a value crosses from one representation to another, one rule per crossing.

What the model receives and what the output keeps equal the input value as the
format's own reference reader reads it (Python's ``csv`` module for CSV text, the
``json`` module for JSON Lines, pyarrow for Parquet), or the file gets an ``.error``
naming the row and the column (docs/formats.md, "Values"). The crossings:

* **CSV text to a JSON value** (a CSV file sent to a JSON-speaking model:
  :func:`json_number`, :func:`typed_cells`): a column of one mini-batch whose every
  non-empty cell is a JSON number (RFC 8259: ``-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?``,
  ASCII digits only, finite) is sent as numbers, each as ``json.loads`` reads its
  text (``7`` an integer, ``7.50`` the float 7.5); any other column is sent as its
  text; an empty cell is ``null``. ``1_000``, `` 12``, ``007``, ``+5``, ``nan``,
  ``١٢`` (Arabic-Indic digits) are text, never numbers.
* **CSV text to a typed column** (a CSV answer written as JSON Lines or Parquet:
  :func:`typed_text`): the same rule over the whole column (its numbers as 64-bit
  integers when they all are integers that fit, else as doubles when each is exact
  as one, else the column stays text); an empty cell is null.
* **JSON values to a typed column** (a JSON answer: :func:`answer_column`): one
  column per answer column of a mini-batch; booleans, integers (64-bit), numbers
  (doubles: an integer beyond 2**53 beside fractions keeps the column as text),
  strings; nested values and mixed kinds are written as their JSON text.

The conversions are small functions of their own so that faster code (issue 25:
the JSON protocols' request and answer conversions) can be checked against them:
``tests/unit/test_values.py`` holds each rule, ``tests/unit/test_values_oracle.py``
the whole data path.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

#: RFC 8259's number, ASCII only (``re.ASCII``: ``[0-9]`` never matches other digits)
JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(JSON_NUMBER + r"\Z", re.ASCII)
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)\Z", re.ASCII)
#: integers a double holds exactly
EXACT_IN_DOUBLE = 2**53
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def json_number(text: str) -> int | float | None:
    """The number ``text`` is as a JSON number (what ``json.loads`` reads), or None
    when it is not one, not finite (``1e400``), or an integer too long for Python to
    read (more than ``sys.get_int_max_str_digits()`` digits: ``json.loads`` refuses
    it too)."""
    if not _NUMBER.match(text):
        return None
    if _INTEGER.match(text):
        try:
            return int(text)
        except ValueError:  # beyond Python's integer-string limit
            return None
    number = float(text)
    return number if math.isfinite(number) else None


def typed_cells(values: Sequence[str]) -> list[Any]:
    """One CSV column of a mini-batch as JSON values: numbers when every non-empty
    cell is a JSON number, else the text as it is; an empty cell is None (so a model
    with an imputer sees a null)."""
    numbers: dict[str, int | float] = {}
    for text in set(values):
        if text == "":
            continue
        number = json_number(text)
        if number is None:
            return [v if v != "" else None for v in values]
        numbers[text] = number
    return [numbers[v] if v != "" else None for v in values]


def cell_text(value: Any) -> str:
    """A JSON value as a CSV cell: null empty, booleans as JSON spells them, numbers as
    their shortest JSON text, nested values as compact JSON, strings as they are."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def answer_column(values: Sequence[Any]) -> pa.Array:
    """One answer column (JSON values of a mini-batch) as an Arrow column that holds
    each value exactly (see the module's rule)."""
    import pyarrow as pa

    kinds = {_kind(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values))
    if kinds == {"bool"}:
        return pa.array(values, pa.bool_())
    if kinds == {"int"} and all(v is None or INT64_MIN <= v <= INT64_MAX for v in values):
        return pa.array(values, pa.int64())
    if kinds <= {"int", "float"} and all(
        not isinstance(v, int) or -EXACT_IN_DOUBLE <= v <= EXACT_IN_DOUBLE for v in values
    ):
        return pa.array(values, pa.float64())
    if kinds == {"str"}:
        return pa.array(values, pa.string())
    return pa.array([None if v is None else cell_text(v) for v in values], pa.string())


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "other"
    if isinstance(value, str):
        return "str"
    return "other"


def answer_table(rows: Sequence[Sequence[Any]], names: Sequence[str]) -> pa.Table:
    """JSON answer rows (each ``len(names)`` values) as a table of typed columns."""
    import pyarrow as pa

    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in names]
    return pa.Table.from_arrays([answer_column(c) for c in columns], names=list(names))


def json_text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column of JSON values (an answer's) as their JSON text (:func:`cell_text`):
    what :func:`answer_column` writes when a column cannot be one type."""
    import pyarrow as pa

    return pa.array([None if v is None else cell_text(v) for v in column.to_pylist()], pa.string())


def typed_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column of CSV text (a model's CSV answer) as a typed column: JSON numbers as
    int64 or float64 when every non-empty cell is one and the type holds each
    exactly, else the text; empty cells null. (A text column is told by its first
    value; a column of numbers takes the JSON grammar's regex over every cell.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = column.cast(pa.string())
    blank = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    filled = pc.drop_null(blank)
    if len(filled) == 0:
        return pa.nulls(len(text)) if len(text) == 0 or blank.null_count == len(text) else blank
    if json_number(filled[0].as_py()) is None:
        return blank  # the usual text column ('setosa'): told by its first value
    if not pc.all(pc.match_substring_regex(filled, "^" + JSON_NUMBER + "$")).as_py():
        return blank  # 007, +5, nan, inf, .5 further down
    if not any(pc.any(pc.match_substring(filled, c)).as_py() for c in ".eE"):  # integers
        try:
            return blank.cast(pa.int64())
        except pa.ArrowInvalid:
            return blank  # beyond 64 bits: exact only as text
    lengths = pc.utf8_length(filled)
    if pc.max(lengths).as_py() > 15:
        long_ints = pc.filter(filled, pc.greater(lengths, 15)).to_pylist()
        if any(_INTEGER.match(v) and _beyond_double(v) for v in long_ints):
            return blank  # an integer a double would round: exact only as text
    doubles = blank.cast(pa.float64())
    if not pc.all(pc.is_finite(pc.drop_null(doubles))).as_py():
        return blank  # 1e400: not a finite number
    return doubles


def _beyond_double(integer: str) -> bool:
    """Whether the integer text ``integer`` is beyond what a double holds exactly
    (by its digits first: no ``int()`` of a number too long for Python to read)."""
    digits = len(integer.lstrip("-"))
    return digits > 16 or (digits == 16 and abs(int(integer)) > EXACT_IN_DOUBLE)


def json_values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """An Arrow column (JSON Lines, Parquet) as the values a JSON-speaking model is
    sent: as pyarrow reads them, except what JSON has no word for: NaN (what pandas
    writes for a missing float) is null; decimals, dates and times are their text
    (as a CSV model gets them); ValueError(row index) for an infinity."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if pa.types.is_floating(t):
        if pc.any(pc.is_inf(column)).as_py():
            raise ValueError(pc.index(pc.is_inf(column), True).as_py())
        if pc.any(pc.is_nan(column)).as_py():
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, t), column)
        return list(column.to_pylist())
    if pa.types.is_decimal(t) or pa.types.is_temporal(t) or _is_binary(t):
        return list(column.cast(pa.string()).to_pylist())
    return list(column.to_pylist())


def negative_zero(column: pa.Array | pa.ChunkedArray) -> bool:
    """Whether a floating point column holds -0.0 (``1 / -0.0`` is -inf): a column of
    integers must not take it, or its sign is lost (the values oracle found a later
    JSON Lines mini-batch's -0.0 in a column of integers sent as 0)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_floating(column.type):
        return False
    zeros = pc.filter(column, pc.equal(column, 0.0))
    if len(zeros) == 0:
        return False
    return bool(pc.any(pc.less(pc.divide(1.0, zeros), 0.0)).as_py())


def _is_binary(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def binary_as_text(table: pa.Table, first_row: int) -> pa.Table:
    """``table`` with its binary columns as text (UTF-8), what a model, a CSV or a
    JSON Lines output can hold; ValueError naming the data row and the column of
    bytes that are not UTF-8 (``first_row``: the table's first data row)."""
    import pyarrow as pa

    if not any(_is_binary(f.type) for f in table.schema):
        return table
    columns = []
    for name, raw in zip(table.column_names, table.columns, strict=True):
        column = raw
        if _is_binary(raw.type):
            try:
                column = raw.cast(pa.string())
            except pa.ArrowInvalid:
                row = next(
                    i for i, v in enumerate(raw.to_pylist()) if v is not None and not _utf8(v)
                )
                raise ValueError(
                    f"data row {first_row + row}, column {name!r} holds bytes that are not "
                    "UTF-8 text, which a model, a CSV or a JSON Lines output cannot hold: "
                    "leave the column out (drop_columns, keep_columns) or write the output "
                    "as Parquet (output_format=parquet)"
                ) from None
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
