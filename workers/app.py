"""The Celery app: ``celery -A workers.app worker|beat|flower|call|inspect``.

Configuration comes from ``SCOREFLEET_*`` environment variables
(:mod:`scorefleet.settings`), validated here at start-up by the one worker load
(:func:`workers.settings.load`: settings, the whole model catalog, the launch
backends): a bad value stops the process (exit 2) with a message that names the
variable, every problem at once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from typing import Any

from celery import signals

from scorefleet import logctx
from scorefleet.celeryconf import make_app
from scorefleet.chain import describe_step
from scorefleet.settings import ConfigError
from workers import runtime
from workers.backends.registry import start_checks
from workers.monitoring import flowerconf, monitor
from workers.process import hardening, metrics, reach
from workers.settings import load

# Before anything reads credentials: a model process of the same user (local backend)
# cannot read this process's environment or memory through /proc.
hardening.make_non_dumpable()

#: The modules of the Celery tasks (tasks/): one per step, and the operators' tasks.
TASK_MODULES = (
    "tasks.launch",
    "tasks.score",
    "tasks.upload",
    "tasks.teardown",
    "tasks.operations",
    "tasks.sweep",
)

try:
    settings = load()
except ConfigError as _exc:
    _problem = str(_exc)
    if not any(name.startswith("SCOREFLEET_") for name in os.environ):
        # nothing configured at all: a shell that did not source a stack's stack.env
        _problem = (
            "not configured: no SCOREFLEET_* variable is set (for the local stack: "
            "`source .scorefleet/stack.env` while `scorefleet up` runs; every variable: "
            "`scorefleet config --markdown`)"
        )
    print(f"scorefleet: {_problem}", file=sys.stderr)
    raise SystemExit(2) from None

app = make_app(settings)
# celery's own commands (call, inspect, events, ...) say in one line that the broker
# cannot be reached, before they try (workers/process/reach.py)
reach.install(app, settings)
# Celery 5.7's `events` declares -d twice (--dump, --detach): Click warns on every run
warnings.filterwarnings("ignore", message="The parameter -d is used more than once")
# Celery events carry exception text and tracebacks: masked (workers/monitoring/maskedevents.py)
app.events_cls = "workers.monitoring.maskedevents:MaskedEvents"
# Events and remote control over SNS fanout (Flower, celery events/inspect): docs/flower.md
monitor.configure(app, settings)
_schedule: dict[str, dict[str, Any]] = {
    "reap-model-containers": {"task": "tasks.reap", "schedule": settings.launch.reap_interval},
    "sweep-monitor-queues": {
        "task": "tasks.sweep_monitor_queues",
        "schedule": max(60.0, settings.monitoring.idle / 3),
    },
}
if settings.sweep.interval > 0:
    # files whose notification never came (workers/ops/sweep.py); a sweep not started
    # within one interval is dropped: the next one covers it
    _schedule["sweep-unnotified-files"] = {
        "task": "tasks.sweep",
        "schedule": settings.sweep.interval,
        "options": {"expires": settings.sweep.interval},
    }
app.conf.update(
    # by name: workers never import tasks (the layers in pyproject.toml)
    imports=(*TASK_MODULES, "workers.monitoring.monitor"),
    beat_schedule=_schedule,
)


@signals.import_modules.connect
def _prepare_flower(sender: Any = None, **kwargs: Any) -> None:
    """In ``celery flower``: refuse to start unauthenticated, apply our defaults."""
    if flowerconf.running_flower():
        mode = flowerconf.prepare(settings)
        print(f"scorefleet flower: authentication: {mode}", file=sys.stderr)


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The worker's main process serves its metrics (workers/process/metrics.py)."""
    metrics.serve(settings.metrics.port, settings.metrics.address)


@signals.worker_ready.connect
def _start_checks(**_: Any) -> None:
    """The launch backend's checks of where models run (kubernetes: does each scoring
    namespace enforce the restricted Pod Security Standard?), logged, a warning for
    what is not as it should be; in a thread of their own, off the start-up path."""

    log = logging.getLogger("workers.backends")

    def run() -> None:
        try:
            checks = start_checks(settings, runtime.current().backend)
        except Exception as exc:  # a check must never stop a worker
            log.warning("start-up checks failed: %s", exc)
            return
        for check in checks:
            level = logging.INFO if check.ok else logging.WARNING
            log.log(level, "%s: %s: %s", check.name, check.subject, check.detail)

    threading.Thread(target=run, name="start-checks", daemon=True).start()


@signals.worker_process_shutdown.connect
def _metrics_child_exited(**_: Any) -> None:
    metrics.child_exited(os.getpid())


@signals.before_task_publish.connect
def _describe_step(
    sender: str | None = None, headers: Any = None, body: Any = None, **_: Any
) -> None:
    """Retries of a step keep the short args/kwargs shown by Flower (the S3 URI),
    which Celery would otherwise recompute from the whole job."""
    if not isinstance(headers, dict) or not isinstance(body, (list, tuple)) or not body:
        return
    args = body[0]
    if args and isinstance(args[0], dict):
        shown = describe_step(str(sender or headers.get("task") or ""), args[0])
        if shown:
            headers.update(shown)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _install_log_context(logger: logging.Logger, *args: Any, **kwargs: Any) -> None:
    """Every log line carries the pipeline id and S3 URI of the file it is about."""
    for handler in logger.handlers:
        logctx.install(handler)
    logger.setLevel(settings.monitoring.log_level)
