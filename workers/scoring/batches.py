"""What flows between an input format, a model protocol and an output writer.

:class:`Batch` is one mini-batch of model input rows, :class:`Scores` the model's
answer for it. Either holds its rows in the shape it was born in -- CSV bytes (the
fast path: a CSV file scored by a CSV model is never parsed into Python objects)
or an Arrow table (Parquet, JSON Lines) -- and converts lazily to what the other
side takes (``as_csv``, ``as_table``, ``as_records``, ``as_rows``).

The interface is the one docs/datapath (the lead's decision) fixes; two optional
fields were added beside it: ``Batch.csv_header`` and ``Scores.csv_header``, the
header line exactly as the file (or the model) wrote it, so that the CSV path
sends and writes the same bytes as before.

pyarrow is imported only by the functions that need it (the Lambda never imports
this package; a CSV-only worker never loads pyarrow).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from workers.scoring.values import answer_table, json_values, typed_cells

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


def span_of(first_row: int, rows: int, first_line: int | None = None) -> str:
    """Rows as a user numbers them: ``data rows 5-9`` (``(lines 6-10)`` when known
    and different), ``data row 5`` for one row."""
    last = first_row + rows - 1
    if rows == 1:
        text = f"data row {first_row}"
        return text + (f" (line {first_line})" if first_line not in (None, first_row) else "")
    text = f"data rows {first_row}-{last}"
    if first_line is not None and first_line != first_row:
        text += f" (lines {first_line}-{first_line + rows - 1})"
    return text


def csv_records(data: bytes) -> list[list[str]]:
    """The records of newline-ended CSV rows (quoted newlines kept in their field)."""
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def record_starts(data: bytes) -> list[int]:
    """Byte offsets where each newline-ended CSV record of ``data`` starts (a newline
    inside quotes does not end a record)."""
    starts, pos, in_quotes, begin = [], 0, False, 0
    while (nl := data.find(b"\n", pos)) >= 0:
        if data.count(b'"', pos, nl) % 2:
            in_quotes = not in_quotes
        if not in_quotes:
            starts.append(begin)
            begin = nl + 1
        pos = nl + 1
    return starts


def _typed_column(values: list[str]) -> list[Any]:
    """A CSV column as JSON values (:func:`workers.scoring.values.typed_cells`: JSON
    numbers as numbers when the whole column is, else the text; empty cells None)."""
    return typed_cells(values)


def table_csv(table: pa.Table, *, header: bool) -> bytes:
    """An Arrow table as CSV: values quoted only where they must be (a comma, a quote,
    a line break), so a CSV model sees text as a CSV writer writes it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if table.num_columns == 1 and _has_empty(table.column(0)):
        return _quoted_csv(table, header)
    out = io.BytesIO()
    try:
        pacsv.write_csv(
            table,
            out,
            write_options=pacsv.WriteOptions(include_header=header, quoting_style="none"),
        )
        return out.getvalue()
    except pa.ArrowInvalid:
        pass  # a value with a comma, quote or newline: quote those values only
    return _quoted_csv(table, header)


def _has_empty(column: pa.ChunkedArray) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        return True
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    return bool(pc.any(pc.equal(pc.utf8_length(column), 0)).as_py())


