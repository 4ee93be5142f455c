"""What the first bytes of an input file say, before any model starts.

:func:`binary_problem` names a file that is not text by its magic bytes ("looks
like a PNG image, not CSV"), with what to do about it. It only looks at
signatures once the bytes are clearly not text (a NUL byte, or many control
characters), so a CSV whose header happens to start like a signature ("BM..."
for a bitmap) is never taken for one.

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

#: (magic bytes at offset 0, what the file is, what to do), most specific first.
#: Compressions and archives are :mod:`workers.scoring.formats.compression`'s: it reads gzip, bzip2,
#: xz and zstd, and names (and refuses) zip, 7z, rar, lz4 and the like.
SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", ""),
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"GIF87a", "a GIF image", ""),
    (b"GIF89a", "a GIF image", ""),
    (b"II*\x00", "a TIFF image", ""),
    (b"MM\x00*", "a TIFF image", ""),
    (b"%PDF-", "a PDF document", ""),
    (
        b"PAR1",
        "a Parquet file",
        "name it .parquet, or tag it content_type=parquet (docs/formats.md)",
    ),
    (b"ARROW1", "an Arrow (Feather) file", "export it as CSV"),
    (b"ORC", "an ORC file", "export it as CSV"),
    (b"Obj\x01", "an Avro file", "export it as CSV"),
    (b"\x93NUMPY", "a NumPy array file", "save it with numpy.savetxt(..., delimiter=',')"),
    (b"\x80\x02", "a Python pickle", "save it as CSV"),
    (b"\x80\x03", "a Python pickle", "save it as CSV"),
    (b"\x80\x04", "a Python pickle", "save it as CSV"),
    (b"\x80\x05", "a Python pickle", "save it as CSV"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an old-style Microsoft Office file (.xls, .doc)",
        "save the sheet as CSV UTF-8",
    ),
    (b"\x7fELF", "a Linux executable", ""),
    (b"MZ", "a Windows executable", ""),
)

#: How many first bytes are looked at (and fetched by the preflight).
HEAD_BYTES = 64 * 1024
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b")


def _controls(head: bytes) -> int:
    return sum(1 for b in head if b < 0x20 and b not in _TEXT_CONTROLS)


def binary_problem(head: bytes, what: str = "CSV") -> str | None:
    """Why ``head`` (a file's first bytes, decompressed) is not ``what`` (CSV, JSON
    Lines) text, or None."""
    sample = head[:4096]
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "the file is UTF-16 text, not UTF-8: save it as UTF-8 (CSV UTF-8)"
    if not sample or (b"\x00" not in sample and _controls(sample) * 20 < len(sample)):
        return None  # text (maybe not UTF-8: the batcher says so, with the row)
    for magic, kind, advice in SIGNATURES:
        if sample.startswith(magic):
            return f"the file looks like {kind}, not {what}" + (f": {advice}" if advice else "")
    return f"the file looks like binary data, not {what} text (it has NUL or control bytes)"


def excel_problem(head: bytes) -> str | None:
    """An Excel workbook is a zip archive; say which (before the decompression step
    calls it just a zip archive)."""
    if head.startswith(b"PK\x03\x04") and (b"xl/" in head[:4096] or b"[Content_Types]" in head):
        return "the file looks like an Excel workbook (.xlsx), not CSV: save the sheet as CSV UTF-8"
    return None


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
    from workers.scoring.formats.compression import Truncated, decompress
    from workers.scoring.formats.csvsplit import CsvBatcher

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
