"""Shared fixtures: a moto server (real HTTP on 127.0.0.1) and the local stack,
for every kind of test below (unit/, integration/, e2e/, deploy/). Helpers that are
not fixtures live in :mod:`tests.helpers`.

Every process started here is stopped by its PID when the fixture ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import PLANTED_ENV_SECRETS, Outcomes, test_catalog
from workers.localstack import (
    LocalStack,
    emulator_client,
    free_port,
    start_moto,
    stop_process,
)


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
