"""Helpers shared by the benchmarks: a local stack, generated inputs, timing."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from scorefleet.storage.s3io import encode_tags
from workers.localstack.stack import BUCKET, IRIS_IMAGE, LocalStack, emulator_client

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


@contextlib.contextmanager
def local_stack(**kw) -> Iterator[LocalStack]:
    state = Path(tempfile.mkdtemp(prefix="scorefleet-bench-"))
    stack = LocalStack(state, flower=False, **kw)
    stack.start()
    try:
        stack.wait_worker_ready()
        yield stack
    finally:
        stack.stop()


class Client:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.s3 = emulator_client("s3", stack.endpoint)

    def drop(
        self, key: str, path: Path, image: str = IRIS_IMAGE, tags: dict | None = None
    ) -> float:
        self.s3.upload_file(
            str(path),
            BUCKET,
            f"in/{key}",
            ExtraArgs={"Tagging": encode_tags({"model_image": image, **(tags or {})})},
        )
        return time.perf_counter()

    def wait(self, key: str, timeout: float = 3600, poll: float = 0.02) -> tuple[str, float, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for suffix in (".scoreout", ".error"):
                try:
                    head = self.s3.head_object(Bucket=BUCKET, Key=f"out/{key}{suffix}")
                except self.s3.exceptions.ClientError:
                    continue
                return suffix, time.perf_counter(), head
            time.sleep(poll)
        raise TimeoutError(key)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def measure_in(checkout: Path, script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``script`` (a bench file, with ``args``) on ``checkout``'s code (its
    working directory and PYTHONPATH) and return the JSON object its last line of
    output prints: one arm of a before/after measurement."""
    proc = subprocess.run(
        [sys.executable, str(Path(script).resolve()), *args],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
