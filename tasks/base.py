"""What every step of the pipeline shares: :class:`PipelineStep`, the one place where
failures are sorted.

A transient failure is retried (the retry waits in SQS as a delayed message, not in
worker memory) with exponential backoff and jitter (:func:`tasks.policies.compute_backoff`),
up to ``SCOREFLEET_RETRY_MAX`` times; a permanent one, or the last retry, records the
failure on the job and starts the failure tail (upload the ``.error``, then teardown).
If even that cannot be enqueued, the message is handed back to SQS, so nothing is
lost. A step body gets the worker's runtime (:class:`workers.runtime.WorkerRuntime`)
as its first argument: settings, S3, backend and ledger, passed in, never looked up.

A step body returns the job with what it learned (the job is immutable); what it
learned before it has to stop early (its claim, its model) it hands to its heartbeat
(:meth:`workers.process.heartbeat.Heartbeat.advance`), and that is the job that goes
back to the queue or into the failure tail. What sets a step apart here (the lease,
making the run's claim, what waiting its turn does to its job) the step declares in
its :class:`Step`: nothing in this module tests a step's name.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry

from scorefleet import logctx, vouch
from scorefleet.chain import failure_tail
from scorefleet.errors import AtCapacity, MustWait, PipelineError, Untrusted, describe, is_transient
from scorefleet.job import Failure, Job
from scorefleet.redact import redact
from tasks.policies import compute_backoff, wait_delay
from workers import runtime
from workers.process import metrics
from workers.process.heartbeat import Heartbeat
from workers.runtime import WorkerRuntime

#: The steps log as "tasks.steps", the name their lines have always carried (what
#: operators' log filters and alarms look for), whichever module they are in.
STEP_LOGGER = "tasks.steps"
log = logging.getLogger(STEP_LOGGER)

#: A step body: (the worker's runtime, the job, its heartbeat) -> the job, updated.
Body = Callable[[WorkerRuntime, Job, Heartbeat], Job]
#: Jitter of retry and wait delays (a module attribute, so a test can seed it).
RNG = random.Random()


class StepFailed(Exception):
    """A step gave up on its file; the failure tail (``.error``, teardown) is queued."""


@dataclass(frozen=True)
class Step:
    """What a step declares about itself to :meth:`PipelineStep.run_step`."""

    #: its name: in metrics, logs, the failure it records, the failure tail it starts
    name: str
    #: renew the run's lease (scorefleet.storage.ledger) while it works
    lease: bool = False
    #: it makes the run's claim itself (the launch): its heartbeat renews the lease
    #: only once it holds the claim, and a delivery of it going back to the queue (a
    #: retry, a wait) hands its claim on to the next (Ledger.release)
    claims: bool = False
    #: what its job goes back to the queue as when it must wait its turn (default: as
    #: it is now)
    on_wait: Callable[[Job], Job] | None = None


def delivery_id(task: Task) -> str:
    """The SQS MessageId of the message being processed (unique per delivery of a
    message, shared by its redeliveries); a random id outside SQS."""
    props = getattr(task.request, "properties", None) or {}
    msg = (props.get("delivery_info") or {}).get("sqs_message") or {}
    return str(msg.get("MessageId") or f"nosqs-{uuid.uuid4()}")


def first_delivery(task: Task) -> bool:
    """Is this the first delivery of this message (no retry, SQS delivered it once)?
    Then no earlier delivery of it left anything behind. It says nothing about a copy
    of the chain (see scorefleet.storage.ledger), which is a first delivery of its own
    message. Unknown: not first."""
    if task.request.retries:
        return False
    props = getattr(task.request, "properties", None) or {}
    msg = (props.get("delivery_info") or {}).get("sqs_message") or {}
    return str((msg.get("Attributes") or {}).get("ApproximateReceiveCount", "")) == "1"


class PipelineStep(Task):
    """Base of launch/score/upload/teardown."""

    #: No Celery-level autoretry: run_step decides.
    max_retries = None
    #: Keep "succeeded: <result>" log lines short; the job is in the step's own logs.
    resultrepr_maxsize = 160
    acks_late = True
    reject_on_worker_lost = True

    def run_step(self, step: Step, payload: dict[str, Any], body: Body) -> Any:
        """Run ``body`` under a heartbeat (SQS visibility, and the run's lease when the
        step declares ``lease``), sorting any failure into retry or give up. A job this
        worker cannot vouch for (scorefleet.vouch) is refused before anything is done."""
        rt = runtime.current()
        s = rt.settings
        job = _job_from(payload)
        # time spent between steps: queue hops, and waiting for a free worker slot
        gap = max(0.0, time.time() - (job.step_done_at or job.enqueued_at))
        # the claim's holder is set by this delivery's own claim: never a message's
        job = replace(job, claim=replace(job.claim, holder=None), waited=job.waited + gap)
        metrics.QUEUE_WAIT.labels(step.name).observe(gap)
        with logctx.bind(job.run_id, str(job.source)), metrics.timed_step(step.name) as timing:
            hb = Heartbeat(
                job=job,
                request=self.request,
                visibility_timeout=s.broker.visibility_timeout,
                region=s.aws.region,
                ledger=rt.ledger if step.lease else None,
                max_seconds=s.scoring.max_step_seconds,
                step=step.name,
                claims=step.claims,
            )
            try:
                vouch.check_job(s, job)
                with hb:
                    done = body(rt, job, hb)
                timing["result"] = "done"
                return replace(done, step_done_at=time.time()).to_dict()
            except Untrusted as exc:
                log.error("%s refused a task message it cannot vouch for: %s", step.name, exc)
                raise
            except MustWait as exc:
                timing["result"] = "wait"
                # the job as far as the step got; its wait is counted again when it runs
                now = replace(hb.job, waited=hb.job.waited - gap)
                self._wait_turn(rt, step, now, exc)
                raise  # unreachable: _wait_turn always raises
            except Exception as exc:
                timing["result"] = "retry" if is_transient(exc) else "failed"
                self._retry_or_give_up(rt, step, hb.job, exc)
                raise  # unreachable: _retry_or_give_up always raises

    def _wait_turn(self, rt: WorkerRuntime, step: Step, job: Job, exc: MustWait) -> None:
        """Put this step back in the queue for a while, its retries untouched: files
        already running finish first (their next steps are in the queue meanwhile),
        or the delivery holding the run's lease goes on. The job goes back as far as
        the step got with it (and what its ``on_wait`` makes of that), so a launch keeps
        the claim it made (and hands it to its next delivery)."""
        delay = wait_delay(exc.delay, RNG)
        if isinstance(exc, AtCapacity):
            log.info("no room for another model (%s); waiting %ds in the queue", exc.message, delay)
        else:
            log.info("%s; waiting %ds in the queue", exc.message, delay)
        job = _hand_back(rt, step, job)
        if step.on_wait is not None:
            job = step.on_wait(job)
        try:
            sig = self.signature_from_request(
                self.request,
                args=(job.to_dict(),),
                countdown=0,
                retries=self.request.retries,
                delay_seconds=delay,
            )
            sig.apply_async()
        except Exception as publish_exc:
            raise Reject(publish_exc, requeue=True) from exc
        raise Retry(str(exc), exc=exc, when=delay, sig=sig)

    def _retry_or_give_up(self, rt: WorkerRuntime, step: Step, job: Job, exc: Exception) -> None:
        retries, policy = int(self.request.retries or 0), rt.settings.retries
        kind, message = describe(exc)
        if is_transient(exc) and retries < policy.max:
            delay = compute_backoff(retries, policy.backoff, policy.backoff_max, RNG)
            log.warning(
                "%s failed (%s: %s); retry %d of %d in %ds",
                step.name,
                kind,
                message,
                retries + 1,
                policy.max,
                delay,
            )
            _hand_back(rt, step, job)
            try:
                # countdown=0: no ETA (held in worker memory); SQS holds it instead.
                raise self.retry(exc=exc, countdown=0, max_retries=policy.max, delay_seconds=delay)
            except Retry:
                raise
            except Exception as publish_exc:
                log.error(
                    "could not schedule the retry (%s); handing the message back", publish_exc
                )
                raise Reject(publish_exc, requeue=True) from exc
        if not isinstance(exc, PipelineError):
            log.error("%s failed with an unexpected error", step.name, exc_info=exc)
        # masked here, at the source: the failure travels on in the failure tail's task
        # messages (SQS bodies, Flower's task pages), not only into the .error
        message = redact(message)
        job = replace(
            job,
            failure=job.failure
            or Failure(
                step=step.name,
                kind=kind,
                message=message,
                attempts=retries + 1,
                model_logs=redact(getattr(exc, "model_logs", "") or ""),
            ),
        )
        tail = failure_tail(job, step.name, app=self.app)
        if tail is not None:
            try:
                tail.apply_async()
            except Exception as publish_exc:
                log.error(
                    "could not queue the failure handling (%s); handing the message back",
                    publish_exc,
                )
                raise Reject(publish_exc, requeue=True) from exc
        log.warning("%s gave up: %s: %s", step.name, kind, message)
        raise StepFailed(f"{kind}: {message}") from exc


def _hand_back(rt: WorkerRuntime, step: Step, job: Job) -> Job:
    """A step that claims the run (the launch) going back to the queue (its retry, or
    its wait for a slot) hands its claim to the delivery that comes next, which then
    need not wait for this one's lease to expire (scorefleet.storage.ledger:
    Ledger.release). The job without its holder: it goes back to the queue."""
    holder = job.claim.holder
    job = replace(job, claim=replace(job.claim, holder=None))
    if not step.claims or not holder:
        return job
    try:
        rt.ledger.release(job, holder)
    except Exception as exc:  # the next delivery waits for the lease instead
        log.warning("could not hand the claim back (%s): its lease has to expire", exc)
    return job


def _job_from(payload: Any) -> Job:
    try:
        return Job.from_dict(payload)
    except (TypeError, ValueError, AttributeError) as exc:
        log.error("refused a task message whose argument is not a job: %s", exc)
        raise Untrusted(f"not a job: {exc}") from exc
