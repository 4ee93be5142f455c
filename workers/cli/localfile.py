"""A local file read as S3 would serve it: what ``scorefleet check`` (and ``submit
--check``) hand to the same reading code the launch preflight and the score step use
(:mod:`workers.scoring.preview`), so a file is judged before it is uploaded exactly
as it will be after.

It answers the few S3 calls that code makes on one object: ``get_object`` (whole, or
a ``Range``; conditions such as ``IfMatch`` hold trivially for a file nobody
replaces) and ``head_object``. The Content-Type is empty, as ``scorefleet submit``
uploads it (S3 then says ``binary/octet-stream``, which decides nothing either).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

_RANGE = re.compile(r"bytes=(\d+)-(\d*)\Z")


class _Body:
    def __init__(self, path: Path, start: int, end: int) -> None:
        self._file = path.open("rb")
        self._file.seek(start)
        self._left = end - start

    def read(self, size: int = -1) -> bytes:
        if self._file.closed:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._file.read(want)
        self._left -= len(data)
        if not data or self._left <= 0:
            self.close()
        return data

    def iter_chunks(self, chunk_size: int = 1024 * 1024) -> Any:
        while chunk := self.read(chunk_size):
            yield chunk

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class LocalObject:
    """``s3.get_object`` / ``s3.head_object`` of one local file (any bucket and key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def head_object(self, **_: Any) -> dict[str, Any]:
        return {"ContentLength": self.size, "ContentType": "", "ETag": '"local"'}

    def get_object(self, *, Range: str | None = None, **_: Any) -> dict[str, Any]:
        start, end = 0, self.size
        resp: dict[str, Any] = {"ContentType": "", "ETag": '"local"'}
        if Range is not None:
            m = _RANGE.match(Range)
            if m is None or int(m.group(1)) >= self.size:
                raise ClientError(
                    {"Error": {"Code": "InvalidRange", "Message": "not satisfiable"}},
                    "GetObject",
                )
            start = int(m.group(1))
            end = min(self.size, int(m.group(2)) + 1 if m.group(2) else self.size)
            resp["ContentRange"] = f"bytes {start}-{end - 1}/{self.size}"
        resp["ContentLength"] = end - start
        resp["Body"] = _Body(self.path, start, end)
        return resp
