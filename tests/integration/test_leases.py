"""Issue 10 item 6: a redelivery aborts only uploads whose writer's lease expired,
never a live writer's however long it has run; the heartbeat never asks SQS for
more than its 12 hours (a step that reaches SCOREFLEET_MAX_STEP_SECONDS hands its
file to a continuation of itself: tests/integration/test_resume.py). The real score
task runs in this process against moto and a fake model on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.base
import tasks.launch
import tasks.score
from scorefleet.job import pipeline_id
from scorefleet.settings import ModelSpec
from scorefleet.storage import s3io
from scorefleet.storage.ledger import staging_prefix
from tasks.launch import launch
from tasks.score import score
from tests.helpers import FAKEMODEL, base_env, launched, make_job
from workers import runtime
from workers.backends.base import Endpoint
from workers.localstack.stack import emulator_client
from workers.process import heartbeat

SOURCE = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(200))


def settle(monkeypatch, moto_endpoint, bucket, **extra):
    for name, value in base_env(moto_endpoint, bucket, **extra).items():
        monkeypatch.setenv(name, value)
    runtime.reset()


@pytest.fixture
def model(request, tmp_path, monkeypatch) -> Iterator[ModelSpec]:
    """The test model, started by the local backend in claimed_job: a step takes its
    model's URL from the backend's record of the run, never from the job."""
    args = " ".join(getattr(request, "param", ("--mode", "ok")))
    monkeypatch.setenv("SCOREFLEET_STATE_DIR", str(tmp_path / "state"))
    command = f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} {args}"
    yield ModelSpec(image="test/ok:1", extra={"command": command})
    runtime.current().backend.stop_all()  # type: ignore[attr-defined]


@pytest.fixture
def clean_caches() -> Iterator[None]:
    yield
    runtime.reset()


def claimed_job(s3: Any, bucket: str, spec: ModelSpec, body: bytes = SOURCE):
    """in/a.csv as its launch leaves it: claimed, its model started by the backend."""
    etag = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=body)["ETag"].strip('"')
    run_id = pipeline_id(bucket, "in/a.csv", None, etag)  # its own (scorefleet.vouch)
    job = make_job(run_id, bucket, etag=etag, size=len(body))
    assert runtime.current().ledger.claim(job, "launch-message", 300).value == "claimed"
    ep = runtime.current().backend.launch(job, spec)
    return launched(job, ep.url, ep.handle)


def uploads(s3: Any, bucket: str) -> set[str]:
    return {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


def test_a_redelivery_leaves_a_live_writers_upload_alone(
    monkeypatch, moto_endpoint, bucket, model, clean_caches
):
    """Reported: a live attempt that started more than one visibility timeout ago
    (its ChangeMessageVisibility failing for a while) lost its upload to the
    redelivery, and the file could end in .error although both were healthy."""
    settle(monkeypatch, moto_endpoint, bucket, SCOREFLEET_VISIBILITY_TIMEOUT="30")
    s3 = emulator_client("s3", moto_endpoint)
    job = claimed_job(s3, bucket, model)
    ledger, prefix = (
        runtime.current().ledger,
        staging_prefix(runtime.current().settings, job.run_id),
    )
    live, dead = prefix.join("live.scoreout.part"), prefix.join("dead.scoreout.part")
    ledger.register_writer(job, live.key, 3 * 3600)  # alive: its heartbeat renews this
    ledger.register_writer(job, dead.key, 3600)
    ids = {}
    for key in (live.key, dead.key):
        ids[key] = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    # the dead writer's lease ran out (its worker was killed)
    rec = ledger.get(job.pipeline_id)
    data = {**rec.data, "writers": {**rec.data["writers"], dead.key: time.time() - 1}}
    assert ledger._put(job.pipeline_id, data, if_match=rec.etag)
    # both uploads started long ago, as far as S3's clock says (an hour > 30 s)
    real = time.time
    monkeypatch.setattr(s3io, "time", SimpleNamespace(time=lambda: real() + 3600))
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: False)  # a redelivery

    result = score.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    left = uploads(s3, bucket)
    assert live.key in left, "the live writer's upload was aborted"
    assert dead.key not in left
    # and the live writer can still finish its upload
    part = s3.upload_part(
        Bucket=bucket, Key=live.key, UploadId=ids[live.key], PartNumber=1, Body=b"p\n1\n"
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=live.key,
        UploadId=ids[live.key],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    # the redelivered attempt's output fit in one PUT: it had no upload to register
    # (issue 17; an attempt that starts a multipart upload registers first:
    # test_s3_and_ledger.py::test_a_writer_is_registered_only_before_a_multipart_upload)
    assert result.result["staging_key"] not in ledger.writers(job.pipeline_id)


class Recorder:
    def __init__(self):
        self.calls = []

    def change_message_visibility(self, **kw):
        self.calls.append(kw)


def test_the_heartbeat_never_asks_past_12_hours(monkeypatch):
    sqs = Recorder()
    monkeypatch.setattr(heartbeat, "sqs_client", lambda region: sqs)
    request = SimpleNamespace(
        properties={"delivery_info": {"sqs_queue": "https://q"}, "delivery_tag": "r"}
    )
    hb = heartbeat.Heartbeat(
        job=make_job(), request=request, visibility_timeout=600, region="us-east-1", ledger=None
    )
    hb.beat()
    hb.started -= 43200 - 400  # 11 h 53 min 20 s after the message was received
    hb.beat()
    hb.started -= 400
    hb.beat()
    first, second = (c["VisibilityTimeout"] for c in sqs.calls)  # none asked past 12 h
    assert first == 600 and 330 <= second <= 340


def test_a_redelivered_launch_waits_for_the_live_lease_without_a_retry(
    monkeypatch, moto_endpoint, bucket, clean_caches, tmp_path
):
    """Issue 10's rule for uploads, for launches: a redelivery of the launch message
    whose first delivery still renews the run's lease neither claims the run nor
    starts a model; it goes back to the queue for as long as the lease has left,
    without costing a retry, and carries its launch's claim owner."""
    settle(
        monkeypatch,
        moto_endpoint,
        bucket,
        SCOREFLEET_VISIBILITY_TIMEOUT="30",
        SCOREFLEET_STATE_DIR=str(tmp_path / "state"),
    )
    s3 = emulator_client("s3", moto_endpoint)
    etag = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=SOURCE)["ETag"].strip('"')
    job = make_job(pipeline_id(bucket, "in/a.csv", None, etag), bucket, etag=etag)
    ledger = runtime.current().ledger
    assert ledger.claim(job, "launch-message", 30).value == "claimed"  # the first delivery
    first = ledger.get(job.pipeline_id).data.get("holder")

    monkeypatch.setattr(tasks.launch, "delivery_id", lambda task: "launch-message")  # redelivered
    started = []
    model = Endpoint(url="http://127.0.0.1:9", handle={})
    monkeypatch.setattr(
        runtime.current().backend, "launch", lambda j, spec: started.append(j) or model
    )
    sent = []

    def signature_from_request(self, request, args, **options):
        # the message put back in the queue (apply: what an eager run does with it)
        requeued = SimpleNamespace(state="REQUEUED")
        return SimpleNamespace(
            apply_async=lambda: sent.append((args, options)), apply=lambda **kw: requeued
        )

    monkeypatch.setattr(tasks.base.PipelineStep, "signature_from_request", signature_from_request)
    result = launch.apply(args=[job.to_dict()])
    assert started == [], "the redelivery started a second model"
    assert result.state == "REQUEUED", result.traceback
    ((args, options),) = sent
    assert options["retries"] == 0  # no retry spent
    assert 28 <= options["delay_seconds"] <= 34  # what the lease has left, and a little
    assert args[0]["claim_owner"] == "launch-message"
    assert ledger.get(job.pipeline_id).data["holder"] == first

    # once the first delivery's lease has expired, the next delivery takes over
    rec = ledger.get(job.pipeline_id)
    assert ledger._put(job.pipeline_id, {**rec.data, "lease_until": 1}, if_match=rec.etag)
    monkeypatch.setattr(
        tasks.launch, "look", lambda *a, **kw: SimpleNamespace(error=None, head=None)
    )
    result = launch.apply(args=args)
    assert result.successful(), result.traceback
    assert len(started) == 1 and len(sent) == 1
    assert ledger.get(job.pipeline_id).data["holder"] not in (None, first)


