"""Flower's authentication guard and defaults (workers.flowerconf)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tasks.settings import load
from tests.conftest import base_env
from workers import flowerconf


def options(**values):
    base = {
        "basic_auth": None,
        "auth": "",
        "address": "",
        "unix_socket": "",
        "enable_events": True,
        "tasks_columns": "name,uuid,state,received,runtime,worker",
        "inspect_timeout": 1000.0,
        "purge_offline_workers": None,
    }
    base.update(values)
    return SimpleNamespace(**base)


@pytest.fixture
def settings(moto_endpoint, bucket):
    return load(base_env(moto_endpoint, bucket))


@pytest.fixture
def local_settings(moto_endpoint, bucket):
    return load(base_env(moto_endpoint, bucket, SCOREFLEET_FLOWER_UNAUTHENTICATED="true"))


def test_refuses_to_start_without_authentication(settings):
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH"):
        flowerconf.check_auth(options(address="127.0.0.1"), settings)


def test_basic_auth_from_the_environment(settings):
    assert flowerconf.check_auth(options(basic_auth=["ops:correct-horse-battery"]), settings) == (
        "basic"
    )
    with pytest.raises(SystemExit, match="shorter than 12"):
        flowerconf.check_auth(options(basic_auth=["ops:short"]), settings)
    with pytest.raises(SystemExit, match="user:password"):
        flowerconf.check_auth(options(basic_auth=["no-colon-here"]), settings)
    assert flowerconf.check_auth(options(auth=".*@example.com"), settings) == "oauth"


def test_unauthenticated_only_when_explicitly_local_and_on_loopback(local_settings):
    assert flowerconf.check_auth(options(address="127.0.0.1"), local_settings) == "none (local)"
    assert flowerconf.check_auth(options(address="::1"), local_settings) == "none (local)"
    for address in ("", "0.0.0.0", "10.0.0.5"):
        with pytest.raises(SystemExit, match="loopback"):
            flowerconf.check_auth(options(address=address), local_settings)


def test_defaults_apply_only_where_the_operator_said_nothing(local_settings):
    opts = options(address="127.0.0.1", inspect_timeout=5000.0)
    flowerconf.prepare(
        local_settings,
        opts,
        argv=["celery", "flower", "--inspect-timeout=5000"],
        environ={"FLOWER_PURGE_OFFLINE_WORKERS": "60"},
    )
    assert opts.enable_events is False
    assert "args" in opts.tasks_columns.split(",")
    assert opts.inspect_timeout == 5000.0  # given on the command line
    assert opts.purge_offline_workers is None  # given in the environment (parsed by Flower)


def test_celery_flower_refuses_to_start_unauthenticated(moto_endpoint, bucket):
    """The real command: exits before serving anything, naming what to set."""
    env = {**os.environ, **base_env(moto_endpoint, bucket)}
    env.pop("FLOWER_BASIC_AUTH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower", "--port=0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "refusing to start without authentication" in proc.stderr
