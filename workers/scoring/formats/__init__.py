"""Input and output formats of the scoring data path: CSV, JSON Lines, Parquet.

``options`` decides a file's formats and column choices (pure), ``select`` plans
its columns, and one module per format holds its reader and writer (``csv``,
``jsonl``, ``parquet``). :func:`open_reader` and :func:`make_writer` pick them.
See docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from workers.scoring.formats.base import Piece, Reader, Sink, Writer
from workers.scoring.formats.options import Columns, DataOptions, Format, resolve
from workers.scoring.formats.select import ColumnPlan

__all__ = [
    "ColumnPlan",
    "Columns",
    "DataOptions",
    "Format",
    "Piece",
    "ReadLimits",
    "Reader",
    "Writer",
    "make_writer",
    "resolve",
    "stream_reader",
]


@dataclass(frozen=True)
class ReadLimits:
    max_bytes: int  # largest mini-batch (its CSV form)
    max_group_bytes: int  # largest Parquet row group (uncompressed, columns read)
    header_mode: str = "auto"  # CSV header: auto | present | absent
    send_header: bool = True  # CSV: the model is sent the header line


def stream_reader(
    fmt: Format, chunks: Iterable[bytes], columns: Columns, lim: ReadLimits
) -> Reader:
    """A reader of a streamed (decompressed) CSV or JSON Lines file."""
    if fmt is Format.CSV:
        from workers.scoring.formats.csv import CsvReader

        return CsvReader(
            chunks,
            lim.max_bytes,
            columns=columns,
            header_mode=lim.header_mode,
            send_header=lim.send_header,
        )
    if fmt is Format.JSONL:
        from workers.scoring.formats.jsonl import JsonlReader

        return JsonlReader(chunks, lim.max_bytes, columns=columns)
    raise ValueError(f"{fmt.label} is not read as a stream")


def parquet_reader(file: Any, columns: Columns, lim: ReadLimits, size: int | None = None) -> Reader:
    """A reader of a Parquet file (any seekable file object: :class:`RangeFile` on S3)."""
    from workers.scoring.formats.parquet import ParquetReader

    return ParquetReader(
        file, lim.max_bytes, columns=columns, max_group_bytes=lim.max_group_bytes, size=size
    )


def make_writer(fmt: Format, sink: Sink, plan: ColumnPlan) -> Writer:
    if fmt is Format.CSV:
        from workers.scoring.formats.csv import CsvWriter

        return CsvWriter(sink, plan)
    if fmt is Format.JSONL:
        from workers.scoring.formats.jsonl import JsonlWriter

        return JsonlWriter(sink, plan)
    from workers.scoring.formats.parquet import ParquetWriter

    return ParquetWriter(sink, plan)
