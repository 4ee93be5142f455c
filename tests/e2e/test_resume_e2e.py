"""Issue 26 through the local stack, nothing mocked: a worker killed with ``kill -9``
mid-file is started again by the stack, SQS hands its message to the new one, and the
file goes on from its last committed part: one ``.scoreout``, byte for byte what an
undisturbed run makes (and its ``.rejected``), for CSV, gzipped CSV, JSON Lines and
Parquet with kept columns and a budget of refused rows, the model having scored again
at most the rows after the last commit (less than a part's worth, and the mini-batches
in flight; a Parquet output is cut between its row groups only, so there up to a row
group's worth). The outputs are several real 5 MiB parts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scorefleet.job import pipeline_id
from scorefleet.storage.multipart import PART_SIZE
from tests.e2e.test_cli_up import BackgroundUp
from tests.helpers import FAKEMODEL, supervised
from workers.localstack.restarts import Restarts
from workers.localstack.stack import BUCKET, LocalStack, emulator_client
from workers.localstack.state import read_env_file
from workers.scoring.formats import parquet_writer

pytestmark = pytest.mark.slow


def record(s3: Any, key: str, version: str, etag: str) -> dict[str, Any]:
    pid = pipeline_id(BUCKET, key, version, etag)
    try:
        body = s3.get_object(Bucket=BUCKET, Key=f"scorefleet-state/runs/{pid}.json")["Body"]
    except s3.exceptions.NoSuchKey:
        return {}
    return dict(json.loads(body.read()))


def wait_committed(s3: Any, key: str, put: dict[str, Any], timeout: float = 120) -> int:
    """Until the file's run record has a committed part; how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = record(s3, key, put["VersionId"], put["ETag"].strip('"')).get("resume", {})
        if parts.get("parts"):
            return int(parts["parts"])
        time.sleep(0.05)
    raise AssertionError(f"{key}: no part committed in {timeout}s")


def wait_outcome(s3: Any, key: str, timeout: float = 180) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for suffix in (".scoreout", ".error"):
            try:
                body = s3.get_object(Bucket=BUCKET, Key=f"out/{key}{suffix}")["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            assert suffix == ".scoreout", body[:2000]
            return bytes(body)
        time.sleep(0.2)
    raise AssertionError(f"no outcome for in/{key} in {timeout}s")


def versions(s3: Any, key: str) -> int:
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
    return len([v for v in listed if v["Key"] == key])


def hash_of(fields: list[str]) -> str:
    return hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- as a user
def test_kill_9_a_worker_mid_file_the_stack_starts_another_and_the_file_goes_on(tmp_path):
    """`scorefleet up` as a user runs it (its own visibility timeout, 30 s): kill -9
    the worker while a file of three parts is being scored; the stack says it starts
    the worker again, and the file is published once, complete and right."""
    rng = random.Random(26)
    rows = [(str(i), f"{rng.getrandbits(480):0120x}") for i in range(90_000)]
    data = ("id,pad\n" + "".join(f"{i},{p}\n" for i, p in rows)).encode()
    want = b"id,pad,score_0,score_1\n" + "".join(
        f"{i},{p},{hash_of([i])},1\n" for i, p in rows
    ).encode("ascii")
    assert len(want) > 2 * PART_SIZE
    catalog = tmp_path / "models.json"
    command = f"{{python}} {FAKEMODEL} --port {{port}} --mode hash --delay 1.0"
    entry = {"command": command, "keep_columns": ["*"], "model_columns": ["id"]}
    catalog.write_text(json.dumps({"test/hash:1": entry}))
    up = BackgroundUp(
        tmp_path,
        "--no-flower",
        "--catalog",
        str(catalog),
        SCOREFLEET_MAX_PAYLOAD_MB="0.5",
        SCOREFLEET_MAX_IN_FLIGHT="2",
    )
    try:
        up.wait_up()
        env = read_env_file(tmp_path / ".scorefleet" / "stack.env")
        s3 = emulator_client("s3", env["AWS_ENDPOINT_URL"])
        put = s3.put_object(
            Bucket=BUCKET, Key="in/big.csv", Body=data, Tagging="model_image=test/hash:1"
        )
        wait_committed(s3, "in/big.csv", put)
        (worker,) = up.workers()
        os.kill(worker.pid, signal.SIGKILL)  # the worker we started, by its PID
        up.wait_for("worker0 exited on signal SIGKILL; starting it again")
        assert wait_outcome(s3, "big.csv") == want
        assert versions(s3, "out/big.csv.scoreout") == 1
        log = (tmp_path / ".scorefleet" / "logs" / "worker0.log").read_text()
        assert "taking the file up at data row" in log
        assert up.stop(signal.SIGINT) == 0
    finally:
        up.kill_all()


# ---------------------------------------------------------------- chaos
#: rows per file: a Parquet output can be cut only between its row groups (64 Ki
#: rows), so its files are longer, to be killed past its first committed part
ROWS = {"csv": 90_000, "gz": 90_000, "jsonl": 90_000, "parquet": 160_000}
#: the rows the model refuses (a budget of 10 keeps them aside in the .rejected)
BAD_ROWS = (12_345, 71_000)


def table(tag: str) -> Any:
    import pyarrow as pa

    rng = random.Random(tag)
    n = ROWS[tag]
    return pa.table(
        {
            "tag": [tag] * n,
            "id": [f"r{i:06d}" for i in range(n)],
            "x": ["BAD" if i in BAD_ROWS else f"{i * 0.5:.1f}" for i in range(n)],
            "pad": [f"{rng.getrandbits(1000):0250x}" for _ in range(n)],
        }
    )


def as_file(fmt: str) -> tuple[str, bytes]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t = table(fmt)
    out = io.BytesIO()
    if fmt in ("csv", "gz"):
        pacsv.write_csv(t, out)
        data = out.getvalue().replace(b'"', b"")
        return ("csv.gz", gzip.compress(data, 1)) if fmt == "gz" else ("csv", data)
    if fmt == "jsonl":
        return "jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in t.to_pylist())
    pq.write_table(t, out, row_group_size=20_000)
    return "parquet", out.getvalue()


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Path]]:
    state = tmp_path_factory.mktemp("resume-stack")
    scored = state / "scored.log"
    command = (
        f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} --mode refuse --delay 0.1 "
        f"--log {scored}"
    )
    stack = LocalStack(
        state,
        workers=1,
        concurrency=2,
        flower=False,
        beat=False,
        catalog={"test/refuse:1": {"command": command}},
        restarts=Restarts(limit=10),  # one kill per test: not a crash loop
        extra_env={
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
            "SCOREFLEET_VISIBILITY_TIMEOUT": "6",
            "SCOREFLEET_MAX_PAYLOAD_MB": "0.5",
            "SCOREFLEET_MAX_IN_FLIGHT": "2",
        },
    )
    with supervised(stack):
        yield stack, scored


