"""``tasks.launch``: claim the file (duplicates stop here) and start its model."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from celery import shared_task

from scorefleet.errors import AtCapacity, LeaseHeld
from scorefleet.job import Job, SkipReason
from scorefleet.storage.ledger import Claim
from tasks.base import RNG, STEP_LOGGER, PipelineStep, Step, delivery_id
from tasks.policies import lease_wait
from workers.backends import replicas
from workers.process import metrics
from workers.process.heartbeat import Heartbeat
from workers.runtime import WorkerRuntime
from workers.scoring.preview import look

log = logging.getLogger(STEP_LOGGER)


def untimed(job: Job) -> Job:
    """A launch going back to the queue to wait its turn: its model start is timed
    from the delivery that gets to start the model."""
    return replace(job, model=replace(job.model, started_at=None))


#: The launch renews the run's lease once it has claimed the run itself.
LAUNCH = Step("launch", lease=True, claims=True, on_wait=untimed)


@shared_task(name="tasks.launch", bind=True, base=PipelineStep)
def launch(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Claim the file (duplicates stop here) and start its model container."""

    def body(rt: WorkerRuntime, j: Job, hb: Heartbeat) -> Job:
        s = rt.settings
        if not j.claim.owner and not rt.backend.has_room(s.models.spec(j.model_image)):
            # before claiming: a launch that has to wait costs nothing but its message
            raise AtCapacity("no free model slot (SCOREFLEET_MAX_LIVE_MODELS)")
        owner = j.claim.owner or delivery_id(self)
        holder = uuid.uuid4().hex
        claim = rt.ledger.claim(
            j,
            owner,
            s.broker.visibility_timeout,
            continuing=self.request.retries > 0,
            holder=holder,
        )
        if claim is Claim.HELD:
            hb.advance(j.claimed(owner))  # the next delivery is of this launch too
            left = rt.ledger.lease_left(j.pipeline_id)
            raise LeaseHeld(
                f"another delivery of this launch holds the run's lease for {left:.0f}s more",
                delay=lease_wait(left, RNG),
            )
        if claim is not Claim.CLAIMED:
            log.info("not running %s again: %s", j.source, claim.value)
            self.request.chain = None  # the other delivery (or the finished run) owns it
            return replace(j, skipped=SkipReason(claim.value))
        # kept if the launch has to wait its turn (and its lease renewed from now on)
        j = hb.advance(j.claimed(owner, holder))
        if not j.model.started_at:
            metrics.FILES_STARTED.inc()
        spec = s.models.spec(j.model_image)
        # a disallowed image; an empty, header-only or binary file, a Parquet file whose
        # footer is bad, columns that are not the file's, columns that do not fit the
        # model's declared contract: all fail here, before any container starts (the
        # one code path of `scorefleet check`: workers/scoring/preview.py)
        preview = look(s, rt.s3, j, spec)
        if preview.error is not None:
            raise preview.error
        rows = preview.head.rows if preview.head is not None else None
        plan = replicas.plan(spec, j)  # a bad replicas tag fails here too
        if plan.count > 1 or plan.asked is not None:
            log.info("the file gets %s", plan.describe())
        if rows == 0:
            log.info("the file has no rows: its output needs no model")
            # nothing for teardown to stop
            return replace(j, model=replace(j.model, endpoint=None, handle={}, released=True))
        started = j.model.started_at or time.time()
        j = hb.advance(replace(j, model=replace(j.model, started_at=started)))
        if rt.backend.has_parked(spec):  # warm mode only (the backend knows)
            # a model of this image waits in the warm pool: the score step claims one
            # (nothing is held for this file while its score waits in the queue)
            log.info("a warm model of %s is parked: nothing to start", j.model_image)
            metrics.MODEL_START.observe(0.0)
            return replace(j, model=replace(j.model, ready_at=time.time(), pooled=True))
        launched = replicas.start(
            lambda i: replicas.for_replica(rt.backend.launch, i, j, spec),
            list(range(plan.count)),
            image=j.model_image,
        )
        ep = launched[0][1]
        model = replace(
            j.model,
            endpoint=ep.url,
            handle=replicas.merged_handle(launched),
            ready_at=time.time(),
            replicas=tuple(i for i, _ in launched) if plan.count > 1 else (),
            image_id=ep.image_id,
        )
        j = hb.advance(replace(j, model=model))
        log.info(
            "model %s ready at %s after %d ms%s",
            j.model_image,
            ep.url,
            j.model.start_ms,
            f" ({len(launched)} replicas)" if len(launched) > 1 else "",
        )
        metrics.MODEL_START.observe((j.model.start_ms or 0) / 1000)
        if rt.backend.park(j):  # warm mode, and a pool any worker takes from
            log.info("the model is parked until a score of its image claims it")
            j = replace(j, model=replace(j.model, pooled=True))
        return j

    return self.run_step(LAUNCH, job, body)
