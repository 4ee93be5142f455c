"""What a format is, as its module declares it (:class:`Format`) and the registry
lists it (:mod:`.registry`), and the limits its readers keep (:class:`ReadLimits`).

A format is one module (``csv``, ``jsonl``, ``parquet``) that ends with its
``FORMAT = Format(...)``: its names, its media type, its key suffixes, how it is read
(a stream of decompressed bytes, or a seekable file read by ranges), how it is
written, what its first bytes must show before a model starts, and how the rows a
model refused are kept. Nothing else in the data path names a format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from workers.scoring.formats.base import Reader, Sink, Writer
    from workers.scoring.formats.select import ColumnPlan, Columns


@dataclass(frozen=True)
class ReadLimits:
    max_bytes: int  # largest mini-batch (its CSV form)
    max_group_bytes: int  # largest Parquet row group (uncompressed, columns read)
    header_mode: str = "auto"  # CSV header: auto | present | absent
    send_header: bool = True  # CSV: the model is sent the header line


@dataclass(frozen=True, eq=False)
class Format:
    """One input and output format."""

    #: what a tag or the catalog calls it (``content_type``, ``output_format``)
    name: str
    #: how messages call it ("JSON Lines")
    label: str
    #: the Content-Type of an output in it (also a name a tag may use)
    media_type: str
    #: key suffixes (lower case) that say a file is in it
    suffixes: tuple[str, ...]
    #: the output's writer
    writer: Callable[[Sink, ColumnPlan], Writer]
    #: a reader of the (decompressed) bytes of a file, as they stream in (with
    #: ``resumes``, also ``start=``: a resume point; the bytes are then the file's
    #: first ``start["head"]`` bytes followed by those from ``start["offset"]`` on)
    stream: Callable[..., Reader] | None = None
    #: else a reader of a seekable file (ranged GETs on S3; its size when known):
    #: such a file is never behind an outer compression (``start=``: as above)
    ranged: Callable[..., Reader] | None = None
    #: other names and media types a tag, the catalog or a Content-Type may use
    aliases: tuple[str, ...] = ()
    #: a streamed file's launch preflight: raise BadInput for what its first
    #: (decompressed) bytes show cannot be scored; ``complete``: they are the whole file
    check_head: Callable[[bytes, bool, Columns, ReadLimits], None] | None = None
    #: a streamed file's first bytes cut to its whole rows: where the last row that
    #: ends within them ends (the launch samples those rows for the model's contract)
    rows_end: Callable[[bytes], int] | None = None
    #: the rows a model refused go to the ``.rejected`` as one Parquet table written
    #: at the end (a columnar format), not line by line as the input had them
    rejected_as_table: bool = False
    #: its reader gives each piece a resume point and starts from one (``start=``),
    #: and its writer can be taken up again (Writer.state/restore): a file in it
    #: goes on from its last committed part after a worker dies (issue 26)
    resumes: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """Every name it goes by (lower case)."""
        return (self.name, self.media_type, *self.aliases)

    def __repr__(self) -> str:
        return f"<Format {self.name}>"
