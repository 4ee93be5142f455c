"""Shared fixtures: a moto server (real HTTP on 127.0.0.1) and the local stack,
for every kind of test below (unit/, integration/, e2e/, deploy/). Helpers that are
not fixtures live in :mod:`tests.helpers`.

Every process started here is stopped by its PID when the fixture ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PLANTED_ENV_SECRETS, Outcomes, base_env, test_catalog
from workers import runtime
from workers.localstack.stack import (
    LocalStack,
    emulator_client,
    free_port,
    start_moto,
    stop_process,
)
from workers.runtime import WorkerRuntime


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


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """An S3 client of the emulator."""
    return emulator_client("s3", moto_endpoint)


@pytest.fixture
def worker_env(
    moto_endpoint: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., WorkerRuntime]]:
    """This process as a worker on ``bucket``, for steps run with ``.apply()``:
    ``worker_env(**variables)`` sets the environment (the test models' catalog, a
    state directory of the test's own, and the variables given) and returns the
    runtime built from it. The models its backend started are stopped at the end."""
    made: list[WorkerRuntime] = []

    def settle(catalog: dict[str, Any] | None = None, **extra: str) -> WorkerRuntime:
        """``catalog``: entries added to the test models'."""
        values = base_env(
            moto_endpoint,
            bucket,
            SCOREFLEET_STATE_DIR=str(tmp_path / "state"),
            SCOREFLEET_MODEL_CATALOG=json.dumps({**test_catalog(), **(catalog or {})}),
            **extra,
        )
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        made.append(runtime.current())
        return made[-1]

    yield settle
    for rt in made:
        stop_all = getattr(rt.backend, "stop_all", None)
        if stop_all is not None:
            stop_all()
    runtime.reset()


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
            # in an .error file or a log line (tests/e2e/test_bad_input_corpus.py)
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


@pytest.fixture(scope="session")
def outcomes(stack: LocalStack) -> Outcomes:
    return Outcomes(stack)
