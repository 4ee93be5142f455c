"""S3 locations: parsing ``s3://bucket/key`` and mapping inputs to their outputs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Bucket names: 3-63 chars, lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]\Z", re.ASCII)

SCOREOUT_SUFFIX = ".scoreout"
ERROR_SUFFIX = ".error"
#: rows the model refused, beside the .scoreout (workers/scoring/rejects.py)
REJECTED_SUFFIX = ".rejected"
#: S3's limit on the length of a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, order=True)
class S3Uri:
    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ValueError("must start with s3://")
        bucket, _, key = uri[5:].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        return cls(bucket, key)

    def as_prefix(self) -> S3Uri:
        """The same location as a 'folder': empty (whole bucket) or ending with '/'."""
        if self.key and not self.key.endswith("/"):
            return S3Uri(self.bucket, self.key + "/")
        return self

    def contains(self, other: S3Uri) -> bool:
        """True if ``other`` (a key or a prefix) lies under this prefix."""
        return self.bucket == other.bucket and other.key.startswith(self.key)

    def relative(self, other: S3Uri) -> str:
        if not self.contains(other):
            raise ValueError(f"{other} is not under {self}")
        return other.key[len(self.key) :]

    def join(self, relative: str) -> S3Uri:
        return S3Uri(self.bucket, self.key + relative)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


#: the end of a shortened name: ``~`` and 16 hex digits of the SHA-256 of the whole
#: relative path (before the suffix)
_SHORTENED = re.compile(r"~[0-9a-f]{16}\Z")


def output_uri(input_prefix: S3Uri, output_prefix: S3Uri, source: S3Uri, suffix: str) -> S3Uri:
    """``<output prefix>/<path of source relative to the input prefix><suffix>``.

    When that would exceed S3's 1,024-byte key limit (a long input key under a
    longer output prefix), the relative path is cut short and ``~<16 hex digits of
    its SHA-256>`` keeps the name unique and deterministic; the output's metadata
    still names the full source URI. A relative path that itself ends like such a
    name (``~`` and 16 hex digits) gets the ``~<hash>`` of its own too, so that no
    input key can name another's shortened output: two distinct input keys never
    share an output (the shortened names all end with a hash of the whole path,
    the others never do).
    """
    rel = input_prefix.relative(source)
    key = output_prefix.key + rel + suffix
    if len(key.encode()) <= MAX_KEY_BYTES and not _SHORTENED.search(rel):
        return S3Uri(output_prefix.bucket, key)
    tail = "~" + hashlib.sha256(rel.encode()).hexdigest()[:16] + suffix
    room = MAX_KEY_BYTES - len((output_prefix.key + tail).encode())
    head = rel.encode()[: max(0, room)].decode("utf-8", errors="ignore")
    return S3Uri(output_prefix.bucket, output_prefix.key + head + tail)
