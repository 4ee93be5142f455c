"""Red-team probes: crafted task messages, as anyone who can send to the task queue
(`celery call`, Flower's task API, a local process on the local stack) could send them.

Each probe runs the real step in this process (``.apply()``) against moto, with a
listener of the "attacker" on 127.0.0.1, and checks what the worker did: it must not
stream a file to an endpoint the message names, read outside the input prefix, copy
or delete objects the message points at, or remove a directory the message names.
A refused message fails its step with a clear error and nothing else happens (no
.error, no teardown: they would act on the same fields).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scorefleet.job import pipeline_id
from tasks.launch import launch
from tasks.score import score
from tasks.teardown import teardown
from tasks.upload import upload
from tests import helpers
from tests.helpers import base_env, make_job
from workers import runtime
from workers.localstack.stack import emulator_client

SECRET = b"ssn,salary\n123-45-6789,250000\n"
SOURCE = b"a,b\n1,2\n3,4\n"


class Listener:
    """An HTTP server of the attacker's: answers like a model and keeps what it got."""

    def __init__(self) -> None:
        received: list[bytes] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(body)
                rows = [r for r in body.splitlines()[1:] if r]
                answer = b"".join(b"0\n" for _ in rows)
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def got_anything(self) -> bool:
        return bool(self.received)


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as lst:
        yield lst


@pytest.fixture
def env(
    moto_endpoint: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    values = base_env(
        moto_endpoint,
        bucket,
        SCOREFLEET_STATE_DIR=str(tmp_path / "state"),
        SCOREFLEET_MODEL_CATALOG=json.dumps(helpers.test_catalog()),
        SCOREFLEET_RETRY_MAX="0",
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield values
    runtime.current().backend.stop_all()  # type: ignore[attr-defined]
    runtime.reset()


@pytest.fixture
def s3(moto_endpoint: str, bucket: str) -> Any:
    client = emulator_client("s3", moto_endpoint)
    client.put_object(Bucket=bucket, Key="private/salaries.csv", Body=SECRET)
    return client


def real_job(s3: Any, bucket: str, key: str = "in/a.csv", **fields: Any) -> dict[str, Any]:
    """A job exactly as the Lambda makes it for a file under the input prefix."""
    etag = s3.put_object(Bucket=bucket, Key=key, Body=SOURCE)["ETag"].strip('"')
    pid = pipeline_id(bucket, key, None, etag)
    return make_job(pid, bucket, key=key, etag=etag, **fields).to_dict()


def forged_job(s3: Any, bucket: str, key: str, **fields: Any) -> dict[str, Any]:
    """A job for ``key`` (anywhere), with a pipeline id made the way the Lambda would."""
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    pid = pipeline_id(bucket, key, None, etag)
    return make_job(pid, bucket, key=key, etag=etag, **fields).to_dict()


def refused(result: Any) -> str:
    """The step failed, with a message saying why it refused."""
    assert result.failed(), f"the step ran: {result.result!r}"
    return f"{type(result.result).__name__}: {result.result}"


def outputs(s3: Any, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])
    return [o["Key"] for o in listed]


# ------------------------------------------------------------- tasks.score
def test_score_never_streams_to_an_endpoint_named_in_the_message(env, s3, bucket, listener):
    """The file is under the input prefix and its identity is right; only the endpoint
    is the attacker's. The worker scores it with the model the backend started for
    this run, and the listener gets nothing."""
    job = real_job(s3, bucket, endpoint=listener.url, handle={"pid": 1, "port": 1})
    result = score.apply(args=[job])
    assert result.successful(), result.traceback
    assert not listener.got_anything
    assert result.result["rows"] == 2 and result.result["endpoint"] != listener.url
    assert runtime.current().backend.teardown(make_job(job["run_id"]))  # our own model ran it


def test_score_refuses_a_source_outside_the_input_prefix(env, s3, bucket, listener):
    job = forged_job(s3, bucket, "private/salaries.csv", endpoint=listener.url)
    result = score.apply(args=[job])
    assert SECRET not in b"".join(listener.received)
    assert "not a file under the input location" in refused(result)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"pipeline_id": "sf-" + "0" * 20, "run_id": "sf-" + "0" * 20}, "is not the one of"),
        ({"run_id": "sf-" + "1" * 20}, "is not a run of pipeline"),
        ({"run_id": "x"}, "is not one scorefleet makes"),
        ({"key": "out/a.csv.scoreout"}, "is not a file under the input location"),
        ({"bucket": "someone-elses-bucket"}, "is not a file under the input location"),
        ({"staging_key": "private/salaries.csv"}, "is not one of run"),
        ({"handle": "not an object"}, "handle is not an object"),
    ],
)
@pytest.mark.parametrize("step", ["launch", "score", "upload", "teardown"])
def test_every_step_refuses_what_it_cannot_vouch_for(
    env, s3, bucket, listener, step, change, needle
):
    job = {**real_job(s3, bucket, endpoint=listener.url), **change}
    if "key" in change or "bucket" in change:  # keep the pipeline id the one of that file
        job["pipeline_id"] = job["run_id"] = pipeline_id(
            job["bucket"], job["key"], None, job["etag"]
        )
    result = {"launch": launch, "score": score, "upload": upload, "teardown": teardown}[step].apply(
        args=[job]
    )
    assert not listener.got_anything
    assert outputs(s3, bucket) == []  # no .error either: it would name the forged file
    records = s3.list_objects_v2(Bucket=bucket, Prefix="scorefleet-state/").get("Contents", [])
    assert records == []  # nothing claimed, nothing staged
    why = refused(result)
    assert needle in why, why


