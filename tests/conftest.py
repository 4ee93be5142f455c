"""Shared fixtures: a moto server (real HTTP on 127.0.0.1) and the local stack.

Every process started here is stopped by its PID when the fixture ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scorefleet.job import Job
from workers.localstack import (
    BUCKET,
    CREDENTIALS,
    LocalStack,
    emulator_client,
    free_port,
    iris_catalog,
    start_moto,
    stop_process,
)

TESTS = Path(__file__).resolve().parent
PLANTED_ENV_SECRETS = ("planted-db-password-9431", "planted-api-token-7719")
FAKEMODEL = TESTS / "fakemodel.py"


def installed_tool(name: str) -> str | None:
    """A command-line tool on PATH or in this interpreter's bin directory (a wheel of
    the dev extra installs it there; `make test` runs the venv's pytest without
    activating the venv)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def make_job(run_id: str = "sf-00000000000000000001", bucket: str = "b", **fields: Any) -> Job:
    """A job for unit tests (pipeline id = the first 23 characters of the run id)."""
    values: dict[str, Any] = {
        "pipeline_id": run_id[:23],
        "run_id": run_id,
        "bucket": bucket,
        "key": "in/a.csv",
        "version_id": None,
        "etag": "e",
        "size": 1,
        "sequencer": None,
        "model_image": "test/ok:1",
        "k8s_cluster": "c",
        "k8s_namespace": "n",
    }
    values.update(fields)
    return Job(**values)


def fake(mode: str, *extra: str) -> dict[str, Any]:
    args = " ".join(extra)
    return {"command": f"{{python}} {FAKEMODEL} --port {{port}} --mode {mode} {args}".strip()}


def test_catalog() -> dict[str, Any]:
    catalog = dict(iris_catalog())
    catalog.update(
        {
            "test/ok:1": fake("ok"),
            "test/json:1": fake("json"),
            "test/crash:1": fake("crash"),
            "test/flaky:1": fake("fail-once"),
            # 3 failures exhaust the client's 3 attempts: the score task itself retries
            "test/flaky-task:1": fake("fail-n", "--fails", "3"),
            "test/always-500:1": fake("fail-n", "--fails", "1000"),
            "test/few-rows:1": fake("few-rows"),
            "test/never-ready:1": {**fake("never-ready"), "launch_timeout": 4},
            "test/slow:1": fake("slow", "--delay", "0.5"),
            "test/hash:1": fake("hash"),
            "test/leaky:1": fake("leak400"),
        }
    )
    return catalog


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bare moto server for tests that provision what they need themselves."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = start_moto(port, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, grace=5)


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A fresh, empty bucket on the shared moto server."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    emulator_client("s3", moto_endpoint).create_bucket(Bucket=name)
    return name


def base_env(moto_endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    """A valid scorefleet environment pointing at ``bucket`` on moto."""
    port = moto_endpoint.rsplit(":", 1)[1]
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "SCOREFLEET_INPUT_URI": f"s3://{bucket}/in/",
        "SCOREFLEET_OUTPUT_URI": f"s3://{bucket}/out/",
        "SCOREFLEET_BROKER_URL": f"sqs://testing:testing@127.0.0.1:{port}",
        "SCOREFLEET_BROKER_TLS": "false",
        "SCOREFLEET_QUEUE": f"q-{bucket}",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,test/",
        "SCOREFLEET_DEFAULT_MODEL_IMAGE": "test/ok:1",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The embedded local stack (moto, bridge, one worker) with the test models."""
    state = tmp_path_factory.mktemp("stack")
    st = LocalStack(
        state,
        workers=1,
        concurrency=6,
        flower=False,
        catalog=test_catalog(),
        extra_env={
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,test/",
            "SCOREFLEET_LAUNCH_TIMEOUT": "60",
            "SCOREFLEET_RETRY_BACKOFF": "1",
            "SCOREFLEET_RETRY_BACKOFF_MAX": "2",
            "SCOREFLEET_RETRY_MAX": "2",
            "SCOREFLEET_MAX_PAYLOAD_MB": "0.05",
            "SCOREFLEET_K8S_NAMESPACES": "scoring,team-a",
            "FAKEMODEL_SECRET": "sekr1t-planted-value",
            # credentials planted in the workers' environment: they must never show up
            # in an .error file or a log line (tests/test_bad_input_corpus.py)
            "DB_PASSWORD": PLANTED_ENV_SECRETS[0],
            "API_TOKEN": PLANTED_ENV_SECRETS[1],
        },
    )
    st.start()
    try:
        st.wait_worker_ready()
        yield st
    finally:
        st.stop()


class Outcomes:
    """Helpers to drop files into the stack and wait for what comes out."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.s3 = emulator_client("s3", stack.endpoint)

    def put(self, key: str, body: bytes, tags: dict[str, str] | None = None) -> float:
        from scorefleet.storage.s3io import encode_tags

        extra = {"Tagging": encode_tags(tags)} if tags else {}
        self.s3.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=body, **extra)
        return time.time()

    def wait(self, key: str, timeout: float = 60) -> tuple[str, bytes, dict[str, str]]:
        """(suffix, body, tags) of the first outcome of in/<key>."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for suffix in (".scoreout", ".error"):
                try:
                    obj = self.s3.get_object(Bucket=BUCKET, Key=f"out/{key}{suffix}")
                except self.s3.exceptions.NoSuchKey:
                    continue
                tags = self.s3.get_object_tagging(Bucket=BUCKET, Key=f"out/{key}{suffix}")
                return suffix, obj["Body"].read(), {t["Key"]: t["Value"] for t in tags["TagSet"]}
            time.sleep(0.1)
        logs = (self.stack.state_dir / "logs" / "worker0.log").read_text()[-4000:]
        raise AssertionError(f"no outcome for in/{key} after {timeout}s; worker log tail:\n{logs}")

    def versions(self, key: str) -> int:
        resp = self.s3.list_object_versions(Bucket=BUCKET, Prefix=f"out/{key}")
        return len([v for v in resp.get("Versions", []) if v["Key"] == f"out/{key}"])


@pytest.fixture(scope="session")
def outcomes(stack: LocalStack) -> Outcomes:
    return Outcomes(stack)


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def dumps(obj: Any) -> str:
    return json.dumps(obj)
