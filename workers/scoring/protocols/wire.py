"""Conversions at the speed of the wire: a mini-batch to the JSON a model is sent,
and a model's JSON answer to Python values, without per-cell Python work where the
data allows it (issue 25).

Two well-kept libraries do the work:

* **pyarrow** (already the formats' reader and writer) parses a CSV mini-batch into
  columns of text in C++ and decides each column's type with vectorised regular
  expressions and casts (``pyarrow.compute``);
* **orjson** (PyPI; Rust, the fastest JSON library for Python that keeps Python's
  values: its floats are shortest round-trip and correctly rounded like ``repr`` and
  ``float()``, integers are exact up to 64 bits) serialises the request and parses
  the answer, 5-10x faster than the ``json`` module. msgspec was the other choice; it
  is as fast, but its value here would be typed decoding, which the protocols do not
  need, and orjson's NumPy support serialises numeric tensors without a Python list.

The rule: **the same values as the reference conversion or nothing.** Each function
returns what :meth:`workers.scoring.batches.Batch.as_rows` and the protocols' own
request builders (``V2Protocol.request``, ``JsonProtocol.request_body``) give, value
for value, or raises :class:`Fallback` when it cannot promise that (a quoted field, an
integer beyond 64 bits, a datatype the fast path does not build), and the protocol
then takes the
reference path: slower, never different. tests/unit/test_wire.py checks both against
each other on generated mini-batches (Hypothesis).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from workers.scoring.batches import Batch, column_names
from workers.scoring.values import JSON_NUMBER

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

#: A JSON number (RFC 8259, ASCII digits: RE2's ``[0-9]`` is ASCII only), the
#: reference's rule (:data:`workers.scoring.values.JSON_NUMBER`)
JSON_NUMBER_CELL = "^" + JSON_NUMBER + "$"


#: UTF-8's byte-order mark: pyarrow's CSV reader drops it at the start of its data,
#: where in a mini-batch it is the first value's own character
_BOM = b"\xef\xbb\xbf"


class Fallback(Exception):
    """The fast path cannot promise the reference's exact values: take the reference."""


# ------------------------------------------------------------- CSV -> values
@dataclass(frozen=True)
class Column:
    """One model column of a mini-batch, typed as the reference types it."""

    #: "int", "float" or "text" (a column of empty cells only is "int", as the
    #: reference's first rule takes it)
    kind: str
    values: list[Any]
    #: it has empty cells (None)
    nulls: bool
    #: the largest absolute value of its numbers (0 for text or no number): what a
    #: tensor type's range is checked against
    magnitude: float = 0.0


def typed_columns(batch: Batch) -> list[Column]:
    """The batch's model columns as :meth:`Batch.as_rows` types them -- per column,
    all integers, else all finite numbers, else the text; an empty cell None.
    :class:`Fallback` when only the reference can say."""
    if batch.csv is None:
        raise Fallback("a batch of a typed format: the reference converts it")
    return [_typed(col) for col in _text_columns(batch)]


def values_of(columns: Sequence[Column]) -> list[list[Any]]:
    return [c.values for c in columns]