# ------------------------------------------------------------ tasks.upload
def test_upload_never_publishes_or_deletes_an_object_the_message_points_at(env, s3, bucket):
    """staging_key is copied to the .scoreout: a crafted one would publish any object
    of the state bucket (here the output bucket, which also holds private/)."""
    job = real_job(s3, bucket, staging_key="private/salaries.csv", rows=1)
    result = upload.apply(args=[job])
    assert outputs(s3, bucket) == []
    assert s3.get_object(Bucket=bucket, Key="private/salaries.csv")["Body"].read() == SECRET
    assert "is not one of run" in refused(result)


# ---------------------------------------------------------- tasks.teardown
@pytest.mark.parametrize("run_id", ["{victim}", "../../victim", "sf-00000000000000000001/../.."])
def test_teardown_never_removes_a_directory_named_in_the_message(env, s3, bucket, tmp_path, run_id):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (tmp_path / "state" / "local").mkdir(parents=True)  # the backend's root, as in use
    job = {**real_job(s3, bucket), "run_id": run_id.format(victim=victim)}
    result = teardown.apply(args=[job])
    assert (victim / "precious.txt").read_text() == "keep me"
    assert "is not one scorefleet makes" in refused(result)


def test_the_local_backend_itself_refuses_a_path_for_a_run_id(env, tmp_path):
    """Defence in depth: the backend does not rely on the step's check."""
    victim = tmp_path / "victim"
    victim.mkdir()
    backend = runtime.current().backend
    with pytest.raises(Exception, match="is not one scorefleet makes"):
        backend.teardown(make_job(str(victim)))
    with pytest.raises(Exception, match="is not one scorefleet makes"):
        backend.logs(make_job("../victim"), 10)
    assert victim.is_dir()


# ------------------------------------------------------ images by digest only
def test_with_digests_required_the_worker_refuses_a_tag_the_lambda_let_through(
    env, s3, bucket, monkeypatch
):
    """A message sent by a Lambda (or `celery call`) that does not require digests: the
    worker's own setting stops the launch before any model starts, and the failure the
    .error is made of says how to find the tag's digest."""
    import tasks.base

    monkeypatch.setenv("SCOREFLEET_REQUIRE_IMAGE_DIGEST", "true")
    monkeypatch.setenv("SCOREFLEET_DEFAULT_MODEL_IMAGE", "test/ok@sha256:" + "ab" * 32)
    runtime.reset()
    launched: list[Any] = []
    monkeypatch.setattr(runtime.current().backend, "launch", lambda *a: launched.append(a))
    tails: list[Any] = []
    monkeypatch.setattr(
        tasks.base,
        "failure_tail",
        lambda j, step, app=None: SimpleNamespace(apply_async=lambda: tails.append(j)),
    )
    result = launch.apply(args=[real_job(s3, bucket, model_image="test/ok:1")])
    assert not result.successful() and launched == []
    (job,) = tails
    assert job.failure.kind == "Rejected" and job.failure.step == "launch"
    assert "'test/ok:1' is not pinned by digest" in job.failure.message
    assert "`crane digest test/ok:1`" in job.failure.message
