"""Helpers for the events / remote control tests (not a test module)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from celery import Celery

from scorefleet.celeryconf import make_app
from scorefleet.settings import load
from tests.helpers import base_env
from workers.localstack.stack import emulator_client
from workers.monitoring import monitor


def monitored_app(moto_endpoint: str, bucket: str, **extra: str) -> tuple[Celery, str]:
    """The worker-side app (as workers.app builds it) on moto, and its namespace."""
    settings = load(base_env(moto_endpoint, bucket, **extra))
    app = make_app(settings)
    monitor.configure(app, settings)
    # short long-polls, so that test threads stop quickly
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "wait_time_seconds": 1,
    }
    return app, monitor.namespace(settings.broker.queue)


def queues(moto_endpoint: str, prefix: str) -> list[str]:
    sqs = emulator_client("sqs", moto_endpoint)
    urls = sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return sorted(u.rsplit("/", 1)[1] for u in urls)


def subscriptions(moto_endpoint: str, prefix: str) -> list[str]:
    sns = emulator_client("sns", moto_endpoint)
    subs = sns.list_subscriptions().get("Subscriptions", [])
    names = (s["Endpoint"].rsplit(":", 1)[1] for s in subs if s.get("Protocol") == "sqs")
    return sorted(n for n in names if n.startswith(prefix))


@contextmanager
def fake_worker(app: Celery, hostname: str) -> Iterator[threading.Thread]:
    """A worker's remote-control node answering ``ping`` on its own connection
    (in a thread, like a worker in another process)."""
    stop = threading.Event()
    ready = threading.Event()

    def ping(state: Any, **kwargs: Any) -> dict[str, str]:
        return {"ok": "pong"}

    def run() -> None:
        with app.connection_for_write() as conn:
            node = app.control.mailbox.Node(
                hostname, handlers={"ping": ping}, channel=conn.default_channel
            )
            consumer = node.listen()
            ready.set()
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                with suppress(TimeoutError):
                    conn.drain_events(timeout=1)
            consumer.cancel()

    thread = threading.Thread(target=run, daemon=True, name="fake-worker")
    thread.start()
    assert ready.wait(20), "the fake worker did not start"
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.fixture(autouse=True)
def _delete_session_queues() -> Iterator[None]:
    """What atexit does in a real process, while moto is still up."""
    yield
    monitor.SessionQueues.cleanup_all()
