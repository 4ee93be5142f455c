"""Issue 25: a file scored by several model replicas, through the real steps
(``.apply()`` in this process) against moto, with the local backend and the fake
model as real processes: they start together, every one gets mini-batches, the
output is in input order and the same as one model's, and teardown, the reaper,
the .error of a replica that fails and warm mode know every replica."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from prometheus_client import REGISTRY

import tasks.base
import tasks.score
from scorefleet.s3uri import S3Uri
from tasks.launch import launch
from tasks.score import score
from tasks.teardown import teardown
from tasks.upload import upload
from tests.helpers import FAKEMODEL, fake, queued_job
from tests.helpers.fakemodel import hash_row
from workers.localstack.stack import emulator_client

ROWS = 8000
SOURCE = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7) for i in range(ROWS))
EXPECTED = b"".join(hash_row([str(i), str(i * 7)]) for i in range(ROWS))
#: one image whose files get three replicas, whatever their size
CATALOG = {
    "test/hash3:1": {**fake("hash", "--delay", "0.02"), "replicas": 3, "min_mb_per_replica": 0},
}


@pytest.fixture
def rt(worker_env: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: True)
    # small mini-batches (10 kB), so that the file has several
    return worker_env(CATALOG, SCOREFLEET_MAX_PAYLOAD_MB="0.01", SCOREFLEET_MAX_IN_FLIGHT="2")


def queued(rt: Any, bucket: str, key: str, **tags: str) -> dict[str, Any]:
    job = queued_job(rt, bucket, key, SOURCE)
    job["model_image"] = "test/hash3:1"
    job["data_tags"] = dict(tags)
    return job


def failed(step: Any, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run ``step``, which gives up: then its failure tail (upload the .error, teardown)
    here too. The job the tail got."""
    tails: list[dict[str, Any]] = []
    monkeypatch.setattr(
        tasks.base,
        "failure_tail",
        lambda j, step, app=None: SimpleNamespace(apply_async=lambda: tails.append(j.to_dict())),
    )
    assert not step.apply(args=[job]).successful()
    (tail,) = tails
    return run(teardown, run(upload, tail))


def run(step: Any, job: dict[str, Any]) -> dict[str, Any]:
    result = step.apply(args=[job])
    assert result.successful(), (result.state, result.traceback)
    return dict(result.result)


def replica_dirs(rt: Any, run_id: str) -> list[str]:
    return sorted(p.name for p in rt.backend.runs.root.glob(f"{run_id}*"))


def posts(rt: Any, run_id: str, replica: int) -> int:
    log = (rt.backend.runs.dir(run_id, replica) / "model.log").read_text()
    return log.count('"POST /invocations')


def body_of(s3: Any, uri: str) -> bytes:
    dest = S3Uri.parse(uri)
    return bytes(s3.get_object(Bucket=dest.bucket, Key=dest.key)["Body"].read())


def test_a_file_is_scored_by_its_replicas_in_input_order(rt, bucket, caplog):
    caplog.set_level("INFO")
    job = run(launch, queued(rt, bucket, "in/three.csv"))
    run_id = job["run_id"]
    assert job["model_replicas"] == [0, 1, 2]
    assert replica_dirs(rt, run_id) == [run_id, f"{run_id}.1", f"{run_id}.2"]
    pids = {rt.backend.runs.record(run_id, i)["pid"] for i in range(3)}
    assert len(pids) == 3
    before = REGISTRY.get_sample_value("scorefleet_model_replicas_sum") or 0.0
    job = run(score, job)
    assert "scoring with 3 model replicas" in caplog.text
    assert REGISTRY.get_sample_value("scorefleet_model_replicas_sum") == before + 3
    # every replica got mini-batches; between them, every one (and a header each)
    counts = [posts(rt, run_id, i) for i in range(3)]
    assert all(counts) and sum(counts) >= 7, counts
    job = run(upload, job)
    s3 = emulator_client("s3", rt.s3.meta.endpoint_url)
    assert body_of(s3, job["published"]) == EXPECTED  # the order one model gives
    run(teardown, job)
    assert replica_dirs(rt, run_id) == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def test_a_tag_asks_for_fewer_never_more(rt, bucket, caplog):
    caplog.set_level("INFO")
    two = run(launch, queued(rt, bucket, "in/two.csv", replicas="2"))
    assert two["model_replicas"] == [0, 1]
    nine = run(launch, queued(rt, bucket, "in/nine.csv", replicas="9"))
    assert nine["model_replicas"] == [0, 1, 2]
    assert "the file gets 3 replicas (catalog allows 3; tag asked 9)" in caplog.text
    for job in (two, nine):
        run(teardown, job)
        assert replica_dirs(rt, job["run_id"]) == []


