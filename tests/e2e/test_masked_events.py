"""Celery task-failed (and task-retried) events carry no credentials: what Flower
shows on a task's page and ``celery events`` prints (workers/monitoring/maskedevents.py).

Reported: the exception text and traceback in those events were not masked, and a
step's exception may quote a model's answer or log lines."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from celery.utils.serialization import get_pickled_exception
from kombu import Consumer
from kombu.utils.encoding import safe_repr

from scorefleet.celeryconf import make_app
from scorefleet.errors import ModelError
from scorefleet.settings import load
from tests.helpers import PLANTED_ENV_SECRETS, Outcomes
from tests.helpers.fakemodel import LEAKED_KEY_ID, LEAKED_SECRET
from tests.helpers.monitoring import (  # noqa: F401
    _delete_session_queues,
    subscriptions,
)
from workers.localstack.stack import BUCKET, LocalStack
from workers.monitoring import monitor
from workers.monitoring.maskedevents import MaskedEvents, MaskingDispatcher, masked

BASE = {
    "SCOREFLEET_INPUT_URI": "s3://data/in/",
    "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
}
OWN_URI = f"s3://{BUCKET}/in/rt/tokens:2026-12-01/batch.csv"  # a look-alike of ours


def failed_step() -> ExceptionInfo:
    """A step that gave up on a model's answer (tasks.base raises StepFailed from the
    ModelError), as Celery's ExceptionInfo holds it."""
    from tasks.base import StepFailed

    answer = f"bad row; connecting with token={LEAKED_SECRET} as {LEAKED_KEY_ID}"
    try:
        try:
            raise ModelError(f"the model answered HTTP 400 for {OWN_URI}: {answer}")
        except ModelError as exc:
            raise StepFailed(f"ModelError: {exc.message}") from exc
    except StepFailed:
        einfo = ExceptionInfo()
    # what celery.app.trace does with it before the worker's Request sees it
    if isinstance(einfo.exception, ExceptionWithTraceback):
        einfo.exception = einfo.exception.exc
    return einfo


def test_the_exception_and_traceback_celery_sends_are_masked():
    """The exact strings Celery's Request.on_failure puts into task-failed."""
    einfo = failed_step()
    fields = {
        "exception": safe_repr(get_pickled_exception(einfo.exception)),
        "traceback": einfo.traceback,
        "uuid": "sf-00000000000000000001-score",
    }
    assert LEAKED_SECRET in fields["exception"] and LEAKED_SECRET in fields["traceback"]
    shown = masked(fields)
    for name in ("exception", "traceback"):
        assert LEAKED_SECRET not in shown[name] and LEAKED_KEY_ID not in shown[name], name
        assert "token=***" in shown[name], name
        assert OWN_URI in shown[name], name  # scorefleet's own URI stays exact
    assert "Traceback (most recent call last)" in shown["traceback"]
    assert "The above exception was the direct cause" in shown["traceback"]
    assert shown["uuid"] == fields["uuid"]


def test_the_apps_event_dispatcher_masks():
    app = make_app(load({**BASE, "SCOREFLEET_BROKER_URL": "memory://"}))
    app.events_cls = "workers.monitoring.maskedevents:MaskedEvents"
    assert isinstance(app.events, MaskedEvents)
    assert issubclass(app.events.Dispatcher, MaskingDispatcher)
    sent: list[dict[str, Any]] = []
    with app.connection_for_write() as conn:  # in memory: a receiver in this process
        queue = app.events.Receiver(conn).queue  # bound to the events exchange
        callback = lambda body, message: sent.append(body)  # noqa: E731
        with Consumer(conn.default_channel, [queue], callbacks=[callback], accept=["json"]):
            dispatcher = app.events.Dispatcher(conn, hostname="w@test", enabled=True)
            dispatcher.send("task-retried", exception=f"X('password={LEAKED_SECRET}')")
            dispatcher.close()
            conn.drain_events(timeout=5)
    assert [e["type"] for e in sent] == ["task-retried"]
    assert sent[0]["exception"] == "X('password=***')"


@pytest.mark.slow
def test_a_real_task_failed_event_is_masked(stack: LocalStack, outcomes: Outcomes):
    """A worker of the local stack scores a file with a model that answers HTTP 400
    with credentials in its body; the task-failed event a receiver gets has them
    masked, exception and traceback alike."""
    settings = load(dict(stack.env))
    app = make_app(settings)
    monitor.configure(app, settings)
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "wait_time_seconds": 1,
    }
    ns = monitor.namespace(settings.broker.queue)
    failed: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def receive() -> None:
        def on_failed(event: dict[str, Any]) -> None:
            failed.append(event)

        try:
            with app.connection_for_read() as conn:
                recv = app.events.Receiver(conn, handlers={"task-failed": on_failed})
                deadline = time.monotonic() + 120
                for _ in recv.consume(limit=None, timeout=5, wakeup=False):
                    if stop.is_set() or time.monotonic() > deadline:
                        break
        except TimeoutError:
            pass
        except BaseException as exc:
            errors.append(exc)

    before = len(subscriptions(stack.endpoint, f"{ns}-ev-"))
    thread = threading.Thread(target=receive, daemon=True, name="event-receiver")
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(subscriptions(stack.endpoint, f"{ns}-ev-")) <= before:
            assert time.monotonic() < deadline, "the receiver never subscribed"
            time.sleep(0.05)
        key = "masked-events/leaky.csv"
        outcomes.put(key, b"a,b\n1,2\n", {"model_image": "test/leaky:1"})
        suffix, _, tags = outcomes.wait(key)
        assert suffix == ".error"
        task = f"{tags['pipeline_id']}-score"
        deadline = time.monotonic() + 30
        while not any(e.get("uuid") == task for e in failed):
            assert time.monotonic() < deadline and not errors, (errors, failed)
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    (event,) = [e for e in failed if e.get("uuid") == task]
    assert "bad row" in event["exception"] and "bad row" in event["traceback"]
    for name in ("exception", "traceback"):
        for secret in (LEAKED_SECRET, LEAKED_KEY_ID, *PLANTED_ENV_SECRETS):
            assert secret not in event[name], (name, secret)
        assert "token=***" in event[name], name
