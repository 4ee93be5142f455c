"""CSV in and out.

The fast path, for a file scored whole (no ``keep_columns``, no
``model_columns``/``drop_columns``) by a model that takes CSV: the batcher's
line-aligned bytes go to the model as they are, and the model's CSV answer to the
output as it is; nothing is parsed into Python or Arrow objects.

With columns chosen, each mini-batch is parsed by pyarrow with every column as
text, so that kept and model values reach the output and the model exactly as the
file wrote them (``007`` stays ``007``); quotes are only added where a value needs
them.
"""

from __future__ import annotations

import csv as _csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from scorefleet.errors import BadInput
from workers.scoring.batches import Batch, Scores
from workers.scoring.formats.base import (
    Piece,
    Reader,
    Sink,
    Writer,
    answer_table,
    csv_bytes,
    joined,
)
from workers.scoring.formats.csvsplit import BOM, CsvBatcher, keep_bom
from workers.scoring.formats.kind import Format, ReadLimits
from workers.scoring.formats.select import ColumnPlan, Columns, plan
from workers.scoring.values import binary_as_text

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


def header_names(header: bytes | None, fields: int) -> tuple[str, ...]:
    """The column names of a header line ("" names when there is no header)."""
    if header is None:
        return ("",) * fields
    text = header.decode("utf-8").rstrip("\r\n")
    return tuple(next(_csv.reader([text]), []))


class CsvReader(Reader):
    def __init__(
        self,
        chunks: Iterable[bytes],
        max_bytes: int,
        *,
        columns: Columns,
        header_mode: str = "auto",
        send_header: bool = True,
        start: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.columns = columns
        self.batcher = CsvBatcher(
            chunks, max_bytes, header_mode=header_mode, send_header=send_header, start=start
        )
        if start is not None:
            self.rows = int(start["rows"])
            # the bytes skipped count as read (the share of the file read so far)
            self._skipped = int(start["offset"]) - int(start["head"])

    _skipped = 0

    def __iter__(self) -> Iterator[Piece]:
        for b in self.batcher:
            self.bytes_in = self.batcher.bytes_in + self._skipped
            if self.plan is None:
                names = header_names(self.batcher.header, self.batcher.fields or 1)
                self.plan = plan(self.columns, names, named=self.batcher.header is not None)
            self.rows += b.rows
            at = self.batcher.position(b)
            if self.plan.passthrough:
                yield Piece(
                    Batch(
                        first_row=b.first_row,
                        rows=b.rows,
                        span=b.span,
                        columns=self.plan.input,
                        csv=b.data,
                        csv_header=self.batcher.header,
                    ),
                    at=at,
                )
                continue
            yield self._selected(b.data, b.first_row, b.rows, b.span, at)
        if self.plan is None:  # taken up again after its last row: its columns still
            names = header_names(self.batcher.header, self.batcher.fields or 1)
            self.plan = plan(self.columns, names, named=self.batcher.header is not None)

    def _selected(
        self, data: bytes, first_row: int, rows: int, span: str, at: dict[str, Any]
    ) -> Piece:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        assert self.plan is not None
        p = self.plan
        try:
            table = pacsv.read_csv(
                io.BytesIO(keep_bom(data)),
                read_options=pacsv.ReadOptions(
                    column_names=list(p.input),
                    skip_rows=int(data.startswith(BOM)),
                    use_threads=False,
                    block_size=max(1 << 16, len(data) + 2),
                ),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(p.needed),
                    column_types=dict.fromkeys(p.needed, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            raise BadInput(f"{span} cannot be read as CSV: {exc}") from exc
        if table.num_rows != rows:
            raise BadInput(f"{span}: {table.num_rows} rows parsed where {rows} were found")
        model = table.select(list(p.model))
        header = csv_bytes(model.slice(0, 0), header=True)
        batch = Batch(
            first_row=first_row,
            rows=rows,
            span=span,
            columns=p.model,
            csv=csv_bytes(model),
            csv_header=header,
        )
        return Piece(batch, table.select(list(p.keep)) if p.keep else None, at=at)


class CsvWriter(Writer):
    def __init__(self, sink: Sink, plan: ColumnPlan) -> None:
        super().__init__(sink, plan)
        self._started = False

    def write(self, kept: pa.Table | None, scores: Scores) -> None:
        if not self.plan.keep:  # the answer as the model sent it (today's output)
            if not self._started:
                self._started = True
                self._emit(scores.header_line() or b"")
            self._emit(scores.as_csv())
            self.rows += scores.rows
            return
        answer = self.answer_names(scores)
        if self.names is None:
            self.names = self.plan.output_names(answer)
            self._emit(_header_line(self.names))
        table = joined(kept, answer_table(scores, answer, text=True), self.names)
        try:
            table = binary_as_text(table, self.rows + 1)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        self._emit(csv_bytes(table))
        self.rows += scores.rows

    def close(self, empty_schema: pa.Schema | None = None) -> None:
        if self.rows == 0 and self.plan.keep:
            self._emit(_header_line(self.plan.keep))

    def state(self) -> dict[str, Any]:
        return {**super().state(), "started": self._started}

    def restore(self, state: dict[str, Any], sides: list[bytes], held: bytes) -> None:
        super().restore(state, sides, held)
        self._started = bool(state.get("started"))


def _header_line(names: Iterable[str]) -> bytes:
    out = io.StringIO()
    _csv.writer(out, lineterminator="\n").writerow(list(names))
    return out.getvalue().encode("utf-8")


def read(
    chunks: Iterable[bytes],
    columns: Columns,
    lim: ReadLimits,
    start: Mapping[str, Any] | None = None,
) -> CsvReader:
    return CsvReader(
        chunks,
        lim.max_bytes,
        columns=columns,
        header_mode=lim.header_mode,
        send_header=lim.send_header,
        start=start,
    )


def check_head(head: bytes, complete: bool, columns: Columns, lim: ReadLimits) -> None:
    """The launch preflight of a CSV file: a whole file is read as the scoring step
    reads it; of a longer one, the columns chosen must be in its header."""
    if complete:
        for _batch in CsvBatcher(
            [head], lim.max_bytes, header_mode=lim.header_mode, send_header=lim.send_header
        ):
            pass
        if not columns.plain:
            for _piece in read([head], columns, lim):
                pass
        return
    if columns.plain:
        return
    batcher = CsvBatcher([head], lim.max_bytes, header_mode=lim.header_mode)
    try:
        batcher._read_header()
    except BadInput:
        return  # a header longer than the first bytes: the scoring step decides
    names = header_names(batcher.header, batcher.fields or 1)
    plan(columns, names, named=batcher.header is not None)


def rows_end(data: bytes) -> int:
    """Where the last whole (newline-ended) record of ``data`` ends; a newline inside
    quotes ends no record."""
    end, pos, in_quotes = 0, 0, False
    while (nl := data.find(b"\n", pos)) >= 0:
        if data.count(b'"', pos, nl) % 2:
            in_quotes = not in_quotes
        if not in_quotes:
            end = nl + 1
        pos = nl + 1
    return end


FORMAT = Format(
    name="csv",
    label="CSV",
    media_type="text/csv",
    suffixes=(".csv",),
    aliases=("application/csv", "text/comma-separated-values"),
    stream=read,
    writer=CsvWriter,
    check_head=check_head,
    rows_end=rows_end,
    resumes=True,
)
