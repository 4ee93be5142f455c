"""A job's input on S3 as a :class:`~workers.scoring.formats.base.Reader` (streamed
and decompressed, or read by ranges: :class:`RangeFile`), and the launch preflight
of its format (what can be refused before a model starts).

Every request is pinned to the exact upload the job is about (its version id, else
its ETag and LastModified), as :func:`scorefleet.storage.s3io.open_source` is.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from scorefleet.errors import BadInput
from scorefleet.job import Job
from scorefleet.storage import s3io
from workers.scoring.batches import Batch
from workers.scoring.formats import ReadLimits, compression, magic, ranged_reader, stream_reader
from workers.scoring.formats.base import Reader
from workers.scoring.formats.kind import Format
from workers.scoring.formats.magic import Compression
from workers.scoring.formats.options import DataOptions, resolve
from workers.scoring.formats.select import ColumnPlan, Columns

#: What the preflight reads of a CSV or JSON Lines file (one ranged GET).
HEAD_BYTES = 64 * 1024


def pin(job: Job) -> dict[str, Any]:
    """GetObject/HeadObject arguments that select exactly the job's upload."""
    kwargs: dict[str, Any] = s3io.version_args(job.version_id)
    if not job.version_id and job.etag:
        kwargs["IfMatch"] = job.etag if job.etag.startswith('"') else f'"{job.etag}"'
        if job.last_modified is not None:
            kwargs["IfUnmodifiedSince"] = datetime.fromtimestamp(job.last_modified, UTC)
    return kwargs


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over ranged GETs of one S3 object upload.

    Reads up to ``block`` bytes are served from one cached block (read ahead from
    the position asked); larger reads are one GET of exactly that range. Memory:
    one block, whatever the object's size."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        size: int,
        pin: dict[str, Any],
        block: int = 1024 * 1024,
    ) -> None:
        super().__init__()
        self.s3, self.bucket, self.key, self.size = s3, bucket, key, size
        self.pin = pin
        self.block = block
        self.pos = 0
        self.gets = 0
        self.bytes_fetched = 0
        self._cache_at = 0
        self._cache = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _get(self, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of the object."""
        try:
            resp = self.s3.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}", **self.pin
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412"}:
                raise BadInput(
                    f"s3://{self.bucket}/{self.key} was overwritten while it was read; "
                    "the newer version is scored on its own"
                ) from exc
            if code in {"NoSuchKey", "NoSuchVersion", "404"}:
                raise BadInput(
                    f"s3://{self.bucket}/{self.key} was deleted while it was read"
                ) from exc
            raise
        data: bytes = resp["Body"].read()
        self.gets += 1
        self.bytes_fetched += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.pos
        size = min(size, self.size - self.pos)
        if size <= 0:
            return b""
        start, end = self.pos, self.pos + size
        if size > self.block:
            data = self._get(start, end)
        else:
            if not (self._cache_at <= start and end <= self._cache_at + len(self._cache)):
                self._cache_at = start
                self._cache = self._get(start, min(self.size, start + self.block))
            offset = start - self._cache_at
            data = self._cache[offset : offset + size]
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class Described:
    options: DataOptions
    size: int
    #: the ETag of the upload as its GET said (what a resumed read checks it against)
    etag: str = ""


@dataclass(frozen=True)
class Head:
    """What the launch preflight saw of a file, before any model starts: its formats
    and size; its rows when a footer says; its columns (when its first bytes show
    them) with the rows those bytes hold as the model would be sent them, or a
    footer's types of them."""

    described: Described
    #: the file's rows, from its footer (Parquet)
    rows: int | None = None
    plan: ColumnPlan | None = None
    #: the file names its columns (a CSV without a header row does not)
    named: bool = True
    #: the first rows, as mini-batches of the model's columns (streamed formats)
    batches: tuple[Batch, ...] = ()
    #: the model columns' types and empty-value counts, from a footer (Parquet)
    schema: Any = None
    nulls: Mapping[str, int] = field(default_factory=dict)
    #: the batches hold every row of the file
    whole: bool = False
    #: the decompressed bytes the batches were read from, and whether the file's
    #: bytes are compressed (then its size says little of its rows)
    sampled_bytes: int = 0
    compressed: bool = False

    @property
    def sampled_rows(self) -> int:
        return sum(b.rows for b in self.batches)


def sample_head(
    fmt: Format, head: bytes, complete: bool, columns: Columns, lim: ReadLimits
) -> tuple[ColumnPlan, bool, tuple[Batch, ...], int] | None:
    """The whole rows of a streamed file's first bytes, read as the scoring step reads
    them: (its column plan, whether it names its columns, the mini-batches of model
    rows, the bytes they came from). None when they hold no whole row, or a row cut
    short by the end of the first bytes cannot be read (the score step checks its
    first mini-batch instead)."""
    data = head if complete or fmt.rows_end is None else head[: fmt.rows_end(head)]
    if not data.strip():
        return None
    reader = stream_reader(fmt, [data], columns, lim)
    try:
        batches = tuple(piece.batch for piece in reader)
    except BadInput:
        if complete:
            raise
        return None
    if reader.plan is None:
        return None
    return reader.plan, any(reader.plan.input), batches, len(data)


def _gone_or_replaced(job: Job, exc: ClientError) -> None:
    """Raise the :class:`BadInput` a pinned request's 404 or 412 means."""
    code = s3io.error_code(exc)
    if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}:
        raise BadInput(
            f"{job.source} no longer exists (deleted before it could be scored)"
        ) from exc
    if code in {"PreconditionFailed", "412"}:
        raise BadInput(
            f"{job.source} was overwritten after it was queued; the newer version is "
            "scored on its own"
        ) from exc