def rows_scored(scored: Path, tag: str, since: int) -> int:
    lines = scored.read_text().splitlines()[since:]
    return sum(int(n) for t, n in (line.split() for line in lines) if t == tag)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fmt", ["csv", "gz", "jsonl", "parquet"])
def test_chaos_a_worker_killed_past_the_first_part_changes_nothing(chaos_stack, fmt):
    stack, scored = chaos_stack
    s3 = emulator_client("s3", stack.endpoint)
    suffix, data = as_file(fmt)
    tags = "model_image=test/refuse:1&keep_columns=id+pad&model_columns=tag+x&max_rejected_rows=10"
    # undisturbed
    s3.put_object(Bucket=BUCKET, Key=f"in/u-{fmt}.{suffix}", Body=data, Tagging=tags)
    want = wait_outcome(s3, f"u-{fmt}.{suffix}")
    want_rejected = s3.get_object(Bucket=BUCKET, Key=f"out/u-{fmt}.{suffix}.rejected")[
        "Body"
    ].read()
    # killed at a random point past the first committed part
    since = len(scored.read_text().splitlines()) if scored.exists() else 0
    key = f"k-{fmt}.{suffix}"
    put = s3.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=data, Tagging=tags)
    wait_committed(s3, f"in/{key}", put)
    time.sleep(random.uniform(0, 0.5))
    worker = next(p for p in stack.procs if p.name == "worker0")
    os.killpg(worker.popen.pid, signal.SIGKILL)  # its process group, as a pod dies
    got = wait_outcome(s3, key)
    assert got == want
    rejected = s3.get_object(Bucket=BUCKET, Key=f"out/{key}.rejected")["Body"].read()
    assert rejected == want_rejected
    assert versions(s3, f"out/{key}.scoreout") == 1
    rec = record(s3, f"in/{key}", put["VersionId"], put["ETag"].strip('"'))
    assert rec["state"] == "published" and rec["resume"]["resumes"] == 1
    # the model scored again only rows after the last commit: less than a part's
    # worth, and the mini-batches in flight
    rows = ROWS[fmt]
    twice = rows_scored(scored, fmt, since) - (rows - len(BAD_ROWS))
    per_part = rows * PART_SIZE / len(want)
    if fmt == "parquet":  # a Parquet output is cut between its row groups only
        per_part = max(per_part, parquet_writer.ROW_GROUP_ROWS + 40_000)
    in_flight = 2 * 0.5e6 / (len(data) / rows if fmt != "gz" else 280)
    assert 0 <= twice <= per_part + in_flight, (twice, per_part, in_flight)
