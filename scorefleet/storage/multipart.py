"""A multipart upload written as a stream, in parts that can be committed and taken
up again (issue 26).

:class:`MultipartWriter` streams bytes into an S3 multipart upload; parts go up on a
background thread, in order. Memory is bounded by two parts: the one filling and the
one uploading (a full part waits until the part before it is up). Nothing is
visible at the destination until :meth:`MultipartWriter.complete`; :meth:`abort`
(also on ``with`` exit with an exception) discards everything. An output smaller
than one part is written with a single PUT (one request, not three).

Two ways to cut parts:

* by size (the default): every part is exactly :func:`part_size` bytes;
* at marks (``cut_at_marks``): the writer of a scored file calls :meth:`mark` after
  each mini-batch's output, and a part is cut there once the buffer holds at least
  a part's size. Each part then ends where the input has a resume point, and
  ``on_part`` hears of it once it is up (the scoring step commits it there). Such a
  part may exceed :func:`part_size` by one mini-batch's output.

A writer can also continue an upload another writer started (:class:`Continued`:
its parts so far and the bytes it had not sent yet), and stop without completing it
(:meth:`hand_over`), leaving it to the next.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from scorefleet.s3uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
else:
    S3Client = Any

log = logging.getLogger(__name__)

#: Size of the first parts of a multipart upload: S3's minimum (5 MiB; the last part
#: may be smaller). A writer holds two parts (one filling, one going up).
PART_SIZE = 5 * 1024 * 1024
#: Parts of one size before the size doubles: S3's 10,000 parts then hold 4.9 TiB (its
#: largest object is 5 TiB; parts of 8 MiB throughout held 78 GiB), while an output of
#: a few GB is held in pieces of 5 MiB.
PARTS_PER_SIZE = 1000


def part_size(number: int, first: int = PART_SIZE) -> int:
    """The size of part ``number`` (1-based) of an upload whose first part is ``first``."""
    return first << ((number - 1) // PARTS_PER_SIZE)


@dataclass(frozen=True)
class UploadedPart:
    """One part that is up: its number, size and ETag (as S3 lists them)."""

    number: int
    size: int
    etag: str


def parts_digest(parts: Iterable[UploadedPart], start: str = "") -> str:
    """A digest of parts, in order: each part's number, size and ETag chained onto the
    digest before (so it grows part by part, and a digest of parts 1..k says exactly
    which parts those were)."""
    digest = start
    for p in parts:
        line = f"{digest}\n{p.number}:{p.size}:{p.etag.strip(chr(34))}"
        digest = hashlib.sha256(line.encode()).hexdigest()
    return digest


@dataclass
class Continued:
    """An upload to go on with: its id, the parts already up, and the bytes written
    after them that were not sent as a part (they start the next one)."""

    upload_id: str | None
    parts: Sequence[UploadedPart] = ()
    tail: bytes = b""


@dataclass
class HandedOver:
    """What :meth:`MultipartWriter.hand_over` leaves: every part that is up, and the
    bytes after them."""

    upload_id: str | None
    parts: list[UploadedPart] = field(default_factory=list)
    tail: bytes = b""


class MultipartWriter:
    """Stream bytes into a multipart upload (see the module docstring).

    ``on_start`` is called just before the multipart upload is created (the scoring
    step registers its writer there: an upload that is never started needs none).
    ``on_part(part, tag)``, with ``cut_at_marks``, is called on the upload thread
    once a part cut at a mark is up, with what :meth:`mark`'s ``make`` returned; the
    last part (sent by :meth:`complete`) has no mark and is not reported.
    """

    def __init__(
        self,
        s3: S3Client,
        dest: S3Uri,
        *,
        content_type: str = "text/csv",
        part_size: int | None = None,
        on_start: Callable[[], object] | None = None,
        cut_at_marks: bool = False,
        on_part: Callable[[UploadedPart, Any], None] | None = None,
        continued: Continued | None = None,
    ) -> None:
        self.s3 = s3
        self.on_start = on_start
        self.on_part = on_part
        self.cut_at_marks = cut_at_marks
        self.dest = dest
        self.part_size = part_size or PART_SIZE
        self.bytes_written = 0
        self._buf = bytearray()
        self._parts: list[UploadedPart] = []
        self._parts_sent = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple[int, bytearray, Any] | None] = queue.Queue()
        #: taken by a part handed to the uploader, given back once it is up
        self._uploading = threading.Semaphore(1)
        self.content_type = content_type
        self.upload_id: str | None = None
        self._thread = threading.Thread(target=self._upload_loop, daemon=True, name="s3-parts")
        self._running = False
        if continued is not None:
            self.upload_id = continued.upload_id
            self._parts = list(continued.parts)
            self._parts_sent = len(self._parts)
            self._buf += continued.tail
            self.bytes_written = sum(p.size for p in self._parts) + len(continued.tail)

    @property
    def parts(self) -> list[UploadedPart]:
        """The parts that are up so far, in order."""
        return sorted(self._parts, key=lambda p: p.number)

    def _start(self) -> None:
        if self.upload_id is None:
            if self.on_start is not None:
                self.on_start()
            resp = self.s3.create_multipart_upload(
                Bucket=self.dest.bucket, Key=self.dest.key, ContentType=self.content_type
            )
            self.upload_id = resp["UploadId"]
        self._running = True
        self._thread.start()

    def _upload_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                self._uploading.release()
                continue  # drain without uploading after a failure
            number, data, tag = item
            try:
                resp = self.s3.upload_part(
                    Bucket=self.dest.bucket,
                    Key=self.dest.key,
                    UploadId=str(self.upload_id),
                    PartNumber=number,
                    Body=data,  # type: ignore[arg-type]  # botocore takes a bytearray as a blob; the stubs say bytes
                )
                part = UploadedPart(number, len(data), str(resp["ETag"]))
                self._parts.append(part)
                if tag is not None and self.on_part is not None:
                    self.on_part(part, tag)
            except BaseException as exc:  # surfaced to the writer thread
                self._error = exc
            finally:
                del item, data  # the part's memory goes before the next one is filled
                self._uploading.release()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _send(self, part: bytearray, tag: Any = None) -> None:
        if not self._running:
            self._start()
        self._uploading.acquire()  # while the part before is still going up: backpressure
        self._check()
        self._parts_sent += 1
        self._queue.put((self._parts_sent, part, tag))

    def write(self, data: bytes) -> None:
        self._check()
        self.bytes_written += len(data)
        if self.cut_at_marks:
            self._buf += data
            return
        # in pieces of at most one part: what is copied past a full part stays small
        with memoryview(data) as view:
            for start in range(0, len(view), self.part_size):
                self._buf += view[start : start + self.part_size]
                while len(self._buf) >= (size := part_size(self._parts_sent + 1, self.part_size)):
                    # the full buffer is the part; only what is past it is copied
                    part, self._buf = self._buf, self._buf[size:]
                    del part[size:]
                    self._send(part)

    def mark(self, make: Callable[[], Any]) -> bool:
        """The bytes written so far end where the input can be taken up again: cut a
        part here if the buffer holds a part's size (``make()`` then says what is
        committed with it, on the upload thread: ``on_part``). True if a part was cut."""
        self._check()
        if len(self._buf) < part_size(self._parts_sent + 1, self.part_size):
            return False
        part, self._buf = self._buf, bytearray()
        self._send(part, make())
        return True

    @property
    def buffered(self) -> int:
        """Bytes written that are not in a part yet."""
        return len(self._buf)

    def complete(self) -> None:
        if self.upload_id is None:  # all of it fits in one part: a single PUT
            self.s3.put_object(
                Bucket=self.dest.bucket,
                Key=self.dest.key,
                Body=bytes(self._buf),
                ContentType=self.content_type,
            )
            self._buf.clear()
            return
        if self._buf or not self._parts_sent:  # the last part may be small
            part, self._buf = self._buf, bytearray()
            self._send(part)
        self._drain()
        self.s3.complete_multipart_upload(
            Bucket=self.dest.bucket,
            Key=self.dest.key,
            UploadId=self.upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in self.parts]
            },
        )

    def _drain(self) -> None:
        """Wait until every part handed to the upload thread is up (or failed)."""
        if self._running:
            self._queue.put(None)
            self._thread.join()
            self._running = False
        self._check()

    def hand_over(self) -> HandedOver:
        """Stop without completing the upload: every part handed over goes up first;
        the bytes not in a part are returned, for the writer that takes it up."""
        self._drain()
        self._error = RuntimeError("handed over")  # nothing more is written here
        tail, self._buf = bytes(self._buf), bytearray()
        return HandedOver(self.upload_id, self.parts, tail)

    def abort(self) -> None:
        if self._error is None:
            self._error = RuntimeError("aborted")
        if self.upload_id is None:
            return  # nothing was sent
        if self._running:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._running = False
        try:
            self.s3.abort_multipart_upload(
                Bucket=self.dest.bucket, Key=self.dest.key, UploadId=self.upload_id
            )
        except ClientError as exc:  # the lifecycle rule reaps it anyway
            log.warning("could not abort multipart upload of %s: %s", self.dest, exc)

    def leave(self) -> None:
        """Stop without completing or aborting the upload (a later delivery takes it
        up from its last committed part): the parts handed over may still go up."""
        if self._error is None:
            self._error = RuntimeError("left for a later delivery")
        if self._running:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._running = False

    def __enter__(self) -> MultipartWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


def list_parts(s3: S3Client, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
    """Every part of an unfinished upload, in order (ListParts, 1,000 a page)."""
    out: list[UploadedPart] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    while True:
        resp = s3.list_parts(**kwargs)
        out += [
            UploadedPart(int(p["PartNumber"]), int(p["Size"]), str(p["ETag"]))
            for p in resp.get("Parts", [])
        ]
        if not resp.get("IsTruncated"):
            return sorted(out, key=lambda p: p.number)
        kwargs["PartNumberMarker"] = resp["NextPartNumberMarker"]
