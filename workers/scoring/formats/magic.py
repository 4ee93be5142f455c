"""What a file's first bytes say it is: the one table of magic bytes.

Every signature scorefleet knows sits in :data:`SIGNATURES`, with what it means for an
input file:

* :attr:`Role.COMPRESSED` -- a compression that is read (gzip, bzip2, xz, zstd;
  :mod:`.compression` decompresses it, member by member);
* :attr:`Role.REFUSED` -- a compression or archive recognised but not read (zip, 7z,
  rar, lz4, Unix compress, lzip): refused with what to do instead;
* :attr:`Role.BINARY` -- not text at all (images, documents, other data formats,
  executables): refused, naming what the file looks like (:func:`binary_problem`).

A signature is a sequence of byte patterns at offset 0 (``None`` matches any ASCII
digit: bzip2's block size), so the same table also tells a member header cut short
from bytes that are no member (:func:`could_start`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Compression(enum.Enum):
    """How an input file's bytes are compressed (decided by its first bytes)."""

    PLAIN = "plain"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


class Role(enum.Enum):
    COMPRESSED = "compressed"  # read: decompressed member by member
    REFUSED = "refused"  # a compression or archive that is not read
    BINARY = "binary"  # not text: an image, a document, another data format


Pattern = tuple[int | None, ...]


def _p(magic: bytes) -> tuple[Pattern, ...]:
    return (tuple(magic),)


#: Enough leading bytes to recognise every signature below.
SNIFF = 16
_RECOMPRESS = "recompress it with gzip, bzip2, xz or zstd"
_ARCHIVE = "upload the CSV itself, or gzip it"


@dataclass(frozen=True)
class Signature:
    patterns: tuple[Pattern, ...]  # any of them, at offset 0
    what: str  # "a zip archive"
    role: Role
    advice: str = ""  # what to do instead
    compression: Compression | None = None  # Role.COMPRESSED: which

    def matches(self, head: bytes) -> bool:
        return any(_fits(head, p) for p in self.patterns)


def _fits(head: bytes, pattern: Pattern) -> bool:
    if len(head) < len(pattern):
        return False
    return all(
        (0x30 <= b <= 0x39) if want is None else b == want
        for b, want in zip(head, pattern, strict=False)
    )


