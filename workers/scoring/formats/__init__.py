"""Input and output formats of the scoring data path: CSV, JSON Lines, Parquet.

One module per format (``csv``, ``jsonl``, ``parquet``) holds its reader, its writer
and its :class:`Format` (``kind``); ``registry`` lists them (:data:`FORMATS`).
``options`` decides a file's formats and column choices (pure), ``select`` plans its
columns. :func:`stream_reader`, :func:`ranged_reader` and :func:`make_writer` open
them. See docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from workers.scoring.formats.base import Piece, Reader, Sink, Writer
from workers.scoring.formats.kind import Format, ReadLimits
from workers.scoring.formats.options import DataOptions, resolve
from workers.scoring.formats.registry import FORMATS
from workers.scoring.formats.select import ColumnPlan, Columns

__all__ = [
    "FORMATS",
    "ColumnPlan",
    "Columns",
    "DataOptions",
    "Format",
    "Piece",
    "ReadLimits",
    "Reader",
    "Writer",
    "make_writer",
    "ranged_reader",
    "resolve",
    "stream_reader",
]


def stream_reader(
    fmt: Format,
    chunks: Iterable[bytes],
    columns: Columns,
    lim: ReadLimits,
    start: Mapping[str, Any] | None = None,
) -> Reader:
    """A reader of a streamed (decompressed) file; ``start``: a resume point of a
    format that ``resumes`` (the chunks are then spliced as :class:`Format` says)."""
    if fmt.stream is None:
        raise ValueError(f"{fmt.label} is not read as a stream")
    if start is None:
        return fmt.stream(chunks, columns, lim)
    return fmt.stream(chunks, columns, lim, start=start)


def ranged_reader(
    fmt: Format,
    file: Any,
    columns: Columns,
    lim: ReadLimits,
    size: int | None = None,
    start: Mapping[str, Any] | None = None,
) -> Reader:
    """A reader of a file read by ranges (any seekable file object: a
    :class:`~workers.scoring.formats.source.RangeFile` on S3)."""
    if fmt.ranged is None:
        raise ValueError(f"{fmt.label} is not read by ranges")
    if start is None:
        return fmt.ranged(file, columns, lim, size)
    return fmt.ranged(file, columns, lim, size, start=start)


def make_writer(fmt: Format, sink: Sink, plan: ColumnPlan) -> Writer:
    return fmt.writer(sink, plan)