def _text_columns(batch: Batch) -> list[pa.ChunkedArray]:
    """The CSV mini-batch as columns of text, parsed by pyarrow. Only a batch that
    both parsers read alike: no quote (so no quoted comma or line break), no carriage
    return, no empty line, every row with the batch's columns."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = batch.csv
    assert data is not None
    if b'"' in data or b"\r" in data or not batch.columns:
        raise Fallback("quoted fields or carriage returns")
    if data.startswith(b"\n") or b"\n\n" in data:
        raise Fallback("an empty line (csv.reader reads it as a record of no fields)")
    if data.startswith(_BOM):
        raise Fallback("a first value starting with U+FEFF, which pyarrow drops as a BOM")
    names = [f"c{i}" for i in range(len(batch.columns))]
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise Fallback(f"pyarrow cannot read it alike: {exc}") from None
    if table.num_rows != batch.rows:
        raise Fallback("row count")
    return list(table.columns)


def _typed(text: pa.ChunkedArray) -> Column:
    """One column of text as the reference types it (:func:`workers.scoring.values.
    typed_cells`): when every non-empty cell is a JSON number, each is the number
    ``json.loads`` reads (``7`` an integer, ``7.50`` a float), else every cell is its
    text; an empty cell None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = pc.not_equal(text, "")
    nulls = pc.all(present).as_py() is False
    cells = pc.if_else(present, text, pa.scalar(None, pa.string())).combine_chunks()
    # nulls (empty cells) count as matching, as the reference skips them
    if pc.all(pc.match_substring_regex(cells, JSON_NUMBER_CELL)).as_py() is False:
        return Column("text", cells.to_pylist(), nulls)  # 007, +5, 1_000, nan, ١٢
    fraction = pc.match_substring_regex(cells, "[.eE]")
    if pc.any(fraction).as_py() is not True:  # integers only (or no cell at all)
        try:
            ints = cells.cast(pa.int64())
        except pa.ArrowInvalid:
            raise Fallback("an integer beyond 64 bits") from None
        return Column("int", ints.to_pylist(), nulls, _magnitude(ints))
    numbers = cells.cast(pa.float64())
    if pc.all(pc.is_finite(numbers)).as_py() is False:
        return Column("text", cells.to_pylist(), nulls)  # 1e400: not a finite number
    values = numbers.to_pylist()
    whole = pc.invert(fraction)  # integers beside fractions stay integers, as json reads
    if pc.any(whole).as_py() is True:
        try:
            ints = pc.filter(cells, whole).cast(pa.int64()).to_pylist()
        except pa.ArrowInvalid:
            raise Fallback("an integer beyond 64 bits") from None
        where = pc.indices_nonzero(pc.fill_null(whole, False)).to_pylist()
        for i, v in zip(where, ints, strict=True):
            values[i] = v
    return Column("float", values, nulls, _magnitude(numbers))


def _magnitude(numbers: pa.Array) -> float:
    import pyarrow.compute as pc

    bounds = pc.min_max(numbers).as_py()
    return float(max(abs(bounds["min"] or 0), abs(bounds["max"] or 0)))


def rows_of(columns: Sequence[list[Any]]) -> list[list[Any]]:
    """Columns as rows (lists), as :meth:`Batch.as_rows` gives them."""
    return [list(r) for r in zip(*columns, strict=True)] if columns else []


# ------------------------------------------------------------------- to JSON
def dumps(value: Any) -> bytes:
    """``value`` -- built by this module's fast path, so its numbers are finite -- as
    compact JSON, as ``json.dumps(..., separators=(",", ":"))`` reads back (orjson; a
    value it does not take, e.g. an integer beyond 64 bits: the json module). Never
    for values of the reference path: orjson writes NaN as null, the json module as
    ``NaN``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")


def records_of(names: Sequence[str], columns: Sequence[list[Any]]) -> list[dict[str, Any]]:
    """Rows as objects keyed by column name, as :meth:`Batch.as_records` gives them."""
    keys = column_names(names)
    return [dict(zip(keys, row, strict=False)) for row in zip(*columns, strict=True)]


def flat(columns: Sequence[list[Any]]) -> list[Any]:
    """The cells row by row (a row-major tensor's data)."""
    return list(itertools.chain.from_iterable(zip(*columns, strict=True)))


# --------------------------------------------------------------- from JSON
#: digits as 1, anything else 0: 19 digits in a row (maybe an integer beyond 64 bits,
#: which orjson reads as a float) are then a substring search, at memory speed
_DIGITS = bytes(1 if chr(b).isdigit() and b < 128 else 0 for b in range(256)).translate(
    bytes.maketrans(b"\x00\x01", b"01")
)
_LONG_NUMBER = b"1" * 19


def loads(body: bytes) -> Any:
    """A model's JSON answer, as ``json.loads`` reads it: orjson, and the json module
    for what orjson refuses (``NaN``, ``1e400``) or would read otherwise (an integer
    beyond 64 bits, which orjson makes a float), which then says whether it is JSON
    at all."""
    if _LONG_NUMBER not in body.translate(_DIGITS):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)
