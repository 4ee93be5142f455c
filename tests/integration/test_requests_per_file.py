"""Issue 17: what one small file costs in S3 requests, step by step.

The real steps run in this process (``.apply()``) against moto with the local
backend and the fake model, as one file's chain runs on a worker: a first delivery
of each message, warm mode (the model parked after scoring). Every S3 call the
worker's client makes is counted by botocore's own event hooks: the counts are
deterministic, so a request a change adds (or a cut removes) shows here. What each
request is for: docs/benchmarks.md, "Each request per file and the guarantee it
serves".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import tasks.score
from tasks.launch import launch
from tasks.score import score
from tasks.teardown import teardown
from tasks.upload import upload
from tests.helpers import queued_job
from workers import runtime

SOURCE = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(50))


@pytest.fixture
def env(worker_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    worker_env(SCOREFLEET_WARM_IDLE_SECONDS="60")
    # each message is a first delivery, as in a storm where nothing fails
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: True)


class Calls:
    """The S3 operations the worker's client makes, counted by name."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1

    def take(self) -> dict[str, int]:
        got, self.counts = dict(self.counts), Counter()
        return got


def run(step: Any, job: dict[str, Any]) -> dict[str, Any]:
    result = step.apply(args=[job])
    assert result.successful(), result.traceback
    return dict(result.result)


def test_the_s3_requests_of_one_small_file(env, bucket):
    rt = runtime.current()
    job = queued_job(rt, bucket, "in/a.csv", SOURCE)  # the run record the Lambda wrote
    calls = Calls(rt.s3)

    job = run(launch, job)
    assert calls.take() == {
        # the run record (claim), the file's first bytes (preflight; their GET says
        # the upload's format and size: no HEAD)
        "GetObject": 2,
        "PutObject": 1,  # the claim
    }
    job = run(score, job)
    assert calls.take() == {
        # the file itself; no run record: no writer to register for an output of one
        # PUT, no progress for a file scored within the progress interval
        "GetObject": 1,  # its Content-Type and size name the formats (no HEAD)
        "PutObject": 1,  # the staged output
    }
    job = run(upload, job)
    assert job["published"] == f"s3://{bucket}/out/a.csv.scoreout"
    assert calls.take() == {
        "GetObject": 1,  # the run record: superseded? (and the CAS of the outcome)
        "PutObject": 1,  # the outcome, recorded before it is published (exactly once)
        "HeadObject": 1,  # the source: replaced since? (never stale)
        "CopyObject": 1,  # the .scoreout, tagged, in one step
        "ListObjectsV2": 1,  # the run's staging objects (this attempt's and any copy's)
        # those, and an earlier run's .error and .rejected, in one request
        "DeleteObjects": 1,
    }
    run(teardown, job)
    assert calls.take() == {}
    got = rt.s3.get_object(Bucket=bucket, Key="out/a.csv.scoreout")["Body"].read()
    assert got.count(b"\n") == 50  # one score per row (the fake model sends no header)
    # issue 27: the outcome's provenance rode on the requests counted above (the copy's
    # metadata, the run record's outcome): none was added for it
    meta = rt.s3.head_object(Bucket=bucket, Key="out/a.csv.scoreout")["Metadata"]
    spec = rt.settings.models.spec("test/ok:1")
    assert meta["model-image"] == "test/ok:1" and meta["model-protocol"] == "sagemaker"
    assert meta["catalog-entry"] == spec.entry_id and meta["scorefleet-version"]
    assert meta["model-image-id"] == spec.entry_id  # the local backend: the entry ran
    record = rt.ledger.get(job["pipeline_id"])
    assert record is not None and record.data["provenance"]["catalog_entry"] == spec.entry_id
