"""A job's input on S3 as a :class:`~workers.scoring.formats.base.Reader`, and the launch
preflight of each format (what can be refused before a model starts).

Every request is pinned to the exact upload the job is about (its version id, else
its ETag and LastModified), as :func:`scorefleet.storage.s3io.open_source` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from scorefleet.errors import BadInput
from scorefleet.job import Job
from scorefleet.storage import s3io
from workers.scoring.formats import ReadLimits, compression, parquet_reader, stream_reader
from workers.scoring.formats.base import Reader
from workers.scoring.formats.options import DataOptions, Format, resolve

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


@dataclass(frozen=True)
class Described:
    options: DataOptions
    size: int


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
    s3: Any, job: Job, catalog: Any, lim: ReadLimits, limits: compression.Limits
) -> int | None:
    """:func:`describe` and :func:`preflight` from one ranged GET of the file's first
    bytes, whose Content-Type and Content-Range say what a HEAD would (issue 17: a
    HEAD fewer per file). An empty object (S3 refuses the range) is described by a
    HEAD, as before."""
    from workers.scoring.formats.preflight import HEAD_BYTES, total_size

    try:
        resp = s3.get_object(
            Bucket=job.bucket, Key=job.key, Range=f"bytes=0-{HEAD_BYTES - 1}", **pin(job)
        )
    except ClientError as exc:
        if s3io.error_code(exc) in {"InvalidRange", "416"}:
            return preflight(s3, job, describe(s3, job, catalog), lim, limits)
        _gone_or_replaced(job, exc)
        raise
    body = resp["Body"].read()
    size = total_size(resp, len(body))
    options = resolve(job.key, str(resp.get("ContentType") or ""), job.data_tags, catalog)
    return preflight(s3, job, Described(options, size), lim, limits, first=(body, size))


def open_reader(
    s3: Any,
    job: Job,
    described: Described,
    lim: ReadLimits,
    limits: compression.Limits,
) -> Reader:
    """The reader of the job's input (Parquet over ranged GETs, the others streamed
    and decompressed)."""
    opts = described.options
    if opts.input is Format.PARQUET:
        from workers.scoring.formats.parquet import RangeFile

        file = RangeFile(s3, job.bucket, job.key, size=described.size, pin=pin(job))
        return parquet_reader(file, opts.columns, lim, size=described.size)
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
    A Parquet file, read by ranges from its footer, closes that GET unread."""
    source = s3io.open_source(s3, job.source, job.version_id, job.etag, job.last_modified)
    options = resolve(job.key, source.content_type, job.data_tags, catalog)
    described = Described(options, source.content_length)
    if options.input is Format.PARQUET:
        source.close()
        return described, open_reader(s3, job, described, lim, limits)
    chunks = compression.decompress(source.chunks, limits)
    return described, stream_reader(options.input, chunks, options.columns, lim)


def preflight(
    s3: Any,
    job: Job,
    described: Described,
    lim: ReadLimits,
    limits: compression.Limits,
    first: tuple[bytes, int] | None = None,
) -> int | None:
    """Raise :class:`BadInput` for what the first bytes (CSV, JSON Lines) or the
    footer (Parquet) show cannot be scored, before a model starts. Returns the number
    of rows when it is known (Parquet: from the footer), else None. ``first``: the
    first bytes and the size, already read (:func:`look_first`)."""
    opts = described.options
    if opts.input is Format.PARQUET:
        reader = open_reader(s3, job, described, lim, limits)
        from workers.scoring.formats.parquet import ParquetReader

        assert isinstance(reader, ParquetReader)
        return reader.num_rows
    from workers.scoring.formats.preflight import preflight as first_bytes

    head, complete = first_bytes(
        s3,
        job.source,
        job.version_id,
        job.etag,
        max_bytes=lim.max_bytes,
        header_mode=lim.header_mode,
        send_header=lim.send_header,
        limits=limits,
        csv=opts.input is Format.CSV,
        first=first,
    )
    if head is None:
        return None  # gone or replaced: the scoring step says so
    if opts.input is Format.CSV:
        if not opts.columns.plain:
            _check_csv_columns(head, complete, opts, lim)
        return None
    # JSON Lines: its lines hold no newline, so the first complete lines can be read
    if not complete:
        head = head[: head.rfind(b"\n") + 1]
    if head.strip():
        for _piece in stream_reader(Format.JSONL, [head], opts.columns, lim):
            if not complete:
                break
    elif complete:
        raise BadInput("the file is empty")
    return None


def _check_csv_columns(head: bytes, complete: bool, opts: DataOptions, lim: ReadLimits) -> None:
    """The columns chosen exist in the header (read from the first bytes)."""
    from workers.scoring.formats.csv import header_names
    from workers.scoring.formats.csvsplit import CsvBatcher
    from workers.scoring.formats.select import plan

    batcher = CsvBatcher([head], lim.max_bytes, header_mode=lim.header_mode)
    if complete:
        for _batch in stream_reader(Format.CSV, [head], opts.columns, lim):
            pass
        return
    try:
        batcher._read_header()
    except BadInput:
        return  # a header longer than the first bytes: the scoring step decides
    names = header_names(batcher.header, batcher.fields or 1)
    plan(opts.columns, names, named=batcher.header is not None)
