"""The launch preflight's first bytes of a compressed file: where they end is not an
error, corrupt data in them is (workers/scoring/formats/preflight.py, workers/scoring/formats/compression.py).

Reported: the preflight told a prefix cut off at its 64 KiB from a corrupt file by
the word "truncated" in compression's message. The signal is a type now
(``compression.Truncated``), and a prefix that ends inside the header of a later
member (fewer bytes than its magic) is one too; it used to read as "bytes after the
end of the compressed data", so a valid file got an .error before any model ran."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random

import pytest

from scorefleet.errors import BadInput
from workers.scoring.formats import compression
from workers.scoring.formats import preflight as first_bytes
from workers.scoring.formats.compression import Limits, Truncated, decompress

ROOMY = Limits(max_expanded=10**12, max_ratio=1e9)
HEAD = first_bytes.HEAD_BYTES


def csv_rows(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    return b"a,b\n" + b"".join(
        b"%d,%.6f\n" % (rnd.randint(0, 10**9), rnd.random()) for _ in range(n)
    )


def gzip_member_of(size: int, rows: bytes) -> bytes:
    """A gzip member of exactly ``size`` bytes holding ``rows`` (whole CSV rows) and a
    last row padded to fit (stored: the member's size follows the data's)."""
    for pad in range(size):
        member = gzip.compress(rows + b"1,%s\n" % (b"9" * pad), compresslevel=0)
        if len(member) >= size:
            break
    assert len(member) == size, "stored deflate blocks should let every size be hit"
    return member


def preflight(s3, bucket: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="in/a.csv.gz", Body=body)
    uri = type("Uri", (), {"bucket": bucket, "key": "in/a.csv.gz"})()
    first_bytes.preflight(s3, uri, None, label="CSV", limits=ROOMY)


STORED = {
    "gzip": lambda d: gzip.compress(d, compresslevel=0),
    "bzip2": lambda d: bz2.compress(d, 1),
    "xz": lambda d: lzma.compress(d, preset=0),
}


@pytest.mark.parametrize("inside", [1, 3])
def test_a_prefix_ending_in_a_later_members_header_is_not_an_error(s3, bucket, inside):
    """A valid two-member .csv.gz whose first 64 KiB end 1 or 3 bytes into member 2
    (whose magic is 2 bytes, its header 10): main refused it before any model ran."""
    body = gzip_member_of(HEAD - inside, csv_rows(3000)) + gzip.compress(csv_rows(50, seed=1))
    assert b"".join(decompress([body], ROOMY)).count(b"\n") > 50  # a valid file
    with pytest.raises(Truncated):  # what the preflight sees of it
        b"".join(decompress([body[:HEAD]], ROOMY))
    preflight(s3, bucket, body)  # no error: the scoring step reads the whole file


@pytest.mark.parametrize("name", ["gzip", "bzip2", "xz"])
def test_every_cut_of_a_later_members_header_is_truncated(name):
    comp = STORED[name]
    one, two = comp(csv_rows(20)), comp(csv_rows(20, seed=1))
    for cut in range(1, 17):
        with pytest.raises(Truncated):
            b"".join(decompress([one + two[:cut]], ROOMY))


def test_a_cut_off_prefix_passes_and_corrupt_first_bytes_do_not(s3, bucket):
    whole = gzip.compress(csv_rows(40000, seed=2))  # compressed, far more than 64 KiB
    assert len(whole) > 3 * HEAD
    preflight(s3, bucket, whole)  # cut off inside its only member: fine
    corrupt = bytearray(whole)
    corrupt[2] = 7  # the header's compression method: not deflate
    with pytest.raises(BadInput, match="cannot be decompressed") as err:
        preflight(s3, bucket, bytes(corrupt))
    assert not isinstance(err.value, Truncated)
    garbage = gzip.compress(csv_rows(100)) + b"this is not gzip at all"
    with pytest.raises(BadInput, match="bytes after the end"):
        preflight(s3, bucket, garbage)


def test_a_whole_file_cut_short_is_still_an_error(s3, bucket):
    body = gzip.compress(csv_rows(500))[:-30]
    with pytest.raises(Truncated, match="truncated"):
        preflight(s3, bucket, body)


def test_only_truncation_is_typed_truncated():
    rows = csv_rows(100)
    with pytest.raises(Truncated):
        b"".join(decompress([gzip.compress(rows)[:-3]], ROOMY))
    bad = bytearray(gzip.compress(rows))
    bad[-6] ^= 0xFF  # its CRC
    for data in (bytes(bad), gzip.compress(rows) + b"1,2\n", gzip.compress(gzip.compress(rows))):
        with pytest.raises(BadInput) as err:
            b"".join(decompress([data], ROOMY))
        assert not isinstance(err.value, compression.Truncated), err.value
