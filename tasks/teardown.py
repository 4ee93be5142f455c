"""``tasks.teardown``: remove the run's model (after success and failure alike)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task

from scorefleet.job import Job
from tasks.base import STEP_LOGGER, PipelineStep, Step
from workers.process.heartbeat import Heartbeat
from workers.runtime import WorkerRuntime

log = logging.getLogger(STEP_LOGGER)

TEARDOWN = Step("teardown")


@shared_task(name="tasks.teardown", bind=True, base=PipelineStep)
def teardown(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Remove the run's model container (runs after success and failure alike)."""

    def body(rt: WorkerRuntime, j: Job, hb: Heartbeat) -> Job:
        log_done(j, stopped=None if j.model.released else rt.backend.teardown(j))
        return j

    return self.run_step(TEARDOWN, job, body)


def log_done(j: Job, stopped: bool | None = None) -> None:
    """The file's last line: what was published, what became of its model (released
    by an earlier step, or ``stopped`` by teardown: whether there was one to stop), how
    long it all took. Said by teardown, or by upload when the chain ends there."""
    now = time.time()
    if j.model.released:
        # a model the run had (the backend gave it an endpoint), or none at all
        model = "released after scoring" if j.model.endpoint else "none started"
    else:
        model = f"stopped: {stopped}"
    log.info(
        "done: %s; model %s; %.0f ms since launch (model start %s ms), %.0f ms since enqueue",
        j.published or j.skipped or "nothing published",
        model,
        (now - (j.model.started_at or j.enqueued_at)) * 1000,
        j.model.start_ms,
        (now - j.enqueued_at) * 1000,
    )
