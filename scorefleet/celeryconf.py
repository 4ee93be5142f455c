"""Celery configuration derived from :mod:`scorefleet.settings`, shared by the worker
app (``workers.app``) and the Lambda, which only publishes."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from scorefleet.settings import Settings


def transport_options(settings: Settings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "region": settings.aws.region,
        "is_secure": settings.broker.tls,
        "visibility_timeout": settings.broker.visibility_timeout,
        # Long polling: an idle worker costs one request per 20 s.
        "wait_time_seconds": 20,
        "polling_interval": 0,
    }
    if settings.broker.queue_url:
        # No ListQueues/CreateQueue needed: the queues (and their DLQ) come from the
        # template.
        opts["predefined_queues"] = {
            settings.broker.queue: {"url": settings.broker.queue_url},
            settings.broker.steps_queue: {"url": settings.broker.steps_queue_url},
        }
    return opts


#: The steps after launch go to their own queue (see Settings.steps_queue).
LATER_STEPS = ("tasks.score", "tasks.upload", "tasks.teardown")


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker.url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.broker.queue,
        "task_create_missing_queues": True,
        # New files (launch, rescore) on one queue, the steps of files already running
        # on another; workers consume both, so a burst of new files waits its turn
        # behind work in progress instead of in front of it.
        "task_queues": (Queue(settings.broker.queue), Queue(settings.broker.steps_queue)),  # type: ignore[no-untyped-call]
        "task_routes": {name: {"queue": settings.broker.steps_queue} for name in LATER_STEPS},
        # JSON only: no pickle from a queue that a Lambda writes to.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # No result backend: outcomes are the .scoreout/.error objects in S3.
        "result_backend": None,
        "task_ignore_result": True,
        # Reliability: ack after the step finished, one message at a time per slot,
        # and give the message back if the worker dies mid-step.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(settings: Settings, name: str = "scorefleet") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
