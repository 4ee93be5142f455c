"""Issue 17: in warm mode the launch step hands its ready model to the warm pool at
once, and the score step takes one from it; no model sits idle, held for a file
whose score is still in the queue (with one model slot, a second file's launch used
to wait its turn in the queue, 2-6 s, behind a model doing nothing).

The real steps run in this process (``.apply()``) against moto with the local
backend and the fake model; a step that must wait its turn is caught where it would
go back to the queue (``signature_from_request``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.base
import tasks.score
from scorefleet.errors import AtCapacity
from tasks.launch import launch
from tasks.score import score
from tasks.upload import upload
from tests.helpers import make_job, queued_job
from workers import runtime
from workers.backends.local import warm as warm_pool
from workers.localstack.stack import emulator_client

SOURCE = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20))


@pytest.fixture
def sent(
    worker_env: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    """Warm mode with one model slot; the messages steps put back in the queue."""
    worker_env(SCOREFLEET_WARM_IDLE_SECONDS="60", SCOREFLEET_MAX_LIVE_MODELS="1")
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: True)
    requeued: list[tuple[Any, dict[str, Any]]] = []

    def signature_from_request(self: Any, request: Any, args: Any, **options: Any) -> Any:
        return SimpleNamespace(
            apply_async=lambda: requeued.append((args, options)),
            apply=lambda **kw: SimpleNamespace(state="REQUEUED"),
        )

    monkeypatch.setattr(tasks.base.PipelineStep, "signature_from_request", signature_from_request)
    yield requeued


def queued(bucket: str, key: str) -> dict[str, Any]:
    return queued_job(runtime.current(), bucket, key, SOURCE)


def run(step: Any, job: dict[str, Any]) -> dict[str, Any]:
    result = step.apply(args=[job])
    assert result.successful(), (result.state, result.traceback)
    return dict(result.result)


def model_pids(log: str) -> list[str]:
    return [line.split(" as pid ")[1].split()[0] for line in log.splitlines() if " as pid " in line]


def test_a_second_files_launch_does_not_wait_behind_a_model_doing_nothing(sent, bucket, caplog):
    caplog.set_level("INFO")
    a = run(launch, queued(bucket, "in/a.csv"))
    b = run(launch, queued(bucket, "in/b.csv"))  # one slot, a's score not run yet
    assert sent == [], "b's launch went back to the queue behind a's idle model"
    # the scores take the one model in turn, whichever file launched it
    b = run(score, b)
    a = run(score, a)
    for job in (a, b):
        assert run(upload, job)["published"].endswith(".scoreout")
    assert len(model_pids(caplog.text)) == 1, caplog.text  # one model served both


def test_a_score_that_waits_for_a_model_keeps_the_files_launch_time(sent, bucket, monkeypatch):
    """The family's other member: a score step going back to the queue for want of a
    model slot (its warm model taken by another file's score) used to lose the
    file's launch time (reset as for a launch), and with it the .scoreout's
    model-start-ms and the since-launch duration."""
    monkeypatch.setattr(warm_pool, "WARM_WAIT_SECONDS", 0.05)
    a = run(launch, queued(bucket, "in/a.csv"))
    assert a["launch_started_at"] and a["model_ready_at"]
    # another file's score holds the one model
    other = make_job("sf-000000000000000000ff", bucket)
    rt = runtime.current()
    rt.backend.launch(other, rt.settings.models.spec("test/ok:1"))
    result = score.apply(args=[a])
    assert result.state == "REQUEUED", result.traceback
    ((args, options),) = sent
    assert options["retries"] == 0  # a wait, not a retry
    assert args[0]["launch_started_at"] == a["launch_started_at"]
    assert args[0]["model_ready_at"] == a["model_ready_at"]


def chain_left(step: Any, job: dict[str, Any]) -> Any:
    """Run ``step`` as a worker does, with the rest of its chain (teardown) in its
    request: what is left of the chain afterwards (None: the chain ends there)."""
    step.push_request(chain=[{"task": "tasks.teardown"}], retries=0, id="t")
    try:
        step.run(job)
        return step.request.chain
    finally:
        step.pop_request()


@pytest.mark.parametrize("warm", [True, False])
def test_the_chain_ends_at_upload_when_nothing_is_left_to_tear_down(worker_env, bucket, warm):
    """Issue 17: in warm mode the score step parks the model, so the teardown step
    would only log: upload ends the chain (one queue hop fewer per file). With a
    model per file, teardown still runs (it stops the model)."""
    worker_env(SCOREFLEET_WARM_IDLE_SECONDS="60" if warm else "0")
    job = run(score, run(launch, queued(bucket, "in/a.csv")))
    assert job["released"] is warm
    left = chain_left(upload, job)
    assert (left is None) is warm, left
    assert emulator_client("s3", runtime.current().s3.meta.endpoint_url).head_object(
        Bucket=bucket, Key="out/a.csv.scoreout"
    )


def test_a_score_knows_a_warm_model_waits_for_it_from_its_launch_not_from_settings(
    worker_env, bucket, caplog
):
    """Issue 23: the score step takes a warm model because its launch left the model in
    the pool (the job says so), not because warm mode is on: in warm mode, a model the
    run kept (the pool was full) that died is started again, and the log says so."""
    worker_env(SCOREFLEET_WARM_IDLE_SECONDS="60")
    caplog.set_level("INFO")
    rt = runtime.current()
    rt.backend.park = lambda job: False  # type: ignore[method-assign]  # the pool is full
    kept = run(launch, queued(bucket, "in/a.csv"))
    assert kept["model_pooled"] is False and kept["handle"]["pid"]
    os.kill(kept["handle"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rt.backend.is_alive(make_job(kept["run_id"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    scored = run(score, kept)
    assert scored["rows"] == 20 and scored["handle"]["pid"] != kept["handle"]["pid"]
    assert "the model of this run is gone; starting it again" in caplog.text
    assert "taking a warm model" not in caplog.text
    # the score parked the model it started: the next file's launch finds it there
    del rt.backend.park  # the pool takes models again
    caplog.clear()
    pooled = run(launch, queued(bucket, "in/b.csv"))
    assert pooled["model_pooled"] is True
    assert run(score, pooled)["handle"]["pid"] == scored["handle"]["pid"]
    assert "taking a warm model of test/ok:1" in caplog.text
    assert "starting it again" not in caplog.text


def test_a_launch_that_waits_its_turn_keeps_its_claim_and_hands_back_its_lease(sent, bucket):
    """What the launch declares (its Step): waiting its turn, it goes back to the queue
    with the claim's owner (its next delivery is of the same launch), its lease handed
    back, and its model start timed from the delivery that starts the model."""
    rt = runtime.current()

    def no_room(job: Any, spec: Any) -> Any:
        raise AtCapacity("a model slot was taken meanwhile")

    rt.backend.launch = no_room  # type: ignore[method-assign]
    result = launch.apply(args=[queued(bucket, "in/a.csv")])
    assert result.state == "REQUEUED", result.traceback
    ((args, options),) = sent
    job = args[0]
    assert options["retries"] == 0  # a wait, not a retry
    assert job["claim_owner"] and job["claim_holder"] is None
    assert job["launch_started_at"] is None
    record = rt.ledger.get(job["pipeline_id"]).data
    assert record["owner"] == job["claim_owner"] and record["holder"] is None
