"""Parquet in and out (pyarrow).

Reading never downloads the file whole: it is read from a seekable file (on S3 a
:class:`~workers.scoring.formats.source.RangeFile`: ranged GETs of one exact upload,
its version id, else its ETag, with a bounded read-ahead), and pyarrow reads the
footer, then the needed columns one row group at a time
(``ParquetFile.iter_batches``). Before anything is read beyond the footer, the
metadata decide whether each row group fits: a row group whose needed columns
are larger, uncompressed, than ``max_group_bytes`` gets an error that says so (a
worker holds one decoded row group at a time). Nested columns (structs, lists,
maps) cannot be sent to a model; they can be kept. A file with no rows is not an
error: its output is an empty file with the kept columns' schema.

Mini-batches are sized so their CSV form is about ``max_bytes``: a sample of each
record batch read (16 Ki rows) is written as CSV to measure a row's size.

Writing: :mod:`.parquet_writer`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from scorefleet.errors import BadInput
from workers.scoring.batches import Batch, span_of
from workers.scoring.formats.base import (
    Piece,
    Reader,
    csv_bytes,
    refuse_nested,
)
from workers.scoring.formats.kind import Format, ReadLimits
from workers.scoring.formats.parquet_writer import ParquetWriter
from workers.scoring.formats.select import ColumnPlan, Columns, plan
from workers.scoring.values import binary_as_text

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import pyarrow.parquet as pq

MAGIC = b"PAR1"
#: pyarrow reads each column chunk in pieces of this size (not whole: a row group's
#: chunks of a wide column can be tens of MB)
READ_BUFFER = 1024 * 1024
#: Rows per record batch read (re-measured and re-cut into mini-batches)
_READ_ROWS = 16 * 1024
#: Rows measured to size the mini-batches.
_SAMPLE_ROWS = 500


def _not_parquet(head: bytes, tail: bytes, size: int, exc: Exception) -> str:
    """Why a file that should be Parquet cannot be opened as Parquet."""
    if size == 0:
        return "the file is empty (0 bytes), not a Parquet file"
    if not head.startswith(MAGIC):
        sample = head.lstrip()
        looks = (
            "JSON text"
            if sample.startswith((b"{", b"["))
            else "text (CSV?)"
            if all(b >= 0x20 or b in b"\t\r\n" for b in head[:256])
            else "some other binary format"
        )
        return (
            f"the file is taken for Parquet but is not Parquet (it does not start with "
            f"'PAR1'; it looks like {looks}): rename it with the suffix of its format "
            "(.csv, .jsonl) or tag it content_type=csv|jsonl"
        )
    if not tail.endswith(MAGIC):
        return (
            "the Parquet file is truncated: it does not end with Parquet's footer "
            "(was the upload cut short?)"
        )
    return f"the Parquet file's footer (its metadata) is corrupt: {exc}"


class ParquetReader(Reader):
    """``start``: a resume point (a piece's ``at``): the rows from ``next`` on, cut
    into the same mini-batches as the reader that gave it would have."""

    def __init__(
        self,
        file: Any,
        max_bytes: int,
        *,
        columns: Columns,
        max_group_bytes: int,
        size: int | None = None,
        start: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.file = file
        self.max_bytes = max_bytes
        self.columns = columns
        self.max_group_bytes = max_group_bytes
        self.size = size
        self.pf: pq.ParquetFile | None = None
        self.start = start
        #: rows of the file read into record batches so far (pieces are cut from them)
        self._read_to = 0
        self._per_batch = 0

    # --------------------------------------------------------------------- open
    def open(self) -> pq.ParquetFile:
        """Read the footer and check the file before any row is read."""
        if self.pf is not None:
            return self.pf
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.file, buffer_size=READ_BUFFER)
        except (pa.ArrowException, OSError) as exc:
            size = self.size if self.size is not None else self.file.seek(0, io.SEEK_END)
            self.file.seek(0)
            head = self.file.read(4096)
            self.file.seek(max(0, size - 4))
            tail = self.file.read(4)
            raise BadInput(_not_parquet(head, tail, size, exc)) from exc
        schema = pf.schema_arrow
        self.plan = plan(self.columns, schema.names)
        refuse_nested(schema, self.plan.model)
        self._check_row_groups(pf, self.plan)
        self.pf = pf
        return pf

    def _check_row_groups(self, pf: pq.ParquetFile, p: ColumnPlan) -> None:
        meta = pf.metadata
        needed = set(p.needed)
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            size = sum(
                rg.column(j).total_uncompressed_size
                for j in range(rg.num_columns)
                if rg.column(j).path_in_schema.split(".")[0] in needed
            )
            if size > self.max_group_bytes:
                raise BadInput(
                    f"row group {i + 1} of {meta.num_row_groups} holds {size / 2**20:,.0f} MiB "
                    f"(uncompressed, in the columns read) in {rg.num_rows:,d} rows, more than "
                    f"a worker reads at once ({self.max_group_bytes / 2**20:,.0f} MiB, "
                    "SCOREFLEET_MAX_ROW_GROUP_MB): rewrite "
                    "the file with smaller row groups, e.g. "
                    "pyarrow.parquet.write_table(table, path, row_group_size=100_000), or "
                    "read fewer columns (model_columns, keep_columns)"
                )

    @property
    def num_rows(self) -> int:
        return int(self.open().metadata.num_rows)

    @property
    def known_rows(self) -> int | None:
        """From the footer, before any row group is read."""
        return self.num_rows

    def footer_schema(self) -> tuple[pa.Schema, dict[str, int]] | None:
        """The model columns' types, and their empty values by the row groups'
        statistics (a column without statistics counts none)."""
        pf = self.open()
        assert self.plan is not None
        meta = pf.metadata
        model = set(self.plan.model)
        nulls: dict[str, int] = dict.fromkeys(self.plan.model, 0)
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            for j in range(rg.num_columns):
                col = rg.column(j)
                name = col.path_in_schema.split(".")[0]
                stats = col.statistics
                if name in model and stats is not None and stats.has_null_count:
                    nulls[name] += int(stats.null_count)
        import pyarrow as pa

        schema = pf.schema_arrow
        return pa.schema([schema.field(n) for n in self.plan.model]), nulls

    def kept_schema(self) -> pa.Schema | None:
        pf = self.open()
        assert self.plan is not None
        if not self.plan.keep:
            return None
        schema = pf.schema_arrow
        import pyarrow as pa

        return pa.schema([schema.field(n) for n in self.plan.keep])

    # --------------------------------------------------------------------- read
    def _rows_per_batch(self, sample: pa.Table) -> int:
        """Rows whose CSV form is about ``max_bytes`` (measured on ``sample``)."""
        if sample.num_rows == 0:
            return _SAMPLE_ROWS
        per_row = max(1.0, len(csv_bytes(sample)) / sample.num_rows)
        return max(1, int(self.max_bytes * 0.85 / per_row))

    def __iter__(self) -> Iterator[Piece]:
        import pyarrow as pa

        pf = self.open()
        p = self.plan
        assert p is not None
        if pf.metadata.num_rows == 0:
            return
        first = int(self.start["next"]) if self.start else 0
        held_to = int(self.start["read_to"]) if self.start else 0
        pending: pa.Table | None = None
        held: list[pa.Table] = []  # rows [first, held_to): read, not yet yielded
        self.rows = first
        try:
            for at, rb in self._record_batches(pf, list(p.needed), first):
                end = at + rb.num_rows
                if at < held_to:  # taken up again: the rows it had read and not sent
                    held.append(pa.Table.from_batches([rb]).slice(max(0, first - at)))
                    if end < held_to:
                        continue
                    self._read_to, self._per_batch = end, int(self.start["per_batch"])  # type: ignore[index]
                    pending = pa.concat_tables(held)
                    held = []
                else:
                    self._read_to = end
                    table = pa.Table.from_batches([rb])
                    # measured again on each record batch: row sizes drift along a file
                    step = max(1, table.num_rows // _SAMPLE_ROWS)
                    model = _model_text(table.select(list(p.model)), at + 1)
                    sample = model.take(pa.array(range(0, table.num_rows, step)))
                    self._per_batch = self._rows_per_batch(sample)
                    pending = table if pending is None else pa.concat_tables([pending, table])
                assert pending is not None
                while pending.num_rows >= self._per_batch:
                    yield self._piece(pending.slice(0, self._per_batch))
                    pending = pending.slice(self._per_batch)
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(
                f"the Parquet file cannot be read after data row {self.rows:,d} "
                f"(corrupt or truncated?): {exc}"
            ) from exc
        if pending is not None and pending.num_rows:
            yield self._piece(pending)

    @staticmethod
    def _record_batches(
        pf: pq.ParquetFile, columns: list[str], first: int = 0
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """The file's rows as (first row, record batch), one row group at a time, from
        the row group that holds row ``first`` (0-based): a single ``iter_batches``
        over all row groups keeps what it has read (a 1 GB file grew the worker past
        1 GB; one call per row group stays at one row group)."""
        at = 0
        meta = pf.metadata
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if at + rows <= first:
                at += rows
                continue
            for rb in pf.iter_batches(
                batch_size=_READ_ROWS, row_groups=[group], columns=columns, use_threads=False
            ):
                if at + rb.num_rows > first:
                    yield at, rb
                at += rb.num_rows

    def _piece(self, table: pa.Table) -> Piece:
        p = self.plan
        assert p is not None
        table = table.combine_chunks()
        first = self.rows + 1
        self.rows += table.num_rows
        # what was fetched so far (only the columns read: less than the file)
        self.bytes_in = int(getattr(self.file, "bytes_fetched", 0))
        batch = Batch(
            first_row=first,
            rows=table.num_rows,
            span=span_of(first, table.num_rows),
            columns=p.model,
            table=_model_text(table.select(list(p.model)), first),
        )
        # where it goes on: the rows read and not sent are read again from the row
        # group of the first, and cut as they were
        at = {"next": self.rows, "read_to": self._read_to, "per_batch": self._per_batch}
        return Piece(batch, table.select(list(p.keep)) if p.keep else None, at=at)


def _model_text(model: pa.Table, first_row: int) -> pa.Table:
    """The model's columns with binary ones as the text they hold (BadInput naming the
    row and column of bytes that are not UTF-8: a model is sent text)."""
    try:
        return binary_as_text(model, first_row)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def read(
    file: Any,
    columns: Columns,
    lim: ReadLimits,
    size: int | None = None,
    start: Mapping[str, Any] | None = None,
) -> ParquetReader:
    """A reader of a Parquet file (any seekable file object: a
    :class:`~workers.scoring.formats.source.RangeFile` on S3)."""
    return ParquetReader(
        file,
        lim.max_bytes,
        columns=columns,
        max_group_bytes=lim.max_group_bytes,
        size=size,
        start=start,
    )


FORMAT = Format(
    name="parquet",
    label="Parquet",
    media_type="application/vnd.apache.parquet",
    suffixes=(".parquet",),
    aliases=("application/parquet", "application/x-parquet"),
    ranged=read,
    writer=ParquetWriter,
    rejected_as_table=True,
    resumes=True,
)