#: Most specific first.
SIGNATURES: tuple[Signature, ...] = (
    # --- compressions that are read
    Signature(_p(b"\x1f\x8b"), "gzip-compressed", Role.COMPRESSED, "", Compression.GZIP),
    Signature(
        # "BZh" + block size digit + the block (pi) or end-of-stream (sqrt pi) magic
        tuple((*b"BZh", None, *block) for block in (b"1AY&SY", b"\x17\x72\x45\x38\x50\x90")),
        "bzip2-compressed",
        Role.COMPRESSED,
        "",
        Compression.BZIP2,
    ),
    Signature(_p(b"\xfd7zXZ\x00"), "xz-compressed", Role.COMPRESSED, "", Compression.XZ),
    Signature(_p(b"\x28\xb5\x2f\xfd"), "zstd-compressed", Role.COMPRESSED, "", Compression.ZSTD),
    # --- compressions and archives recognised but not read
    Signature(_p(b"PK\x03\x04"), "a zip archive", Role.REFUSED, _ARCHIVE),
    Signature(_p(b"PK\x05\x06"), "an empty zip archive", Role.REFUSED, _ARCHIVE),
    Signature(_p(b"7z\xbc\xaf\x27\x1c"), "a 7-Zip archive", Role.REFUSED, _ARCHIVE),
    Signature(_p(b"Rar!\x1a\x07"), "a RAR archive", Role.REFUSED, _ARCHIVE),
    Signature(_p(b"\x04\x22\x4d\x18"), "lz4-compressed", Role.REFUSED, _RECOMPRESS),
    Signature(
        _p(b"\x1f\x9d"),
        "compressed with Unix compress (.Z)",
        Role.REFUSED,
        "recompress it with gzip",
    ),
    Signature(_p(b"LZIP"), "lzip-compressed", Role.REFUSED, _RECOMPRESS),
    # --- not text
    Signature(_p(b"\x89PNG\r\n\x1a\n"), "a PNG image", Role.BINARY),
    Signature(_p(b"\xff\xd8\xff"), "a JPEG image", Role.BINARY),
    Signature(_p(b"GIF87a") + _p(b"GIF89a"), "a GIF image", Role.BINARY),
    Signature(_p(b"II*\x00") + _p(b"MM\x00*"), "a TIFF image", Role.BINARY),
    Signature(_p(b"%PDF-"), "a PDF document", Role.BINARY),
    Signature(
        _p(b"PAR1"),
        "a Parquet file",
        Role.BINARY,
        "name it .parquet, or tag it content_type=parquet (docs/formats.md)",
    ),
    Signature(_p(b"ARROW1"), "an Arrow (Feather) file", Role.BINARY, "export it as CSV"),
    Signature(_p(b"ORC"), "an ORC file", Role.BINARY, "export it as CSV"),
    Signature(_p(b"Obj\x01"), "an Avro file", Role.BINARY, "export it as CSV"),
    Signature(
        _p(b"\x93NUMPY"),
        "a NumPy array file",
        Role.BINARY,
        "save it with numpy.savetxt(..., delimiter=',')",
    ),
    Signature(
        tuple((0x80, n) for n in (2, 3, 4, 5)), "a Python pickle", Role.BINARY, "save it as CSV"
    ),
    Signature(
        _p(b"SQLite format 3\x00"), "an SQLite database", Role.BINARY, "export the table as CSV"
    ),
    Signature(
        _p(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
        "an old-style Microsoft Office file (.xls, .doc)",
        Role.BINARY,
        "save the sheet as CSV UTF-8",
    ),
    Signature(_p(b"\x7fELF"), "a Linux executable", Role.BINARY),
    Signature(_p(b"MZ"), "a Windows executable", Role.BINARY),
)

COMPRESSIONS_READ = "gzip, bzip2, xz or zstd"


def identify(head: bytes, *roles: Role) -> Signature | None:
    """The first signature of one of ``roles`` (all when none given) that ``head``
    starts with, or None."""
    for sig in SIGNATURES:
        if (not roles or sig.role in roles) and sig.matches(head):
            return sig
    return None


def signature_of(compression: Compression) -> Signature:
    for sig in SIGNATURES:
        if sig.compression is compression:
            return sig
    raise KeyError(compression)


def could_start(compression: Compression, data: bytes) -> bool:
    """Could ``data`` (shorter than a member's magic) be the start of a member of
    ``compression``? Tells a header cut short from bytes that are no member."""

    def prefix(pattern: Pattern) -> bool:
        return len(data) < len(pattern) and _fits(data, pattern[: len(data)])

    return any(prefix(p) for p in signature_of(compression).patterns)


# ---------------------------------------------------------------- text or not
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b")


def _controls(head: bytes) -> int:
    return sum(1 for b in head if b < 0x20 and b not in _TEXT_CONTROLS)


def binary_problem(head: bytes, what: str = "CSV") -> str | None:
    """Why ``head`` (a file's first bytes, decompressed) is not ``what`` (CSV, JSON
    Lines) text, or None.

    Signatures are looked at only once the bytes are clearly not text (a NUL byte, or
    many control characters), so a CSV whose header happens to start like one ("BM..."
    for a bitmap) is never taken for it."""
    sample = head[:4096]
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "the file is UTF-16 text, not UTF-8: save it as UTF-8 (CSV UTF-8)"
    if not sample or (b"\x00" not in sample and _controls(sample) * 20 < len(sample)):
        return None  # text (maybe not UTF-8: the batcher says so, with the row)
    sig = identify(sample, Role.BINARY)
    if sig is not None:
        return f"the file looks like {sig.what}, not {what}" + (
            f": {sig.advice}" if sig.advice else ""
        )
    return f"the file looks like binary data, not {what} text (it has NUL or control bytes)"


def excel_problem(head: bytes) -> str | None:
    """An Excel workbook is a zip archive; say which (before the decompression step
    calls it just a zip archive)."""
    if head.startswith(b"PK\x03\x04") and (b"xl/" in head[:4096] or b"[Content_Types]" in head):
        return "the file looks like an Excel workbook (.xlsx), not CSV: save the sheet as CSV UTF-8"
    return None
