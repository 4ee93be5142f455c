"""Flower's authentication guard and defaults (workers.monitoring.flowerconf)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from scorefleet.settings import load
from tests.helpers import base_env
from workers.monitoring import flowerconf


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


def test_the_broker_tab_reads_queue_depths_from_sqs(moto_endpoint, bucket, monkeypatch):
    """Issue 12, item 12: Flower's Broker tab on SQS (its own code knows only RabbitMQ
    and Redis): each queue with its waiting, in-flight and delayed messages."""
    import asyncio

    from workers.localstack.stack import emulator_client

    env = base_env(moto_endpoint, bucket)
    settings = load(env)
    sqs = emulator_client("sqs", moto_endpoint)
    url = sqs.create_queue(QueueName=settings.broker.queue)["QueueUrl"]
    sqs.create_queue(QueueName=settings.broker.dead_letter_queue)
    for _ in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
    broker = flowerconf.SqsQueues(settings, client=sqs)
    rows = asyncio.run(broker.queues([settings.broker.queue, "no-such-queue"]))
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {
        settings.broker.queue,
        settings.broker.dead_letter_queue,
    }  # the missing one: skipped
    q = by_name[settings.broker.queue]
    assert (q["messages_ready"], q["messages_unacknowledged"], q["messages"]) == (2, 1, 4)
    assert by_name[settings.broker.dead_letter_queue]["messages"] == 0


def test_the_broker_view_is_installed_for_sqs_only(settings, monkeypatch):
    from flower import views

    monkeypatch.setattr(views, "Broker", views.Broker)
    upstream = views.Broker
    flowerconf.install_broker_view(settings)
    assert isinstance(
        views.Broker("workers.monitoring.compat_sqs:Transport://x"), flowerconf.SqsQueues
    )
    monkeypatch.setattr(views, "Broker", upstream)
    flowerconf.install_broker_view(
        SimpleNamespace(broker=SimpleNamespace(url="redis://localhost:6379/0"))  # type: ignore[arg-type]
    )
    assert views.Broker is upstream
