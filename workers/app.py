"""The Celery app: ``celery -A workers.app worker|beat|flower|call|inspect``.

Configuration comes from ``SCOREFLEET_*`` environment variables
(:mod:`tasks.settings`), validated here at start-up: a bad value stops the process
with a message that names the variable.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import signals

from tasks import logctx
from tasks.celeryconf import make_app
from tasks.settings import ConfigError, load

try:
    settings = load()
except ConfigError as _exc:
    print(f"scorefleet: {_exc}", file=sys.stderr)
    raise SystemExit(2) from None

app = make_app(settings)
app.conf.update(
    imports=("tasks.steps",),
    beat_schedule={
        "reap-model-containers": {"task": "tasks.reap", "schedule": settings.reap_interval},
    },
)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _install_log_context(logger: logging.Logger, *args: Any, **kwargs: Any) -> None:
    """Every log line carries the pipeline id and S3 URI of the file it is about."""
    for handler in logger.handlers:
        logctx.install(handler)
    logger.setLevel(settings.log_level)