def describe(s3: Any, job: Job, catalog: Any) -> Described:
    """The job's formats and columns, from its key, Content-Type, tags and catalog
    entry (one HEAD of the upload)."""
    try:
        head = s3.head_object(Bucket=job.bucket, Key=job.key, **pin(job))
    except ClientError as exc:
        _gone_or_replaced(job, exc)
        raise
    options = resolve(job.key, str(head.get("ContentType") or ""), job.data_tags, catalog)
    return Described(options, int(head.get("ContentLength") or 0))


def look_first(
    s3: Any,
    job: Job,
    catalog: Any,
    lim: ReadLimits,
    limits: compression.Limits,
    *,
    sample: bool = True,
) -> Head:
    """:func:`describe` and :func:`preflight` from one ranged GET of the file's first
    bytes, whose Content-Type and Content-Range say what a HEAD would (issue 17: a
    HEAD fewer per file). An empty object (S3 refuses the range) is described by a
    HEAD, as before. ``sample``: read the whole rows of those bytes too (for a
    contract, or to show the file's columns)."""
    from workers.scoring.formats.preflight import HEAD_BYTES, total_size

    try:
        resp = s3.get_object(
            Bucket=job.bucket, Key=job.key, Range=f"bytes=0-{HEAD_BYTES - 1}", **pin(job)
        )
    except ClientError as exc:
        if s3io.error_code(exc) in {"InvalidRange", "416"}:
            return preflight(s3, job, describe(s3, job, catalog), lim, limits, sample=sample)
        _gone_or_replaced(job, exc)
        raise
    body = resp["Body"].read()
    size = total_size(resp, len(body))
    options = resolve(job.key, str(resp.get("ContentType") or ""), job.data_tags, catalog)
    described = Described(options, size)
    return preflight(s3, job, described, lim, limits, first=(body, size), sample=sample)


def open_reader(
    s3: Any,
    job: Job,
    described: Described,
    lim: ReadLimits,
    limits: compression.Limits,
) -> Reader:
    """The reader of the job's input (over ranged GETs when its format is read so,
    Parquet; else streamed and decompressed)."""
    opts = described.options
    lim = opts.limits(lim)
    if opts.input.ranged is not None:
        file = RangeFile(s3, job.bucket, job.key, size=described.size, pin=pin(job))
        return ranged_reader(opts.input, file, opts.columns, lim, size=described.size)
    source = s3io.open_source(s3, job.source, job.version_id, job.etag, job.last_modified)
    return stream_reader(
        opts.input, compression.decompress(source.chunks, limits), opts.columns, lim
    )


def open_described(
    s3: Any,
    job: Job,
    catalog: Any,
    lim: ReadLimits,
    limits: compression.Limits,
) -> tuple[Described, Reader]:
    """:func:`describe` and :func:`open_reader` in one request: the GET of the upload
    says its Content-Type and size as a HEAD would (issue 17: a HEAD fewer per file).
    A file read by ranges (Parquet, from its footer) closes that GET unread."""
    opened = Opened.get(s3, job, catalog)
    return opened.described, opened.reader(s3, job, lim, limits)


