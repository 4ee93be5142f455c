"""MultipartWriter holds at most two parts: the one filling and the one uploading."""

from __future__ import annotations

import threading
import time
from typing import Any

from scorefleet.s3uri import S3Uri
from scorefleet.storage.multipart import MultipartWriter

PART = 1024


class SlowS3:
    """upload_part blocks until ``go`` is set; records what it was given."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.uploading = threading.Event()
        self.bodies: list[Any] = []

    def create_multipart_upload(self, **kw: Any) -> dict[str, str]:
        return {"UploadId": "u1"}

    def upload_part(self, **kw: Any) -> dict[str, str]:
        self.uploading.set()
        assert self.go.wait(10)
        self.bodies.append(kw["Body"])
        return {"ETag": f'"{kw["PartNumber"]}"'}

    def complete_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self.parts = kw["MultipartUpload"]["Parts"]
        return {}


def test_a_full_part_waits_while_the_part_before_it_uploads():
    s3 = SlowS3()
    w = MultipartWriter(s3, S3Uri("bucket-a", "k"), part_size=PART)  # type: ignore[arg-type]
    returned: list[int] = []

    def writer() -> None:
        for i in range(3):
            w.write(bytes([65 + i]) * PART)
            returned.append(i)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert s3.uploading.wait(10)
    # part 1 is uploading: part 2 is full and waits for it, nothing is queued behind
    # (the writer of before this change queued part 2 and went on filling part 3)
    time.sleep(0.5)
    assert returned == [0]
    s3.go.set()
    t.join(10)
    assert returned == [0, 1, 2]
    w.complete()
    assert [bytes(b) for b in s3.bodies] == [bytes([65 + i]) * PART for i in range(3)]
    assert [p["PartNumber"] for p in s3.parts] == [1, 2, 3]


def test_a_failed_part_fails_the_next_write_and_never_hangs():
    s3 = SlowS3()
    s3.go.set()

    def boom(**kw: Any) -> dict[str, str]:
        raise ConnectionError("the part did not go up")

    s3.upload_part = boom  # type: ignore[method-assign]
    w = MultipartWriter(s3, S3Uri("bucket-a", "k"), part_size=PART)  # type: ignore[arg-type]
    w.write(b"x" * PART)  # part 1 handed over; its upload fails
    try:
        for _ in range(5):
            w.write(b"y" * PART)
    except ConnectionError:
        pass
    else:
        raise AssertionError("a failed part must fail the writer")


def test_parts_double_every_thousand_so_10000_parts_hold_nearly_s3s_largest_object():
    from scorefleet.storage.multipart import PART_SIZE, part_size

    assert part_size(1) == part_size(1000) == PART_SIZE == 5 << 20  # S3's minimum
    assert part_size(1001) == 2 * PART_SIZE and part_size(10_000) == 512 * PART_SIZE
    total = sum(part_size(n) for n in range(1, 10_001))
    assert total >= 4.8 * 2**40 and max(part_size(n) for n in range(1, 10_001)) <= 5 * 2**30


def test_the_writer_sends_parts_of_the_growing_size():
    s3 = SlowS3()
    s3.go.set()
    w = MultipartWriter(s3, S3Uri("bucket-a", "k"), part_size=4)  # type: ignore[arg-type]
    w.write(b"z" * (4 * 1000 + 8 * 2 + 3))
    w.complete()
    sizes = [len(b) for b in s3.bodies]
    assert sizes == [4] * 1000 + [8, 8, 3]


def test_one_large_write_is_cut_into_parts_in_order():
    s3 = SlowS3()
    s3.go.set()
    w = MultipartWriter(s3, S3Uri("bucket-a", "k"), part_size=PART)  # type: ignore[arg-type]
    data = bytes(range(256)) * (PART * 7 // 256) + b"tail"
    w.write(data)
    w.complete()
    assert b"".join(bytes(b) for b in s3.bodies) == data
    assert [len(b) for b in s3.bodies] == [PART] * 7 + [4]