def _quoted_csv(table: pa.Table, header: bool) -> bytes:
    """CSV with quotes around the values that need them and no others."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def field(column: pa.ChunkedArray) -> pa.ChunkedArray:
        text = pc.fill_null(column.cast(pa.string()), "")
        # one column: an empty value is written "", else its row would be a blank line
        pattern = r'^$|[",\r\n]' if table.num_columns == 1 else r'[",\r\n]'
        needs = pc.match_substring_regex(text, pattern)
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
        return pc.if_else(needs, quoted, text)

    if table.num_rows == 0:
        lines: list[str] = []
    else:
        rows = pc.binary_join_element_wise(*[field(c) for c in table.columns], ",")
        lines = rows.to_pylist()
    if header:
        names = io.StringIO()
        csv.writer(names, lineterminator="").writerow(table.column_names)
        lines.insert(0, names.getvalue())
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def column_names(columns: Sequence[str]) -> list[str]:
    """Names to key records by: a CSV without a header has "" names, which become
    their 0-based position ("0", "1", ...)."""
    return [c if c else str(i) for i, c in enumerate(columns)]


@dataclass(frozen=True)
class Batch:
    """One mini-batch of MODEL INPUT rows (already restricted to the model's columns)."""

    first_row: int  # 1-based data row of the file of this batch's first row
    rows: int
    span: str  # as users number rows: "data rows 5-9 (lines 6-10)"
    columns: tuple[str, ...]  # model column names ("" names when a CSV has no header)
    csv: bytes | None = None  # model rows as CSV, no header, each row newline-ended
    table: pa.Table | None = None  # model rows as an Arrow table
    #: the header line as the file wrote it (CSV path), newline-ended; None: no header
    csv_header: bytes | None = None

    def __post_init__(self) -> None:
        if (self.csv is None) == (self.table is None):
            raise ValueError("a Batch holds exactly one of csv and table")

    @property
    def last_row(self) -> int:
        return self.first_row + self.rows - 1

    # ------------------------------------------------------------ conversions
    def as_csv(self, header: bool) -> bytes:
        """The rows as CSV, the header line first if asked and known."""
        if self.csv is not None:
            if header and self.csv_header is not None:
                return self.csv_header + self.csv
            return self.csv
        assert self.table is not None
        return table_csv(self.table, header=header)

    def as_table(self) -> pa.Table:
        """Typed columns (CSV: types inferred by pyarrow)."""
        if self.table is not None:
            return self.table
        import pyarrow.csv as pacsv

        assert self.csv is not None
        return pacsv.read_csv(
            io.BytesIO(self.csv),
            read_options=pacsv.ReadOptions(column_names=column_names(self.columns)),
        )

    def as_rows(self) -> list[list[Any]]:
        """One list of values per row, in column order; numbers typed per column, an
        empty CSV cell None."""
        if self.table is not None:
            cols = [
                self._json_values(n, c)
                for n, c in zip(self.table.column_names, self.table.columns, strict=True)
            ]
            return [list(r) for r in zip(*cols, strict=True)] if cols else []
        assert self.csv is not None
        records = csv_records(self.csv)
        width = max((len(r) for r in records), default=0)
        if any(len(r) != width for r in records):  # ragged: pad (the batcher refuses it)
            records = [r + [""] * (width - len(r)) for r in records]
        typed = [_typed_column(list(col)) for col in zip(*records, strict=True)]
        return [list(r) for r in zip(*typed, strict=True)] if typed else [[] for _ in records]

    def _json_values(self, name: str, column: Any) -> list[Any]:
        try:
            return json_values(column)
        except ValueError as exc:
            from scorefleet.errors import RowsRefused

            raise RowsRefused(
                f"data row {self.first_row + int(str(exc))}, column {name!r} holds an "
                "infinity, which JSON cannot carry"
            ) from None

    def as_records(self) -> list[dict[str, Any]]:
        """One object per row, keyed by column name (see :func:`column_names`)."""
        names = column_names(self.columns)
        return [dict(zip(names, row, strict=False)) for row in self.as_rows()]

    def slice(self, offset: int, length: int) -> Batch:
        """Rows ``offset`` to ``offset + length`` (0-based within this batch), numbered
        as in the file (for bisection)."""
        if offset < 0 or length < 1 or offset + length > self.rows:
            raise ValueError(f"slice {offset}+{length} of a {self.rows}-row batch")
        first = self.first_row + offset
        if self.table is not None:
            return replace(
                self,
                first_row=first,
                rows=length,
                span=span_of(first, length),
                table=self.table.slice(offset, length),
            )
        assert self.csv is not None
        starts = record_starts(self.csv)
        end = starts[offset + length] if offset + length < len(starts) else len(self.csv)
        return replace(
            self,
            first_row=first,
            rows=length,
            span=span_of(first, length),
            csv=self.csv[starts[offset] : end],
        )


@dataclass(frozen=True)
class Scores:
    """The model's answer for one Batch: exactly batch.rows rows, in order."""

    rows: int
    csv: bytes | None = None  # answer rows as CSV, no header (CSV fast path)
    header: tuple[str, ...] | None = None  # answer column names if the model names them
    table: pa.Table | None = None  # answer as Arrow columns
    #: the header line as the model wrote it (CSV answers), newline-ended
    csv_header: bytes | None = None

    def __post_init__(self) -> None:
        if (self.csv is None) == (self.table is None):
            raise ValueError("Scores hold exactly one of csv and table")

    def header_line(self) -> bytes | None:
        """The answer's header as one CSV line (None: the model named no columns)."""
        if self.csv_header is not None:
            return self.csv_header
        names = self.header  # (a JSON answer's table has score_0... names of its own)
        if not names:
            return None
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(names)
        return out.getvalue().encode("utf-8")

    def as_csv(self) -> bytes:
        """The answer rows as CSV, no header."""
        if self.csv is not None:
            return self.csv
        assert self.table is not None
        return table_csv(self.table, header=False)

    def as_table(self, names: Sequence[str] | None = None) -> pa.Table:
        """The answer as Arrow columns named ``names`` (else the model's names, else
        ``score_0``...)."""
        if self.table is not None:
            return self.table.rename_columns(list(names)) if names else self.table
        import pyarrow.csv as pacsv

        assert self.csv is not None
        width = len(csv_records(self.csv.split(b"\n", 1)[0] + b"\n")[0]) if self.csv else 0
        cols = list(names or self.header or [f"score_{i}" for i in range(width)])
        return pacsv.read_csv(
            io.BytesIO(self.csv), read_options=pacsv.ReadOptions(column_names=cols)
        )


def scores_from_rows(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> Scores:
    """Scores from Python values (JSON answers): typed columns that hold each value
    exactly (:func:`workers.scoring.values.answer_column`); without a header they are
    ``score_0``, ``score_1``..."""
    width = len(rows[0]) if rows else len(header or ())
    names = tuple(str(h) for h in header) if header else None
    table = answer_table(rows, names or tuple(f"score_{i}" for i in range(width)))
    return Scores(rows=len(rows), table=table, header=names)
