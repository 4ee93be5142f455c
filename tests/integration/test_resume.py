"""Issue 26, the S3 half: a score step killed mid-file leaves committed parts in the
run record; the next delivery takes the file up from the last of them and the
output comes out as an undisturbed run's, byte for byte, with its .rejected; every
case where that must not happen starts over and is right; a step that reaches
SCOREFLEET_MAX_STEP_SECONDS hands the file to a continuation of itself.

The real score task runs in this process (``.apply()``) against a moto server that
takes parts of a few KiB (S3's 5 MiB minimum would need files of many MB here), with
an in-process model (the hash model of tests/unit/test_formats.py), so a test
takes about a second. Through the local stack, with real workers killed:
tests/e2e/test_resume_e2e.py."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.base
import tasks.score
from scorefleet.job import Job, pipeline_id
from scorefleet.storage import commits, multipart
from tasks.score import score
from tests.helpers import base_env, make_job
from tests.unit.test_formats import hash_model
from workers import runtime
from workers.localstack.stack import emulator_client, free_port, start_moto, stop_process
from workers.scoring import attempt
from workers.scoring.batches import Batch, Scores

PART = 8 * 1024


class Killed(BaseException):
    """The worker dies here: nothing after it runs (no abort, no hand-back)."""


@pytest.fixture(scope="module")
def small_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server whose multipart parts may be as small as 4 KiB."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto-small") / "moto.log"
    os.environ["S3_UPLOAD_PART_MIN_SIZE"] = "4096"
    try:
        proc = start_moto(port, log)
    finally:
        del os.environ["S3_UPLOAD_PART_MIN_SIZE"]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, grace=5)


class Model:
    """The hash model, in process, refusing mini-batches that hold BAD; counts the
    rows it scores, and dies (Killed) once it has scored ``die_after`` rows."""

    def __init__(self, die_after: int | None = None, delay: float = 0.0) -> None:
        self.die_after = die_after
        self.delay = delay
        self.calls = 0
        self.rows = 0

    def score(self, batch: Batch) -> Scores:
        from scorefleet.errors import RowsRefused

        self.calls += 1
        if self.die_after is not None and self.rows >= self.die_after:
            raise Killed
        if batch.rows > 300:  # whole mini-batches (~500 rows); the bisection's at full speed
            time.sleep(self.delay)
        if b"BAD" in batch.as_csv(header=False):
            raise RowsRefused("cannot score a row holding BAD")
        self.rows += batch.rows
        return hash_model(batch)

    #: what the score step asks a model client (tasks/score.py): the bound of
    #: mini-batches in flight, and the contract the model declares (none)
    max_in_flight = 2

    def model_contract(self) -> None:
        return None

    def close(self) -> None:
        pass


@pytest.fixture
def env(small_moto, monkeypatch, tmp_path) -> Iterator[Any]:
    bucket = f"t-{os.urandom(6).hex()}"
    s3 = emulator_client("s3", small_moto)
    s3.create_bucket(Bucket=bucket)
    catalog = {
        "test/ok:1": {
            "command": "true {port}",
            "keep_columns": ["id"],
            "max_rejected_rows": "50",
        }
    }
    values = base_env(
        small_moto,
        bucket,
        SCOREFLEET_STATE_DIR=str(tmp_path / "state"),
        SCOREFLEET_MODEL_CATALOG=json.dumps(catalog),
        SCOREFLEET_MAX_PAYLOAD_MB="0.01",
        SCOREFLEET_MAX_IN_FLIGHT="2",
        SCOREFLEET_VISIBILITY_TIMEOUT="30",
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    monkeypatch.setattr(multipart, "PART_SIZE", PART)
    ns = SimpleNamespace(s3=s3, bucket=bucket, first=True, model=None)
    monkeypatch.setattr(tasks.score, "ready_client", lambda rt, j, spec: (ns.model, j))
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: ns.first)
    failed = attempt.Attempt._failed

    def dies(self: attempt.Attempt, exc: BaseException) -> None:
        if not isinstance(exc, Killed):  # a dead worker cleans nothing up
            failed(self, exc)

    monkeypatch.setattr(attempt.Attempt, "_failed", dies)

    def use(model: Model) -> Model:
        ns.model = model
        return model

    ns.use = use
    yield ns
    runtime.reset()


ROWS = 12000
BAD = len([i for i in range(ROWS) if i % 1111 == 5])


def body(rows: int = ROWS, seed: int = 0) -> bytes:
    lines = [
        f"id-{i:05d},{(i * 7 + seed) % 1000 / 8},{'BAD' if i % 1111 == 5 else f'v{i * 3}'}"
        for i in range(rows)
    ]
    return ("id,x,name\n" + "\n".join(lines) + "\n").encode()


def queued(env: Any, key: str, data: bytes) -> Job:
    etag = env.s3.put_object(Bucket=env.bucket, Key=key, Body=data)["ETag"].strip('"')
    job = make_job(
        pipeline_id(env.bucket, key, None, etag), env.bucket, key=key, etag=etag, size=len(data)
    )
    job = job.claimed("launch-message")
    assert runtime.current().ledger.claim(job, "launch-message", 300).value == "claimed"
    return job


def staged(env: Any, result: dict[str, Any]) -> tuple[bytes, bytes]:
    """(the staged output, the staged .rejected)"""
    key = result["staging_key"]
    out = env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read()
    rej = key.removesuffix(".scoreout.part") + ".rejected.part"
    try:
        rejected = env.s3.get_object(Bucket=env.bucket, Key=rej)["Body"].read()
    except env.s3.exceptions.NoSuchKey:
        rejected = b""
    return out, rejected


def undisturbed(env: Any, data: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    env.use(Model())
    job = queued(env, "in/undisturbed.csv", data)
    result = score.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    return result.result, *staged(env, result.result)


def killed(env: Any, job: Job, after: int) -> commits.Committed:
    """Score ``job`` until its model has scored ``after`` rows, then the worker dies;
    its lease then runs out. What it committed."""
    env.use(Model(die_after=after))
    env.first = True
    with pytest.raises(Killed):
        score.apply(args=[job.to_dict()], throw=True)
    env.first = False  # what comes next is a redelivery
    return expire(env, job)


def expire(env: Any, job: Job) -> commits.Committed:
    # (in this process the dead attempt's upload thread may still send the part it
    # was given: wait for it, as SQS waits a visibility timeout)
    time.sleep(0.5)
    ledger = runtime.current().ledger
    rec = ledger.get(job.pipeline_id)
    entry = commits.of(rec)
    assert entry is not None and entry.parts >= 1, "the killed attempt committed nothing"
    writers = {**rec.data["writers"], entry.key: time.time() - 1}
    assert ledger._put(job.pipeline_id, {**rec.data, "writers": writers}, if_match=rec.etag)
    return entry


def uploads(env: Any) -> list[str]:
    return [u["Key"] for u in env.s3.list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])]


def test_a_killed_attempt_is_taken_up_from_its_last_committed_part(env, caplog):
    """Reported: a worker killed at 90 % of a file left a staging upload the next
    delivery aborted, and the whole file was scored again from its first row."""
    data = body()
    _, want, want_rejected = undisturbed(env, data)
    job = queued(env, "in/a.csv", data)
    entry = killed(env, job, after=ROWS // 2)
    model = env.use(Model())
    caplog.set_level(logging.INFO)
    result = score.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    out, rejected = staged(env, result.result)
    assert out == want and rejected == want_rejected
    assert result.result["staging_key"] == entry.key  # the same upload, gone on with
    assert result.result["rows"] == ROWS - BAD and result.result["rejected_rows"] == BAD
    # the model scored only what came after the last commit
    assert model.rows == ROWS - BAD - entry.rows
    assert "taking the file up at data row" in caplog.text
    assert uploads(env) == []


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("source", "the source is not the upload the parts were made from"),
        ("part lost", "staging upload is gone"),
        ("part changed", "a committed part is not the one committed"),
        ("other run", "not this run's"),
        ("options", "what decides the output changed"),
    ],
)
def test_what_must_not_be_taken_up_starts_over_and_is_right(env, caplog, case, why):
    data = body(seed=3)
    _, want, want_rejected = undisturbed(env, data)
    job = queued(env, "in/a.csv", data)
    entry = killed(env, job, after=ROWS // 3)
    ledger = runtime.current().ledger
    rec = ledger.get(job.pipeline_id)
    changed = entry
    if case == "source":
        changed = replace(entry, source={**entry.source, "etag": "0" * 32})
    elif case == "part lost":
        env.s3.abort_multipart_upload(Bucket=env.bucket, Key=entry.key, UploadId=entry.upload_id)
    elif case == "part changed":
        env.s3.upload_part(
            Bucket=env.bucket,
            Key=entry.key,
            UploadId=entry.upload_id,
            PartNumber=1,
            Body=b"x" * PART,
        )
    elif case == "other run":
        changed = replace(entry, run_id=job.run_id + "-r1700000000abcd")
    elif case == "options":
        changed = replace(entry, options="another catalog entry")
    if changed is not entry:
        data_ = {**rec.data, commits.RESUME: changed.to_json()}
        assert ledger._put(job.pipeline_id, data_, if_match=rec.etag)
    model = env.use(Model())
    caplog.set_level(logging.INFO)
    result = score.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    assert why in caplog.text and "starting over" in caplog.text
    out, rejected = staged(env, result.result)
    assert out == want and rejected == want_rejected
    assert result.result["staging_key"] != entry.key
    assert model.rows == ROWS - BAD  # every row scored again
    assert entry.key not in uploads(env)  # the dead attempt's upload is aborted


def test_a_live_writers_upload_is_never_taken_over(env, caplog):
    data = body(seed=5)
    job = queued(env, "in/a.csv", data)
    entry = killed(env, job, after=ROWS // 3)
    ledger = runtime.current().ledger
    rec = ledger.get(job.pipeline_id)
    writers = {**rec.data["writers"], entry.key: time.time() + 600}  # alive after all
    assert ledger._put(job.pipeline_id, {**rec.data, "writers": writers}, if_match=rec.etag)
    env.use(Model())
    caplog.set_level(logging.INFO)
    result = score.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    assert "is alive" in caplog.text
    assert result.result["staging_key"] != entry.key
    assert entry.key in uploads(env)  # left alone


def test_a_retry_takes_the_upload_up_at_once(env, caplog):
    """A transient failure (the model went away) leaves the upload with its lease
    ended: the retry takes it up without waiting for it to expire."""
    from scorefleet.errors import ModelUnavailable

    data = body(seed=7)
    _, want, _ = undisturbed(env, data)
    job = queued(env, "in/a.csv", data)

    class Flaky(Model):
        def score(self, batch: Batch) -> Scores:
            if self.rows >= ROWS // 2:
                raise ModelUnavailable("the model went away")
            return super().score(batch)

    env.use(Flaky())
    env.first = True
    result = score.apply(args=[job.to_dict()])
    assert not result.successful()  # its retry is queued (no broker here: refused)
    ledger = runtime.current().ledger
    entry = commits.of(ledger.get(job.pipeline_id))
    assert entry is not None and ledger.writers(job.pipeline_id)[entry.key] == 0
    env.first = False
    model = env.use(Model())
    result = score.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    assert staged(env, result.result)[0] == want
    assert model.rows == ROWS - BAD - entry.rows


@pytest.mark.slow
def test_a_step_at_its_time_limit_hands_the_file_to_a_continuation(env, monkeypatch):
    """No 12-hour ceiling: at SCOREFLEET_MAX_STEP_SECONDS the step commits what it has
    written, bytes not in a part included, and sends itself again (same task, the
    rest of the chain after it); the continuations finish the file, as one output."""
    data = body(seed=9)
    _, want, want_rejected = undisturbed(env, data)
    monkeypatch.setenv("SCOREFLEET_MAX_STEP_SECONDS", "5")
    runtime.reset()
    monkeypatch.setattr(multipart, "PART_SIZE", PART)
    job = queued(env, "in/a.csv", data)
    sent: list[tuple[Any, dict[str, Any]]] = []

    def signature_from_request(self, request, args, **options):
        return SimpleNamespace(
            apply_async=lambda: sent.append((args, options)),
            apply=lambda **kw: SimpleNamespace(state="REQUEUED"),
        )

    monkeypatch.setattr(tasks.base.PipelineStep, "signature_from_request", signature_from_request)
    model = env.use(Model(delay=1.0))  # ~35 whole mini-batches, 2 in flight: ~17 s, 3 steps or more
    env.first = True
    message = job.to_dict()
    for steps in range(1, 10):
        result = score.apply(args=[message])
        if result.state == "SUCCESS":
            break
        assert result.state == "REQUEUED", getattr(result, "traceback", result)
        (args, options), *_ = sent[-1:]
        assert options["retries"] == 0 and options["delay_seconds"] <= 2
        message = args[0]
        assert message["handovers"] == steps
    assert result.successful(), result.traceback
    assert steps >= 3, "the file did not need three step-time limits"
    out, rejected = staged(env, result.result)
    assert out == want and rejected == want_rejected
    assert model.rows == ROWS - BAD  # nothing scored twice across the hand-overs
    rec = runtime.current().ledger.get(job.pipeline_id)
    entry = commits.of(rec)
    assert entry is not None and entry.handovers == steps - 1
    # scorefleet status: one file, with how many steps it took
    from scorefleet.runstatus import render, view

    shown = view(str(job.source), job.pipeline_id, rec.data)
    assert shown.continued == steps - 1 and shown.rows == ROWS - BAD
    assert f"continued   {steps - 1} time(s)" in render(shown)


@pytest.mark.parametrize(
    ("warm", "replicas"),
    [(False, 1), (True, 1), (False, 2)],
    ids=["model per file", "warm models", "two replicas"],
)
def test_a_resumed_step_whose_model_is_gone_starts_it_again(
    env, monkeypatch, tmp_path, caplog, warm, replicas
):
    """The real local backend and the fake model process: the worker dies mid-file
    and its model with it; the next delivery finds the model gone, starts one (or
    takes a warm one, or starts its replicas again) and goes on from the last
    committed part."""
    import psutil

    from tests.helpers import FAKEMODEL

    command = f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} --mode refuse"
    entry = {"command": command, "keep_columns": ["id"], "max_rejected_rows": "50"}
    if replicas > 1:  # (however small the file: min_mb_per_replica 0)
        entry.update(replicas=replicas, min_mb_per_replica=0)
    catalog = {"test/ok:1": entry}
    monkeypatch.setenv("SCOREFLEET_MODEL_CATALOG", json.dumps(catalog))
    if warm:
        monkeypatch.setenv("SCOREFLEET_WARM_IDLE_SECONDS", "60")
    runtime.reset()
    monkeypatch.setattr(tasks.score, "ready_client", real_ready_client)
    rt = runtime.current()
    data = body(seed=11)
    try:
        job = queued(env, "in/undisturbed.csv", data)
        job = launched_by(rt, job)
        env.first = True
        result = score.apply(args=[job.to_dict()])
        assert result.successful(), result.traceback
        want = staged(env, result.result)
        rt.backend.stop_all()

        job = launched_by(rt, queued(env, "in/a.csv", data))
        dying = Dies(after=ROWS // 2)
        monkeypatch.setattr(tasks.score, "ready_client", dying)
        with pytest.raises(Killed):
            score.apply(args=[job.to_dict()], throw=True)
        for pid in dying.models:  # the model dies with it (a pod on the same node)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        env.first = False
        entry = expire(env, job)
        monkeypatch.setattr(tasks.score, "ready_client", real_ready_client)
        caplog.set_level(logging.INFO)
        result = score.apply(args=[job.to_dict()])
        assert result.successful(), result.traceback
        assert result.result["staging_key"] == entry.key
        assert staged(env, result.result) == want
        assert "taking the file up at data row" in caplog.text
        if replicas > 1:
            assert f"scoring with {replicas} model replicas" in caplog.text
    finally:
        rt.backend.stop_all()  # type: ignore[attr-defined]


real_ready_client = tasks.score.ready_client


def launched_by(rt: Any, job: Job) -> Job:
    """``job`` as its launch step leaves it: the model started by the backend."""
    from tests.helpers import launched

    ep = rt.backend.launch(job, rt.settings.models.spec(job.model_image))
    return launched(job, ep.url, ep.handle)


class Dies:
    """``ready_client`` whose client dies (Killed) once it has scored ``after`` rows;
    remembers the models' pids."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.rows = 0
        self.models: list[int] = []

    def __call__(self, rt: Any, j: Job, spec: Any) -> tuple[Any, Job]:
        client, j = real_ready_client(rt, j, spec)
        handle = dict(j.model.handle or {})
        for one in [handle, *dict(handle.get("replicas") or {}).values()]:
            if one.get("pid"):
                self.models.append(int(one["pid"]))
        score_batch = client.score

        def score(batch: Batch) -> Scores:
            if self.rows >= self.after:
                raise Killed
            scores = score_batch(batch)
            self.rows += batch.rows
            return scores

        client.score = score
        return client, j
