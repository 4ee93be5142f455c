"""The launch preflight: what the first bytes of an input file say, before any model
starts.

:func:`preflight` is what ``tasks.launch`` runs (through
:func:`workers.scoring.formats.source.preflight`) before it starts a container (on
EKS a pod start costs tens of seconds): one ranged GET of the first bytes,
decompressed like the scoring step does; then the file's format reads them as the
scoring step would (its ``check_head``). An empty, header-only or binary file gets
its ``.error`` without a model; so does any other bad input of a file small enough
to be read whole here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scorefleet.errors import BadInput
from workers.scoring.formats.compression import Truncated, decompress
from workers.scoring.formats.magic import binary_problem, excel_problem

#: How many first bytes are looked at (and fetched by the preflight).
HEAD_BYTES = 64 * 1024


def preflight(
    s3: Any,
    uri: Any,
    version_id: str | None,
    etag: str | None = None,
    *,
    label: str,
    limits: Any,
    first: tuple[bytes, int] | None = None,
) -> tuple[bytes | None, bool]:
    """Raise :class:`BadInput` if the file's first bytes show it cannot be scored;
    return them (decompressed, None if the upload is gone or replaced) and whether
    they are the whole file (then its format reads it whole:
    :attr:`~workers.scoring.formats.kind.Format.check_head`).

    Reads at most :data:`HEAD_BYTES` (one ranged GET). Only what the first bytes
    prove is reported here (binary content, a compression that is not read): the
    rest is the format's, or the scoring step's, to find. ``label``: the format's
    name in messages ("CSV"). ``limits``: the decompression caps
    (:class:`workers.scoring.formats.compression.Limits`). ``first``: those bytes and
    the object's size, when the caller made that GET."""
    from botocore.exceptions import ClientError

    from scorefleet.storage.s3io import error_code, version_args

    if first is None:
        kwargs: dict[str, Any] = version_args(version_id)
        if not version_id and etag:
            kwargs["IfMatch"] = etag if etag.startswith('"') else f'"{etag}"'
        try:
            resp = s3.get_object(
                Bucket=uri.bucket, Key=uri.key, Range=f"bytes=0-{HEAD_BYTES - 1}", **kwargs
            )
        except ClientError as exc:
            if error_code(exc) in {"InvalidRange", "416"}:  # S3's answer for an empty object
                raise BadInput("the file is empty") from None
            gone = {"NoSuchKey", "NoSuchVersion", "404", "PreconditionFailed", "412"}
            if error_code(exc) in gone:
                return None, False  # gone or replaced: the scoring step says so
            raise
        first = resp["Body"].read(), total_size(resp, 0)
    body, size = first
    complete = max(size, len(body)) <= len(body)
    problem = excel_problem(body)
    if problem:
        raise BadInput(problem)
    head = bytearray()
    try:
        for chunk in decompress(_once(body), limits):
            head += chunk
            if len(head) > HEAD_BYTES:
                complete = False
                break
    except Truncated:
        if complete:
            raise  # the whole file ends inside a member: cut short
        # else: where the first bytes end; the scoring step reads on
    problem = binary_problem(bytes(head), label)
    if problem:
        raise BadInput(problem)
    return bytes(head), complete


def _once(data: bytes) -> Iterator[bytes]:
    yield data


def total_size(resp: Any, got: int) -> int:
    """The object's whole size from a ranged GET's Content-Range ("bytes 0-9/1234")."""
    content_range = str(resp.get("ContentRange") or "")
    if "/" in content_range:
        size = content_range.rsplit("/", 1)[1]
        if size.isdigit():
            return int(size)
    return got