@dataclass
class Opened:
    """The GET of a job's input, described (its formats, size and ETag) before it is
    read: the reader then starts at the beginning, or at a resume point (issue 26)."""

    described: Described
    source: s3io.SourceStream

    @classmethod
    def get(cls, s3: Any, job: Job, catalog: Any) -> Opened:
        source = s3io.open_source(s3, job.source, job.version_id, job.etag, job.last_modified)
        options = resolve(job.key, source.content_type, job.data_tags, catalog)
        return cls(Described(options, source.content_length, source.etag), source)

    def reader(
        self,
        s3: Any,
        job: Job,
        lim: ReadLimits,
        limits: compression.Limits,
        start: Mapping[str, Any] | None = None,
    ) -> Reader:
        """The input's reader, from ``start`` (a piece's resume point) when given:
        Parquet from its row group (ranged GETs); plain CSV or JSON Lines by a
        ranged GET from the point (the header read again first); compressed, read
        and decompressed from the start, the bytes before the point skipped unread
        by the format."""
        options = self.described.options
        lim = options.limits(lim)  # the file's own csv_header
        if options.input.ranged is not None:
            self.source.close()
            file = RangeFile(s3, job.bucket, job.key, size=self.described.size, pin=pin(job))
            return ranged_reader(
                options.input, file, options.columns, lim, size=self.described.size, start=start
            )
        if start is None:
            chunks = compression.decompress(self.source.chunks, limits)
            return stream_reader(options.input, chunks, options.columns, lim)
        return stream_reader(
            options.input,
            self._resumed(s3, job, int(start["head"]), int(start["offset"]), limits),
            options.columns,
            lim,
            start=start,
        )

    def _resumed(
        self, s3: Any, job: Job, head: int, offset: int, limits: compression.Limits
    ) -> Iterator[bytes]:
        """The file's first ``head`` (decompressed) bytes, then those from ``offset``."""
        it = iter(self.source.chunks)
        first = b""
        for chunk in it:
            first += chunk
            if len(first) >= max(head, magic.SNIFF):
                break
        if compression.sniff(first) is Compression.PLAIN:
            self.source.close()
            if head:
                yield first[:head]
            rest = s3io.open_source(
                s3, job.source, job.version_id, job.etag, job.last_modified, start=offset
            )
            yield from rest.chunks
            return
        expanded = compression.decompress(itertools.chain([first], it), limits)
        yield from splice(expanded, head, offset)


def splice(chunks: Iterable[bytes], head: int, offset: int) -> Iterator[bytes]:
    """``chunks``' first ``head`` bytes, then those from ``offset`` on (the bytes
    between are read and dropped)."""
    pos = 0
    for chunk in chunks:
        end = pos + len(chunk)
        if pos < head:
            yield chunk[: head - pos]
        if end > offset:
            yield chunk[max(0, offset - pos) :]
        pos = end


def preflight(
    s3: Any,
    job: Job,
    described: Described,
    lim: ReadLimits,
    limits: compression.Limits,
    first: tuple[bytes, int] | None = None,
    *,
    sample: bool = True,
) -> Head:
    """Raise :class:`BadInput` for what the first bytes (of a streamed format) or the
    footer (of a format read by ranges, Parquet) show cannot be scored, before a model
    starts; else what they show (:class:`Head`). ``first``: the first bytes and the
    size, already read (:func:`look_first`); ``sample``: their whole rows read too."""
    fmt = described.options.input
    lim = described.options.limits(lim)  # the file's own csv_header
    if fmt.ranged is not None:
        reader = open_reader(s3, job, described, lim, limits)
        rows = reader.known_rows
        footer = reader.footer_schema()
        schema, nulls = footer if footer is not None else (None, {})
        return Head(described, rows=rows, plan=reader.plan, schema=schema, nulls=nulls)
    from workers.scoring.formats.preflight import preflight as first_bytes

    head, complete = first_bytes(
        s3, job.source, job.version_id, job.etag, label=fmt.label, limits=limits, first=first
    )
    if head is None:
        return Head(described)  # gone or replaced: the scoring step says so
    if fmt.check_head is not None:
        fmt.check_head(head, complete, described.options.columns, lim)
    compressed = first is not None and not first[0].startswith(head[:64])
    if not sample:
        return Head(described, whole=complete, compressed=compressed)
    sampled = sample_head(fmt, head, complete, described.options.columns, lim)
    if sampled is None:
        return Head(described, whole=complete, compressed=compressed)
    plan, named, batches, used = sampled
    return Head(
        described,
        plan=plan,
        named=named,
        batches=batches,
        whole=complete,
        sampled_bytes=used,
        compressed=compressed,
    )