def test_a_launch_does_not_renew_a_lease_before_it_holds_the_claim(
    monkeypatch, moto_endpoint, bucket, clean_caches, tmp_path
):
    """Found by a CI chaos run (a file lost, no outcome): a launch whose claim was slow
    (S3 answering 503 for a few seconds) had its heartbeat renew the run's lease
    before it held the claim, that is the lease of the delivery that had died. The
    claim then saw a live lease held by someone else and dropped the chain; every
    later delivery the same. Its heartbeat renews nothing until its own claim."""
    settle(
        monkeypatch,
        moto_endpoint,
        bucket,
        SCOREFLEET_VISIBILITY_TIMEOUT="5",  # a beat every 1.7 s
        SCOREFLEET_STATE_DIR=str(tmp_path / "state"),
    )
    s3 = emulator_client("s3", moto_endpoint)
    etag = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=SOURCE)["ETag"].strip('"')
    job = make_job(pipeline_id(bucket, "in/a.csv", None, etag), bucket, etag=etag)
    ledger = runtime.current().ledger
    # a delivery that claimed the file and died: its lease has just run out
    assert ledger.claim(job, "dead-delivery", 0.5, holder="dead").value == "claimed"
    time.sleep(0.6)

    slow = {"reads": 0}
    get = type(ledger).get

    def slow_get(self, pid):
        slow["reads"] += 1
        if slow["reads"] == 1:
            time.sleep(2.5)  # the claim's first read waits out S3's bad seconds
        return get(self, pid)

    monkeypatch.setattr(type(ledger), "get", slow_get)
    monkeypatch.setattr(tasks.launch, "delivery_id", lambda task: "another-delivery")
    started = []
    model = Endpoint(url="http://127.0.0.1:9", handle={})
    monkeypatch.setattr(
        runtime.current().backend, "launch", lambda j, spec: started.append(j) or model
    )
    monkeypatch.setattr(
        tasks.launch, "look", lambda *a, **kw: SimpleNamespace(error=None, head=None)
    )
    sent = []

    def signature_from_request(self, request, args, **options):
        return SimpleNamespace(
            apply_async=lambda: sent.append((args, options)),
            apply=lambda **kw: SimpleNamespace(state="REQUEUED"),
        )

    monkeypatch.setattr(tasks.base.PipelineStep, "signature_from_request", signature_from_request)
    result = launch.apply(args=[job.to_dict()])
    assert result.successful(), (result.state, result.traceback, sent)
    assert result.result.get("skipped") is None, result.result
    assert len(started) == 1, "the file was dropped: the claim saw the lease it had renewed"
    assert ledger.get(job.pipeline_id).data["owner"] == "another-delivery"


