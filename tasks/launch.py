"""``tasks.launch``: claim the file (duplicates stop here) and start its model."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import shared_task

from scorefleet.errors import AtCapacity, LeaseHeld
from scorefleet.job import Job, SkipReason
from scorefleet.storage.ledger import Claim
from scorefleet.submission import validate
from tasks.base import RNG, STEP_LOGGER, PipelineStep, delivery_id
from tasks.inputs import preflight
from tasks.policies import lease_wait
from workers.process import metrics
from workers.process.heartbeat import Heartbeat
from workers.runtime import WorkerRuntime

log = logging.getLogger(STEP_LOGGER)


@shared_task(name="tasks.launch", bind=True, base=PipelineStep)
def launch(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Claim the file (duplicates stop here) and start its model container."""

    def body(rt: WorkerRuntime, j: Job, hb: Heartbeat) -> Job:
        s = rt.settings
        if not j.claim_owner and not rt.backend.has_room(s.models.spec(j.model_image)):
            # before claiming: a launch that has to wait costs nothing but its message
            raise AtCapacity("no free model slot (SCOREFLEET_MAX_LIVE_MODELS)")
        owner = j.claim_owner or delivery_id(self)
        holder = uuid.uuid4().hex
        claim = rt.ledger.claim(
            j,
            owner,
            s.broker.visibility_timeout,
            continuing=self.request.retries > 0,
            holder=holder,
        )
        if claim is Claim.HELD:
            j.claim_owner = owner  # the next delivery is of this launch too
            left = rt.ledger.lease_left(j.pipeline_id)
            raise LeaseHeld(
                f"another delivery of this launch holds the run's lease for {left:.0f}s more",
                delay=lease_wait(left, RNG),
            )
        if claim is not Claim.CLAIMED:
            log.info("not running %s again: %s", j.source, claim.value)
            self.request.chain = None  # the other delivery (or the finished run) owns it
            j.skipped = SkipReason(claim.value)
            return j
        j.claim_owner, j.claim_holder = owner, holder  # kept if the launch has to wait its turn
        if not j.launch_started_at:
            metrics.FILES_STARTED.inc()
        validate(s, j)
        spec = s.models.spec(j.model_image)
        # an empty, header-only or binary file, a Parquet file whose footer is bad,
        # columns that are not the file's: all fail here, before any container starts
        rows = preflight(rt, j, spec)
        if rows == 0:
            log.info("the file has no rows: its output needs no model")
            j.handle, j.released = {}, True  # nothing for teardown to stop
            return j
        j.launch_started_at = j.launch_started_at or time.time()
        if rt.backend.has_parked(spec):  # warm mode only (the backend knows)
            # a model of this image waits in the warm pool: the score step claims one
            # (nothing is held for this file while its score waits in the queue)
            j.model_ready_at = time.time()
            log.info("a warm model of %s is parked: nothing to start", j.model_image)
            metrics.MODEL_START.observe(0.0)
            return j
        ep = rt.backend.launch(j, spec)
        j.endpoint, j.handle, j.model_ready_at = ep.url, ep.handle, time.time()
        log.info("model %s ready at %s after %d ms", j.model_image, ep.url, j.model_start_ms)
        metrics.MODEL_START.observe((j.model_start_ms or 0) / 1000)
        if rt.backend.park(j):  # warm mode, and a pool any worker takes from
            log.info("the model is parked until a score of its image claims it")
        return j

    return self.run_step("launch", job, body, lease=True)
