"""A failure's text and the model's log lines are masked where the failure is
recorded, not only in the ``.error``: the failure rides on in the failure tail's
task messages (SQS bodies; Flower shows a task's arguments and result), so a
credential a model printed must not travel there in the clear.

The real steps run in this process (``.apply()``) against moto.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.base
from scorefleet.errors import ModelError
from scorefleet.job import Failure
from tasks.launch import launch
from tasks.upload import upload
from tests.helpers import queued_job
from workers import runtime
from workers.localstack.stack import emulator_client

SECRETS = ("hunter2hunter2", "eyJhbGciOiJIUzI1NiJ9abcdefgh")
SAID = f"db password={SECRETS[0]}; Authorization: Bearer {SECRETS[1]}"


@pytest.fixture
def env(worker_env: Any) -> None:
    worker_env()


def queued(bucket: str) -> dict[str, Any]:
    return queued_job(runtime.current(), bucket, "in/a.csv", b"a,b\n1,2\n")


def test_a_failed_launch_sends_its_failure_on_masked(env, bucket, monkeypatch):
    def refuse(job: Any, spec: Any) -> Any:
        raise ModelError(f"the model said: {SAID}", model_logs=f"starting\n{SAID}\n")

    monkeypatch.setattr(runtime.current().backend, "launch", refuse)
    tails: list[Any] = []
    monkeypatch.setattr(
        tasks.base,
        "failure_tail",
        lambda j, step, app=None: SimpleNamespace(apply_async=lambda: tails.append(j.to_dict())),
    )
    result = launch.apply(args=[queued(bucket)])
    assert not result.successful()
    (sent,) = tails
    text = json.dumps(sent)
    assert "the model said" in text and "starting" in text  # the failure is there ...
    assert not [s for s in SECRETS if s in text], text  # ... masked
    assert not [s for s in SECRETS if s in str(result.result)]


def test_the_model_logs_upload_reads_travel_on_masked(env, bucket, monkeypatch):
    """The upload of a failure without log lines reads them from the backend; the job
    it hands to teardown carries them masked."""
    job = queued(bucket)
    job["failure"] = Failure(step="score", kind="ModelError", message="it broke").__dict__
    monkeypatch.setattr(runtime.current().backend, "logs", lambda j, lines: f"boom\n{SAID}\n")
    result = upload.apply(args=[job])
    assert result.successful(), result.traceback
    text = json.dumps(result.result)
    assert "boom" in text and not [s for s in SECRETS if s in text], text
    s3 = emulator_client("s3", runtime.current().s3.meta.endpoint_url)
    error = s3.get_object(Bucket=bucket, Key="out/a.csv.error")["Body"].read().decode()
    assert "boom" in error and not [s for s in SECRETS if s in error], error
