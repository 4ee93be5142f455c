"""The launch preflight: what the first bytes of an input file say, before any model
starts.

:func:`preflight` is what ``tasks.launch`` runs before it starts a container (on
EKS a pod start costs tens of seconds): one ranged GET of the first bytes,
decompressed like the scoring step does, checked by the same CSV batcher. An
empty, header-only or binary file gets its ``.error`` without a model; so does any
other bad input of a file small enough to be read whole here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scorefleet.errors import BadInput
from workers.scoring.formats.compression import Truncated, decompress
from workers.scoring.formats.csvsplit import CsvBatcher
from workers.scoring.formats.magic import binary_problem, excel_problem

#: How many first bytes are looked at (and fetched by the preflight).
HEAD_BYTES = 64 * 1024


def preflight(
    s3: Any,
    uri: Any,
    version_id: str | None,
    etag: str | None = None,
    *,
    max_bytes: int,
    header_mode: str,
    send_header: bool,
    limits: Any,
    csv: bool = True,
    first: tuple[bytes, int] | None = None,
) -> tuple[bytes | None, bool]:
    """Raise :class:`BadInput` if the file's first bytes show it cannot be scored;
    return them (decompressed, None if the upload is gone or replaced) and whether
    they are the whole file.

    Reads at most :data:`HEAD_BYTES` (one ranged GET). When that is the whole file
    (and it decompresses to at most that much), the whole file goes through the
    CSV batcher; otherwise only what the first bytes prove is reported (binary
    content, a compression that is not read): the rest is the scoring step's to
    find. ``limits``: the decompression caps (:class:`workers.scoring.formats.compression.Limits`).
    ``csv``: the file is CSV (else JSON Lines: workers.scoring.formats.source reads on).
    ``first``: those bytes and the object's size, when the caller made that GET."""
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
    problem = binary_problem(bytes(head), "CSV" if csv else "JSON Lines")
    if problem:
        raise BadInput(problem)
    if complete and csv:
        for _batch in CsvBatcher(
            _once(bytes(head)), max_bytes, header_mode=header_mode, send_header=send_header
        ):
            pass
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
