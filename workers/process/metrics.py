"""Prometheus metrics of a worker (the official client, prometheus_client), served at
``http://<pod>:SCOREFLEET_METRICS_PORT/metrics``; docs/metrics.md lists them all.

Where they are counted: the steps run in the worker's own process (the chart and the
local stack run Celery's ``threads`` pool: the steps wait on S3, SQS, Kubernetes and
the model), so the default registry of that process holds every count and the
worker's main process serves it, started on ``worker_init`` (beat, Flower and the CLI
import the same app and serve nothing). A worker run with the ``prefork`` pool counts
in its child processes instead: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory)
and the client's multiprocess mode is used, the main process serving what every
child wrote (``MultiProcessCollector``), each child's files marked dead when it exits.

Labels stay few and bounded: a step name, a failure kind (a short class name), a
sweep finding, a configured cluster and namespace; never a file, a run id or a model
image (unbounded).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_BATCH_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

FILES_STARTED = Counter(
    "scorefleet_files_started", "Files whose run a worker claimed and started (launch)"
)
FILES_PUBLISHED = Counter("scorefleet_files_published", "Files whose .scoreout was published")
FILES_FAILED = Counter(
    "scorefleet_files_failed",
    "Files whose .error was published, by the step that gave up and the failure's kind",
    ["step", "reason"],
)
ROWS_SCORED = Counter("scorefleet_rows_scored", "Rows scored (in published .scoreout files)")
ROWS_REJECTED = Counter(
    "scorefleet_rows_rejected", "Rows the model refused, set aside in .rejected files"
)
MODEL_START = Histogram(
    "scorefleet_model_start_seconds",
    "From the launch of a file's model to its first answer to the readiness check",
    buckets=_SECONDS,
)
QUEUE_WAIT = Histogram(
    "scorefleet_queue_wait_seconds",
    "Time a step's message waited (in SQS, and for a free worker slot) before it ran",
    ["step"],
    buckets=_SECONDS,
)
STEP_DURATION = Histogram(
    "scorefleet_step_duration_seconds",
    "How long a step ran, by step and result (done, retry, wait, failed)",
    ["step", "result"],
    buckets=_SECONDS,
)
BATCH_LATENCY = Histogram(
    "scorefleet_minibatch_seconds",
    "One mini-batch's model call, from sending it to its checked answer",
    buckets=_BATCH_SECONDS,
)
MODEL_REPLICAS = Histogram(
    "scorefleet_model_replicas",
    "Model replicas a file's score step scored it with (catalog replicas)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
REPLICA_FAILOVERS = Counter(
    "scorefleet_replica_failovers",
    "Mini-batches sent to another model replica after theirs stayed unavailable",
)
SWEEP_FINDINGS = Counter(
    "scorefleet_sweep_findings",
    "Files the sweep looked at, by what it found (enqueued: their notification never came)",
    ["finding"],
)

K8S_NAMESPACE_RESTRICTED = Gauge(
    "scorefleet_k8s_namespace_restricted",
    "1 when a scoring namespace's Pod Security Admission label enforces restricted, 0 when "
    "it does not or cannot be read (checked when the worker starts)",
    ["cluster", "namespace"],
    multiprocess_mode="max",
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def serve(port: int, address: str = "0.0.0.0") -> Any:  # noqa: S104 - scraped from the pod network
    """Serve /metrics from this (the worker's main) process; ``None`` when off."""
    if port <= 0:
        return None
    registry: CollectorRegistry | None = None
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    kwargs: dict[str, Any] = {"addr": address}
    if registry is not None:
        kwargs["registry"] = registry
    server = start_http_server(port, **kwargs)
    log.info(
        "metrics at http://%s:%d/metrics%s",
        address,
        port,
        " (multiprocess mode)" if registry is not None else "",
    )
    return server


def child_exited(pid: int) -> None:
    """Prefork: a child process is gone; its live gauges (none today) go with it."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@contextmanager
def timed_step(step: str) -> Iterator[dict[str, str]]:
    """Observe a step's duration; the body sets ``result`` in the yielded dict."""
    outcome = {"result": "failed"}
    started = time.monotonic()
    try:
        yield outcome
    finally:
        STEP_DURATION.labels(step, outcome["result"]).observe(time.monotonic() - started)