def test_a_bad_replicas_tag_gets_an_error_naming_it(rt, bucket, monkeypatch):
    job = queued(rt, bucket, "in/bad.csv", replicas="lots")
    failed(launch, job, monkeypatch)
    s3 = emulator_client("s3", rt.s3.meta.endpoint_url)
    error = body_of(s3, f"s3://{bucket}/out/bad.csv.error").decode()
    assert "replicas tag 'lots' is not a whole number" in error
    assert replica_dirs(rt, job["run_id"]) == []  # nothing was started


def test_a_replica_that_crashes_at_start_fails_the_file_with_its_own_log(
    worker_env, bucket, tmp_path, monkeypatch
):
    """One of two replicas loses a race at start (--only-first) and exits 4: the
    .error names that replica and quotes its log, not the other's; teardown stops the
    one that started."""
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: True)
    lock = tmp_path / "gpu.lock"
    command = f"{{python}} {FAKEMODEL} --port {{port}} --mode ok --only-first {lock}"
    catalog = {"test/hash3:1": {"command": command, "replicas": 2, "min_mb_per_replica": 0}}
    rt = worker_env(catalog)
    job = queued(rt, bucket, "in/crash.csv")
    failed(launch, job, monkeypatch)
    s3 = emulator_client("s3", rt.s3.meta.endpoint_url)
    error = body_of(s3, f"s3://{bucket}/out/crash.csv.error").decode()
    m = re.search(r"replica (\d) \(of 2\): the model exited with code 4", error)
    assert m, error
    assert "lost the race for its GPU" in error
    assert error.count("listening on") == 0  # the other replica's log is not quoted
    # the failure tail (upload, teardown) ran in this process: nothing is left
    assert replica_dirs(rt, job["run_id"]) == []


def test_a_replica_gone_before_the_score_is_started_again(rt, bucket, caplog):
    caplog.set_level("INFO")
    job = run(launch, queued(rt, bucket, "in/gone.csv"))
    run_id = job["run_id"]
    dead = rt.backend.runs.record(run_id, 1)["pid"]
    psutil.Process(dead).kill()
    psutil.Process(dead).wait(5)
    job = run(score, job)
    assert "the model replica 1 of this run is gone; starting it again" in caplog.text
    assert rt.backend.runs.record(run_id, 1)["pid"] != dead
    job = run(upload, job)
    s3 = emulator_client("s3", rt.s3.meta.endpoint_url)
    assert body_of(s3, job["published"]) == EXPECTED
    run(teardown, job)


def test_the_reaper_finds_every_replica(rt, bucket):
    job = run(launch, queued(rt, bucket, "in/reaped.csv"))
    run_id = job["run_id"]
    removed = rt.backend.reap(0, lambda run: False)
    assert sorted(removed) == sorted([run_id, f"{run_id}.1", f"{run_id}.2"])
    assert replica_dirs(rt, run_id) == []


def test_warm_mode_parks_replicas_one_by_one(worker_env, bucket, monkeypatch):
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: True)
    rt = worker_env(CATALOG, SCOREFLEET_WARM_IDLE_SECONDS="60", SCOREFLEET_WARM_MAX_PER_IMAGE="4")
    a = run(launch, queued(rt, bucket, "in/warm-a.csv"))
    # the launch handed its three ready models to the pool, each a model of its own
    assert a["model_pooled"] is True and replica_dirs(rt, a["run_id"]) == []
    pool = rt.backend.warm.pool("test/hash3:1")
    assert len(list(pool.iterdir())) == 3
    a = run(score, a)  # takes the three back, as its replicas
    assert a["model_replicas"] == [0, 1, 2] and a["released"] is True
    assert len(list(pool.iterdir())) == 3  # released after scoring: parked again
    s3 = emulator_client("s3", rt.s3.meta.endpoint_url)
    assert body_of(s3, run(upload, a)["published"]) == EXPECTED
