"""workers.scoring.formats.compression: every member of every supported format, bounded pieces, clear
errors for what is not read (issue 10, items 1 and 2)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
import zlib

import pytest

from scorefleet.errors import BadInput
from workers.scoring.formats import compression
from workers.scoring.formats.compression import Limits, decompress

ROWS = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7) for i in range(100))
MORE = b"".join(b"%d,%d\n" % (i, i * 7) for i in range(100, 200))
ROOMY = Limits(max_expanded=10**12, max_ratio=1e9)
MiB = 1024 * 1024


def chunked(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def expand(data: bytes, limits: Limits = ROOMY, size: int = 1000) -> bytes:
    return b"".join(decompress(chunked(data, size), limits))


def zstd_compress(data: bytes) -> bytes:
    mod = compression._zstd_module()
    if mod is None:
        pytest.skip("no zstd decoder in this interpreter")
    return bytes(mod.compress(data))


COMPRESSORS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}


@pytest.mark.parametrize("name", COMPRESSORS)
def test_every_member_is_data(name):
    """cat a.gz b.gz (and pbzip2, xz multi-stream): 200 rows, not the first 100."""
    comp = COMPRESSORS[name]
    assert expand(comp(ROWS) + comp(MORE)) == ROWS + MORE
    assert expand(comp(ROWS) + comp(MORE), size=7) == ROWS + MORE  # members across chunks


def test_two_member_gzip_is_read_whole_the_defect():
    """Issue 10 item 1 as reported: 200 rows in two members gave 100."""
    data = gzip.compress(ROWS) + gzip.compress(MORE)
    assert expand(data).count(b"\n") == 201


def test_bgzip_empty_eof_member_and_zero_padding():
    bgzip_eof = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    assert expand(gzip.compress(ROWS) + gzip.compress(MORE) + bgzip_eof) == ROWS + MORE
    assert expand(gzip.compress(ROWS) + b"\0" * 5000) == ROWS  # tape padding
    assert expand(lzma.compress(ROWS) + b"\0" * 8 + lzma.compress(MORE)) == ROWS + MORE


def test_zstd_frames():
    assert expand(zstd_compress(ROWS) + zstd_compress(MORE)) == ROWS + MORE


@pytest.mark.parametrize("name", COMPRESSORS)
def test_truncation_is_bad_input(name):
    comp = COMPRESSORS[name]
    whole = comp(ROWS) + comp(MORE)
    for cut in (len(whole) - 3, len(comp(ROWS)) + 12):
        with pytest.raises(BadInput, match="truncated"):
            expand(whole[:cut])


def test_corrupt_member_and_trailing_garbage_are_bad_input():
    bad = bytearray(gzip.compress(MORE))
    bad[-6] ^= 0xFF  # CRC of the second member
    with pytest.raises(BadInput, match="member 2 cannot be decompressed"):
        expand(gzip.compress(ROWS) + bytes(bad))
    with pytest.raises(BadInput, match="bytes after the end"):
        expand(gzip.compress(ROWS) + b"1,2\n")
    with pytest.raises(BadInput, match="bytes after the end"):
        expand(bz2.compress(ROWS) + gzip.compress(MORE))


def test_content_encoding_is_not_trusted_over_the_bytes():
    """Plain bytes are passed through untouched, whatever the object's headers said."""
    assert expand(ROWS) == ROWS
    assert list(decompress([b"a", b"", b",b\n1,2\n"], ROOMY)) == [b"a,b\n1,2\n"]
    assert list(decompress([], ROOMY)) == []


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"PK\x03\x04" + b"\0" * 40, "zip archive"),
        (b"7z\xbc\xaf\x27\x1c\0\4", "7-Zip"),
        (b"Rar!\x1a\x07\x01\x00", "RAR"),
        (b"\x04\x22\x4d\x18" + b"\0" * 12, "lz4"),
        (b"\x1f\x9d\x90abc", "Unix compress"),
        (b"LZIP\x01", "lzip"),
        (gzip.compress(gzip.compress(ROWS)), "compressed or archived again"),
    ],
)
def test_formats_not_read_say_so(data, needle):
    with pytest.raises(BadInput, match=needle):
        expand(data)


def test_a_real_zip_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.csv", ROWS)
    with pytest.raises(BadInput, match=r"zip archive.*upload the CSV itself"):
        expand(buf.getvalue())


def test_a_csv_that_starts_like_bzip2_is_plain():
    data = b"BZh,x\n1,2\n"
    assert expand(data) == data


def bomb(expanded: int, row: bytes = b"0,0,0,0\n") -> bytes:
    """A gzip member of ``expanded`` bytes of one repeated row, made in bounded memory."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = row * (MiB // len(row))
    parts = [c.compress(block) for _ in range(expanded // len(block))]
    return b"".join(parts) + c.flush()


@pytest.mark.parametrize("name", ["gzip", "bzip2", "xz"])
def test_pieces_are_bounded_whatever_the_ratio(name):
    """Issue 10 item 2: never one huge piece (the old code yielded all of a 1 MiB
    chunk's expansion at once)."""
    size = 64 * MiB if name == "gzip" else 8 * MiB
    data = bomb(size) if name == "gzip" else COMPRESSORS[name](b"0,0\n" * (size // 4))
    limits = Limits(max_expanded=10**12, max_ratio=1e9, piece=MiB)
    total = 0
    for piece in decompress(chunked(data, MiB), limits):
        assert len(piece) <= MiB
        total += len(piece)
    assert total == size


def test_a_bomb_is_stopped_early_by_the_ratio():
    data = bomb(64 * MiB)  # ~64 KB that expand 1000 times
    limits = Limits(max_expanded=10**12, max_ratio=200)
    seen = 0
    with pytest.raises(BadInput, match="SCOREFLEET_MAX_EXPANSION_RATIO"):
        for piece in decompress(chunked(data, MiB), limits):
            seen += len(piece)
    assert seen <= 20 * MiB  # stopped right after the 16 MiB grace, not at the end


def test_the_expanded_size_cap_names_its_variable():
    data = gzip.compress(ROWS * 2000)
    with pytest.raises(BadInput, match="SCOREFLEET_MAX_EXPANDED_GB"):
        expand(data, Limits(max_expanded=100_000, max_ratio=1e9))


def test_real_csv_passes_the_default_ratio():
    """The defaults never refuse ordinary CSV: 20 MB of repetitive numeric rows."""
    from scorefleet.settings import load
    from tests.helpers import base_env

    s = load(base_env("http://127.0.0.1:1", "bkt"))
    limits = Limits(s.scoring.max_expanded_bytes, s.scoring.max_expansion_ratio)
    rows = b"".join(b"%d,%d.5,%d,setosa\n" % (i, i % 7, i % 3) for i in range(1_000_000))
    for comp in (gzip.compress, bz2.compress):
        assert sum(len(p) for p in decompress(chunked(comp(rows), MiB), limits)) == len(rows)
