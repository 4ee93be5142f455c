"""Issue 25: a Lambda image's handler runs as in its image -- under ``awslambdaric``,
AWS's runtime client, behind the Runtime API served by scorefleet's stand-in for the
emulator (workers/localstack/lambda_emulator.py) -- and the ``lambda`` protocol
scores through it. Each test starts the emulator as a real process on a free
loopback port and stops it by its PID."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import urllib3

from scorefleet.errors import ModelUnavailable, RowsRefused
from scorefleet.settings import ModelSpec
from tests.helpers import REPO
from workers.localstack.stack import free_port
from workers.scoring.batches import Batch
from workers.scoring.protocols import CallLimits, open_protocol
from workers.scoring.protocols.aws_lambda import INVOKE_PATH

HANDLERS = """
import json, os, sys, time

LOADED_AT = time.time()  # init: once per runtime


def echo(event, context):
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "handler": os.environ["_HANDLER"],
        "pid": os.getpid(),
    }


def raises(event, context):
    raise ValueError(f"feature x: {event.get('x')!r} is not a number")


def slow(event, context):
    time.sleep(float(event.get("sleep", 0.2)))
    return {"slept": event.get("sleep", 0.2), "loaded_at": LOADED_AT}


def dies(event, context):
    if event.get("die"):
        os._exit(3)
    return {"pid": os.getpid()}


def score(event, context):
    body = json.loads(event["body"])
    if body.get("a") == "BAD":
        raise ValueError("a is BAD")
    return {"statusCode": 200, "body": json.dumps({"prediction": {"sum": body["a"] + body["b"]}})}
"""


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("task")
    (root / "app.py").write_text(textwrap.dedent(HANDLERS))
    (root / "broken.py").write_text("import no_such_module_here\n")
    return root


@contextmanager
def emulator(task_root: Path, handler: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    log = task_root / f"{handler}-{port}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.localstack.lambda_emulator",
            handler,
            "--path",
            str(task_root),
            "--port",
            str(port),
        ],
        cwd=REPO,
        env={**base_environ(), **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib3.request("GET", url, timeout=1, retries=False)
                break
            except urllib3.exceptions.HTTPError:
                time.sleep(0.05)
        proc.log = log  # type: ignore[attr-defined]
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def base_environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCOREFLEET_"))}


def invoke(url: str, event: object) -> urllib3.BaseHTTPResponse:
    return urllib3.request("POST", url + INVOKE_PATH, body=json.dumps(event).encode(), timeout=30)


def test_the_handler_runs_under_awslambdaric_with_the_runtimes_context(task_root):
    with emulator(task_root, "app.echo") as (url, proc):
        first, second = invoke(url, {"n": 1}), invoke(url, {"n": 2})
    a, b = first.json(), second.json()
    assert first.status == 200 and "X-Amz-Function-Error" not in first.headers
    assert a["event"] == {"n": 1} and b["event"] == {"n": 2}
    assert a["request_id"] != b["request_id"] and a["pid"] == b["pid"]  # one runtime
    assert a["function_name"] == "function" and a["memory"] == "3008"
    assert 290_000 < a["remaining_ms"] <= 300_000  # the deadline the Runtime API gave
    assert a["task_root"] == str(task_root) and a["handler"] == "app.echo"
    assert a["pid"] != proc.pid  # the runtime is a process of its own


def test_a_handler_that_raises_answers_the_runtimes_error_document(task_root):
    with emulator(task_root, "app.raises") as (url, _proc):
        r = invoke(url, {"x": "abc"})
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled"
    doc = r.json()
    assert doc["errorType"] == "ValueError"
    assert doc["errorMessage"] == "feature x: 'abc' is not a number"
    assert any("raises" in line for line in doc["stackTrace"])  # the runtime's own trace


def test_an_init_error_ends_the_emulator_with_the_runtimes_message(task_root):
    with emulator(task_root, "broken.handler") as (_url, proc):
        assert proc.wait(30) == 1
        log = proc.log.read_text()  # type: ignore[attr-defined]
    assert "Runtime.ImportModuleError" in log and "no_such_module_here" in log


def test_one_invocation_at_a_time(task_root):
    with emulator(task_root, "app.slow") as (url, _proc):
        invoke(url, {"sleep": 0})  # warm
        t0 = time.monotonic()
        threads = [threading.Thread(target=invoke, args=(url, {"sleep": 0.3})) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - t0 >= 0.85  # three in turn, not side by side


def test_a_timeout_or_a_runtime_that_dies_fails_one_invocation_and_the_next_runs(task_root):
    with emulator(task_root, "app.slow", AWS_LAMBDA_FUNCTION_TIMEOUT="1") as (url, _proc):
        before = invoke(url, {"sleep": 0}).json()["loaded_at"]
        late = invoke(url, {"sleep": 3})
        assert late.headers["X-Amz-Function-Error"] == "Unhandled"
        assert late.json()["errorType"] == "Sandbox.Timedout"
        after = invoke(url, {"sleep": 0}).json()["loaded_at"]
        assert after > before  # a new runtime, initialised again
    with emulator(task_root, "app.dies") as (url, _proc):
        pid = invoke(url, {}).json()["pid"]
        dead = invoke(url, {"die": True})
        assert dead.json()["errorType"] == "Runtime.ExitError"
        assert invoke(url, {}).json()["pid"] != pid


def test_the_lambda_protocol_scores_through_it(task_root):
    spec = ModelSpec(
        image="test/lambda:1",
        protocol="lambda",
        extra={"lambda": {"response": "prediction"}},
    )
    with emulator(task_root, "app.score") as (url, _proc):
        client = open_protocol(url, spec, CallLimits(timeout=30, pool_size=4))
        try:
            assert client.ready(5)
            batch = Batch(1, 3, "data rows 1-3", ("a", "b"), csv=b"1,2\n3,4\n5,6\n")
            scores = client.score(batch)
            assert scores.as_csv() == b"3\n7\n11\n" and scores.header == ("sum",)
            bad = Batch(4, 1, "data row 4", ("a", "b"), csv=b"BAD,4\n")
            with pytest.raises(RowsRefused, match="the handler raised ValueError for data row 4"):
                client.score(bad)
        finally:
            client.close()


def test_a_stopped_emulator_is_unavailable_not_refused(task_root):
    spec = ModelSpec(image="test/lambda:1", protocol="lambda", extra={})
    with emulator(task_root, "app.score") as (url, proc):
        proc.terminate()
        proc.wait(10)
        client = open_protocol(url, spec, CallLimits(timeout=5, pool_size=1, attempts=1))
        try:
            with pytest.raises(ModelUnavailable):
                client.score(Batch(1, 1, "data row 1", ("a", "b"), csv=b"1,2\n"))
        finally:
            client.close()