def test_a_heartbeat_renews_only_the_claim_its_chain_holds(moto_endpoint, bucket, monkeypatch):
    from scorefleet.settings import load
    from scorefleet.storage.ledger import Ledger

    ledger = Ledger(load(base_env(moto_endpoint, bucket)), emulator_client("s3", moto_endpoint))
    etag = (
        emulator_client("s3", moto_endpoint)
        .put_object(Bucket=bucket, Key="in/b.csv", Body=SOURCE)["ETag"]
        .strip('"')
    )
    job = make_job(pipeline_id(bucket, "in/b.csv", None, etag), bucket, etag=etag)
    assert ledger.claim(job, "launch-1", 60, holder="h1").value == "claimed"
    lease = lambda: ledger.get(job.pipeline_id).data["lease_until"]  # noqa: E731
    before = lease()

    job = job.claimed("launch-2")  # another chain's step
    assert not ledger.renew(job, 600)
    assert not ledger.renew(job, 600, writer="staging/x")
    job = job.claimed("launch-1", "h2")  # another delivery of the launch
    assert not ledger.renew(job, 600)
    assert lease() == before, "a lease was renewed by a step whose chain does not hold it"

    job = job.claimed("launch-1", "h1")  # the launch that holds it
    assert ledger.renew(job, 600)
    job = job.claimed("launch-1")  # a later step of its chain
    assert ledger.renew(job, 900, writer="staging/y")
    assert lease() > before + 800

    def beating(step: tasks.base.Step) -> heartbeat.Heartbeat:
        return heartbeat.Heartbeat(
            job=job,
            request=None,
            visibility_timeout=60,
            region="us-east-1",
            ledger=ledger,
            step=step.name,
            claims=step.claims,
        )

    hb = beating(tasks.launch.LAUNCH)
    assert not hb.holds_claim  # a launch before its own claim renews nothing
    renewed = lease()
    hb.beat()
    assert lease() == renewed
    hb.advance(job.claimed("launch-1", "h1"))  # its own claim made
    assert hb.holds_claim
    hb.beat()
    assert lease() < renewed  # renewed, for the heartbeat's 60 s
    assert beating(tasks.score.SCORE).holds_claim  # a later step: its chain's claim
