"""The Celery tasks of the pipeline (loaded by ``workers.app``; the Lambda never
imports this module).

``tasks.launch -> tasks.score -> tasks.upload -> tasks.teardown`` for each file,
``tasks.rescore`` to rerun a file by hand, ``tasks.reap`` for what a dead worker
left behind.

Every step runs through :meth:`PipelineStep.run_step`, the single place where
failures are sorted: a transient failure is retried (the retry waits in SQS as a
delayed message, not in worker memory) with exponential backoff and full jitter,
up to ``SCOREFLEET_RETRY_MAX`` times; a permanent one, or the last retry, records
the failure on the job and starts the failure tail (upload the ``.error``, then
teardown). If even that cannot be enqueued, the message is handed back to SQS,
so nothing is lost.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject, Retry

from scorefleet import logctx, vouch
from scorefleet.chain import enqueue, failure_tail
from scorefleet.errors import (
    AtCapacity,
    LeaseHeld,
    ModelUnavailable,
    MustWait,
    PipelineError,
    Rejected,
    Untrusted,
    describe,
    is_transient,
)
from scorefleet.job import Failure, Job, rerun_id
from scorefleet.s3uri import S3Uri
from scorefleet.settings import ModelSpec
from scorefleet.storage import outcome, s3io
from scorefleet.storage.ledger import (
    Claim,
    Publication,
    Record,
    rejected_staging_key,
    staging_location,
    staging_prefix,
)
from scorefleet.submission import identity_of, job_for_object, validate
from workers import compression, metrics, runtime
from workers.formats import MAX_ROW_GROUP_BYTES, Format, ReadLimits
from workers.formats import source as data_source
from workers.heartbeat import Heartbeat
from workers.progress import RunProgress
from workers.protocols import CallLimits, ModelProtocol, open_protocol, protocol_for
from workers.rejects import RowRejects, budget_for
from workers.scoring import no_model, reader_rows, score_stream

log = logging.getLogger(__name__)


class StepFailed(Exception):
    """A step gave up on its file; the failure tail (``.error``, teardown) is queued."""


def backoff_delay(retries: int) -> int:
    """Exponential backoff with full jitter, in whole seconds (SQS DelaySeconds)."""
    s = runtime.settings()
    cap = min(s.retries.backoff_max, s.retries.backoff * 2**retries)
    return max(1, round(random.uniform(cap / 2, cap)))


#: The attempt name under which a run that has no output (it failed before its
#: scoring finished) records its ``.error``; see Ledger.record_outcome.
NO_OUTPUT = "no-output"
#: Why an upload published nothing: another attempt of its run recorded the outcome.
PUBLISHED_ELSEWHERE = "published by another attempt"


def delivery_id(task: Task) -> str:
    """The SQS MessageId of the message being processed (unique per delivery of a
    message, shared by its redeliveries); a random id outside SQS."""
    props = getattr(task.request, "properties", None) or {}
    msg = (props.get("delivery_info") or {}).get("sqs_message") or {}
    return str(msg.get("MessageId") or f"nosqs-{uuid.uuid4()}")


def first_delivery(task: Task) -> bool:
    """Is this the first delivery of this message (no retry, SQS delivered it once)?
    Then no earlier delivery of it left anything behind. It says nothing about a copy
    of the chain (see scorefleet.storage.ledger), which is a first delivery of its own message.
    Unknown: not first."""
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

    def run_step(
        self,
        step: str,
        payload: dict[str, Any],
        body: Callable[[Job, Heartbeat], Job],
        *,
        lease: bool = False,
    ) -> Any:
        """Run ``body`` under a heartbeat (SQS visibility, and the run's lease when
        ``lease``), sorting any failure into retry or give up. A job this worker cannot
        vouch for (scorefleet.vouch) is refused before anything is done."""
        job = _job_from(payload)
        job.claim_holder = None  # set by this delivery's own claim: never a message's
        s = runtime.settings()
        # time spent between steps: queue hops, and waiting for a free worker slot
        gap = max(0.0, time.time() - (job.step_done_at or job.enqueued_at))
        job.waited += gap
        metrics.QUEUE_WAIT.labels(step).observe(gap)
        with logctx.bind(job.run_id, str(job.source)), metrics.timed_step(step) as timing:
            try:
                vouch.check_job(s, job)
                with Heartbeat(
                    job=job,
                    request=self.request,
                    visibility_timeout=s.broker.visibility_timeout,
                    region=s.aws.region,
                    ledger=runtime.ledger() if lease else None,
                    max_seconds=s.scoring.max_step_seconds,
                    step=step,
                ) as hb:
                    done = body(job, hb)
                done.step_done_at = time.time()
                timing["result"] = "done"
                return done.to_dict()
            except Untrusted as exc:
                log.error("%s refused a task message it cannot vouch for: %s", step, exc)
                raise
            except MustWait as exc:
                timing["result"] = "wait"
                job.waited -= gap  # counted again when the step runs after its wait
                self._wait_turn(step, job, exc)
                raise  # unreachable: _wait_turn always raises
            except Exception as exc:
                timing["result"] = "retry" if is_transient(exc) else "failed"
                self._retry_or_give_up(step, job, exc)
                raise  # unreachable: _retry_or_give_up always raises

    def _wait_turn(self, step: str, job: Job, exc: MustWait) -> None:
        """Put this step back in the queue for a while, its retries untouched: files
        already running finish first (their next steps are in the queue meanwhile),
        or the delivery holding the run's lease goes on. The job goes back as it is
        now, so a launch keeps the claim it made (and hands it to its next delivery)."""
        delay = exc.delay or random.randint(2, 6)
        if isinstance(exc, AtCapacity):
            log.info("no room for another model (%s); waiting %ds in the queue", exc.message, delay)
        else:
            log.info("%s; waiting %ds in the queue", exc.message, delay)
        self._hand_back(step, job)
        job.launch_started_at = None
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

    @staticmethod
    def _hand_back(step: str, job: Job) -> None:
        """A launch going back to the queue (its retry, or its wait for a slot) hands
        its claim to the delivery that comes next, which then need not wait for this
        one's lease to expire (scorefleet.storage.ledger: Ledger.release)."""
        holder, job.claim_holder = job.claim_holder, None
        if step != "launch" or not holder:
            return
        try:
            runtime.ledger().release(job, holder)
        except Exception as exc:  # the next delivery waits for the lease instead
            log.warning("could not hand the claim back (%s): its lease has to expire", exc)

    def _retry_or_give_up(self, step: str, job: Job, exc: Exception) -> None:
        s = runtime.settings()
        retries = int(self.request.retries or 0)
        kind, message = describe(exc)
        if is_transient(exc) and retries < s.retries.max:
            delay = backoff_delay(retries)
            log.warning(
                "%s failed (%s: %s); retry %d of %d in %ds",
                step,
                kind,
                message,
                retries + 1,
                s.retries.max,
                delay,
            )
            self._hand_back(step, job)
            try:
                # countdown=0: no ETA (held in worker memory); SQS holds it instead.
                raise self.retry(
                    exc=exc, countdown=0, max_retries=s.retries.max, delay_seconds=delay
                )
            except Retry:
                raise
            except Exception as publish_exc:
                log.error(
                    "could not schedule the retry (%s); handing the message back", publish_exc
                )
                raise Reject(publish_exc, requeue=True) from exc
        if not isinstance(exc, PipelineError):
            log.error("%s failed with an unexpected error", step, exc_info=exc)
        job.failure = job.failure or Failure(
            step=step,
            kind=kind,
            message=message,
            attempts=retries + 1,
            model_logs=getattr(exc, "model_logs", "") or "",
        )
        tail = failure_tail(job, step, app=self.app)
        if tail is not None:
            try:
                tail.apply_async()
            except Exception as publish_exc:
                log.error(
                    "could not queue the failure handling (%s); handing the message back",
                    publish_exc,
                )
                raise Reject(publish_exc, requeue=True) from exc
        log.warning("%s gave up: %s: %s", step, kind, message)
        raise StepFailed(f"{kind}: {message}") from exc


def _job_from(payload: Any) -> Job:
    try:
        return Job.from_dict(payload)
    except (TypeError, ValueError, AttributeError) as exc:
        log.error("refused a task message whose argument is not a job: %s", exc)
        raise Untrusted(f"not a job: {exc}") from exc


# ---------------------------------------------------------------------- steps
@shared_task(name="tasks.launch", bind=True, base=PipelineStep)
def launch(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Claim the file (duplicates stop here) and start its model container."""

    def body(j: Job, hb: Heartbeat) -> Job:
        s = runtime.settings()
        if not j.claim_owner and not runtime.backend().has_room(s.models.spec(j.model_image)):
            # before claiming: a launch that has to wait costs nothing but its message
            raise AtCapacity("no free model slot (SCOREFLEET_MAX_LIVE_MODELS)")
        owner = j.claim_owner or delivery_id(self)
        holder = uuid.uuid4().hex
        ledger = runtime.ledger()
        claim = ledger.claim(
            j,
            owner,
            s.broker.visibility_timeout,
            continuing=self.request.retries > 0,
            holder=holder,
        )
        if claim is Claim.HELD:
            j.claim_owner = owner  # the next delivery is of this launch too
            left = ledger.lease_left(j.pipeline_id)
            raise LeaseHeld(
                f"another delivery of this launch holds the run's lease for {left:.0f}s more",
                delay=min(900, int(left) + random.randint(1, 3)),
            )
        if claim is not Claim.CLAIMED:
            log.info("not running %s again: %s", j.source, claim.value)
            self.request.chain = None  # the other delivery (or the finished run) owns it
            j.skipped = claim.value
            return j
        j.claim_owner, j.claim_holder = owner, holder  # kept if the launch has to wait its turn
        if not j.launch_started_at:
            metrics.FILES_STARTED.inc()
        validate(s, j)
        spec = s.models.spec(j.model_image)
        # an empty, header-only or binary file, a Parquet file whose footer is bad,
        # columns that are not the file's: all fail here, before any container starts
        rows = preflight(j, spec)
        if rows == 0:
            log.info("the file has no rows: its output needs no model")
            j.handle = {"released": True}  # nothing for teardown to stop
            return j
        j.launch_started_at = j.launch_started_at or time.time()
        ep = runtime.backend().launch(j, spec)
        j.endpoint, j.handle, j.model_ready_at = ep.url, ep.handle, time.time()
        log.info("model %s ready at %s after %d ms", j.model_image, ep.url, j.model_start_ms)
        metrics.MODEL_START.observe((j.model_start_ms or 0) / 1000)
        return j

    return self.run_step("launch", job, body, lease=True)


@shared_task(name="tasks.score", bind=True, base=PipelineStep)
def score(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Stream the file through the model into a staging object."""

    def body(j: Job, hb: Heartbeat) -> Job:
        if j.skipped:
            return j
        s = runtime.settings()
        validate(s, j)  # the image, cluster and namespace: a model may be started again
        spec = s.models.spec(j.model_image)
        staging = staging_location(s, j.run_id)
        ledger = runtime.ledger()
        # registered (with a lease the heartbeat renews) before its upload exists
        ledger.register_writer(j, staging.key, s.broker.visibility_timeout)
        hb.writer = staging.key
        s3 = runtime.s3()
        described = data_source.describe(s3, j, spec.extra)
        output = described.options.output
        reader = data_source.open_reader(s3, j, described, read_limits(s, spec), _limits(s))
        # a Parquet file with no rows: its (empty) output needs no model
        empty = described.options.input is Format.PARQUET and reader_rows(reader) == 0
        client = None if empty else _ready_client(j, spec)
        if not first_delivery(self):
            # uploads of earlier attempts whose workers died: their leases expired
            # (a live attempt's upload is never touched, however old)
            s3io.abort_dead_uploads(
                runtime.s3(),
                staging_prefix(s, j.run_id),
                lambda: ledger.writers(j.pipeline_id),
                unregistered_after=s.broker.visibility_timeout,
            )
        progress = RunProgress(ledger, j, described.size, read=lambda: reader.bytes_in)
        # rows the model may refuse: kept aside (on disk past a few MB) for the .rejected
        budget = budget_for(
            s.scoring.max_rejected_rows, spec.max_rejected_rows, j.max_rejected_rows
        )
        spool: Any = None
        rejects = None
        if budget.enabled:
            spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed below
            rejects = RowRejects(budget, spool, fraction_read=progress.fraction_read)
        try:
            with s3io.MultipartWriter(s3, staging, content_type=output.media_type) as sink:
                stats = score_stream(
                    reader,
                    client.score if client else no_model,
                    sink,
                    output,
                    max_in_flight=s.scoring.max_in_flight,
                    total_bytes=described.size,
                    checkpoint=hb.check,
                    progress=progress.update,
                    rejects=rejects,
                )
                if hb.superseded:
                    sink.abort()
                    log.warning("a newer run of this file took over; this run stops")
                    j.skipped = "superseded"
                    return j
                if spool is not None and stats.rejected:
                    spool.seek(0)
                    runtime.s3().upload_fileobj(
                        spool, staging.bucket, rejected_staging_key(staging.key)
                    )
                sink.complete()
        finally:
            if client is not None:
                client.close()
            if spool is not None:
                spool.close()
        if rejects is not None and stats.rejected:
            log.warning(
                "the model refused %d row(s), set aside in the .rejected (budget %s; %d extra "
                "model calls to find them)",
                stats.rejected,
                budget,
                rejects.extra_calls,
            )
        j.rejected_rows = stats.rejected
        j.staging_key, j.rows, j.score_seconds = staging.key, stats.rows, stats.seconds
        j.output_type = output.media_type
        j.output_bytes = sink.bytes_written
        progress.done(stats)
        log.info(
            "scored %d rows in %d mini-batches in %.2fs", stats.rows, stats.batches, stats.seconds
        )
        # Warm mode: park the model now, so the next file of its image can have it,
        # rather than after publishing (tasks.teardown then has nothing left to do).
        # Otherwise teardown stops it after publishing: stopping a model can take a
        # moment, and the output should not wait for it.
        if s.launch.warm_idle_seconds > 0:
            try:
                runtime.backend().teardown(j)
                j.handle["released"] = True
            except Exception as exc:  # teardown will try again
                log.warning("could not release the model early: %s", exc)
        return j

    return self.run_step("score", job, body, lease=True)


def preflight(j: Job, spec: ModelSpec) -> int | None:
    """What the file's first bytes (CSV, JSON Lines) or footer (Parquet) show, before
    any container starts: BadInput, or the number of rows when known (Parquet)."""
    s, s3 = runtime.settings(), runtime.s3()
    described = data_source.describe(s3, j, spec.extra)
    return data_source.preflight(s3, j, described, read_limits(s, spec), _limits(s))


def read_limits(s: Any, spec: Any) -> ReadLimits:
    return ReadLimits(
        max_bytes=s.scoring.max_payload_bytes,
        max_group_bytes=MAX_ROW_GROUP_BYTES,
        header_mode=s.scoring.csv_header,
        send_header=spec.send_header,
    )


def _limits(s: Any) -> compression.Limits:
    return compression.Limits(s.scoring.max_expanded_bytes, s.scoring.max_expansion_ratio)


def _ready_client(j: Job, spec: ModelSpec) -> ModelProtocol:
    """The run's model in its protocol; starts the model again if it has died. The
    endpoint is the one the backend recorded for this run, never the job's."""
    s = runtime.settings()
    limits = CallLimits(
        timeout=s.scoring.model_timeout,
        pool_size=s.scoring.max_in_flight,
        max_answer_ratio=s.scoring.max_answer_ratio,
        max_answer_floor=s.scoring.max_answer_floor_bytes,
    )
    backend = runtime.backend()
    url = backend.endpoint(j)
    client = open_protocol(url or "http://127.0.0.1:1", spec, limits)
    if url and client.ready(2.0):
        j.endpoint = url
        return client
    client.close()
    if url and backend.is_alive(j):
        raise ModelUnavailable(
            "the model is running but does not answer "
            + protocol_for(spec.protocol).describe_readiness(spec)
        )
    log.warning("the model of this run is gone; starting it again")
    ep = backend.launch(j, spec)
    j.endpoint, j.handle = ep.url, ep.handle
    return open_protocol(ep.url, spec, limits)


@shared_task(name="tasks.upload", bind=True, base=PipelineStep)
def upload(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Publish ``<name>.scoreout`` (or ``<name>.error`` if the job failed), once.

    Once: the outcome is recorded in the run's ledger record first, and only the
    scoring attempt that recorded it publishes it; a redelivered or retried upload
    of that attempt looks for its output before copying it again, and a copy of the
    chain (a worker killed between sending a step and acknowledging its own message)
    publishes nothing. A run that was superseded (a forced rerun took over) or whose
    source has since been replaced by a newer version publishes nothing either: the
    newer run publishes its own outcome.
    """

    def body(j: Job, hb: Heartbeat) -> Job:
        s, s3, ledger = runtime.settings(), runtime.s3(), runtime.ledger()
        staging = S3Uri(s.storage.state_uri.bucket, j.staging_key) if j.staging_key else None
        rec = ledger.get(j.pipeline_id)
        if j.skipped:
            pass
        elif rec is not None and rec.run_id != j.run_id:
            log.warning("a newer run of this file took over; not publishing")
            j.skipped = "superseded"
        elif (newer := outcome.newer_source(s3, j)) is not None:
            log.warning("not publishing: the file was replaced since (%s)", newer)
            ledger.finish(j, "superseded", None, seen=rec)
            j.skipped = "source replaced"
        elif j.failure is not None or staging is not None:
            _publish(j, staging, rec)
        if staging is not None and j.skipped == PUBLISHED_ELSEWHERE:
            # only its own: the publisher may not have copied its staging object yet
            s3io.delete_quietly(s3, staging)
        elif staging is not None:  # this attempt's staging object, and any of a copy's
            s3io.delete_prefix(s3, staging_prefix(s, j.run_id))
        return j

    return self.run_step("upload", job, body)


def _publish(j: Job, staging: S3Uri | None, rec: Record | None) -> None:
    """Record how the run ended (``rec``: its record as just read), then publish the
    ``.error`` or the ``.scoreout`` if this attempt is the one to (Ledger.record_outcome)."""
    s, s3 = runtime.settings(), runtime.s3()
    failed = j.failure is not None
    dest = (
        outcome.error_location_or_none(s, j.source)
        if failed
        else outcome.scoreout_location(s, j.source)
    )
    verdict = runtime.ledger().record_outcome(
        j,
        "failed" if failed else "published",
        str(dest) if dest else None,
        j.staging_key or NO_OUTPUT,
        seen=rec,
    )
    if verdict is Publication.SUPERSEDED:
        log.warning("a newer run of this file took over; not publishing")
        j.skipped = "superseded"
        return
    if verdict is Publication.DUPLICATE:
        # a copy of this run's chain (see scorefleet.storage.ledger) got there first
        log.info("another attempt of this run published its outcome; not publishing")
        j.skipped = PUBLISHED_ELSEWHERE
        return
    again = verdict is Publication.AGAIN  # this attempt recorded it before: look first
    if j.failure is not None:
        if not j.failure.model_logs and j.failure.step in {"launch", "score"}:
            try:
                j.failure.model_logs = runtime.backend().logs(j, s.models.log_lines)
            except Exception as exc:
                log.warning("could not read the model's logs: %s", exc)
        published = outcome.publish_error(s, s3, j, j.failure, maybe_done=again)
        j.published = str(published) if published else None
        log.warning("published %s", published)
        if not again:
            metrics.FILES_FAILED.labels(j.failure.step, j.failure.kind).inc()
    elif staging is not None:
        j.published = str(outcome.publish_scoreout(s, s3, j, staging, maybe_done=again))
        log.info("published %s (%d rows)", j.published, j.rows or 0)
        if not again:
            metrics.FILES_PUBLISHED.inc()
            metrics.ROWS_SCORED.inc(j.rows or 0)
            metrics.ROWS_REJECTED.inc(j.rejected_rows)


@shared_task(name="tasks.teardown", bind=True, base=PipelineStep)
def teardown(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Remove the run's model container (runs after success and failure alike)."""

    def body(j: Job, hb: Heartbeat) -> Job:
        removed = False if j.handle.get("released") else runtime.backend().teardown(j)
        total = time.time() - (j.launch_started_at or j.enqueued_at)
        log.info(
            "done: %s; model %s; %.0f ms since launch (model start %s ms), %.0f ms since enqueue",
            j.published or j.skipped or "nothing published",
            "released after scoring" if j.handle.get("released") else f"stopped: {removed}",
            total * 1000,
            j.model_start_ms,
            (time.time() - j.enqueued_at) * 1000,
        )
        return j

    return self.run_step("teardown", job, body)


# --------------------------------------------------------------- operations
@shared_task(name="tasks.rescore", bind=True, acks_late=True, max_retries=5)
def rescore(
    self: Task,
    uri: str,
    model_image: str | None = None,
    k8s_cluster: str | None = None,
    k8s_namespace: str | None = None,
    force: bool = True,
) -> dict[str, Any]:
    """Rerun a file by hand: ``celery -A workers.app call tasks.rescore --args '["s3://b/k"]'``.

    Uses the object's current version and tags; keyword arguments override the tags.
    ``force`` (default) scores it even if it was already scored.
    """
    s, s3 = runtime.settings(), runtime.s3()
    try:
        source = S3Uri.parse(uri)
    except ValueError as exc:
        raise Rejected(f"{uri!r} is not an s3:// URI: {exc}") from exc
    with logctx.bind("-", uri):
        try:
            head = s3io.head(s3, source)
        except Exception as exc:
            if is_transient(exc):
                raise self.retry(exc=exc, countdown=backoff_delay(self.request.retries)) from exc
            raise
        if head is None:
            raise Rejected(f"{uri} does not exist")
        pid_job = job_for_object(
            s,
            s3,
            source,
            identity_of(head),
            overrides={
                "model_image": model_image,
                "k8s_cluster": k8s_cluster,
                "k8s_namespace": k8s_namespace,
            },
            force=force,
        )
        if force:
            pid_job.run_id = rerun_id(pid_job.pipeline_id)
        elif outcome.already_scored(s, s3, pid_job):
            log.info("%s was already scored for this version; not rerunning it", uri)
            return {"run_id": pid_job.run_id, "skipped": "already scored"}
        try:
            validate(s, pid_job)
        except Rejected as exc:
            dest = outcome.publish_error(
                s, s3, pid_job, Failure(step="enqueue", kind=exc.kind, message=exc.message)
            )
            log.warning("rerun refused: %s (%s)", exc.message, dest)
            return {"run_id": pid_job.run_id, "rejected": exc.message, "error_file": str(dest)}
        first = enqueue(self.app, pid_job)
        log.info("rerun of %s queued as %s with %s", uri, pid_job.run_id, pid_job.model_image)
        return {"run_id": pid_job.run_id, "first_task": first, "model_image": pid_job.model_image}


@shared_task(name="tasks.reap", bind=True, ignore_result=True)
def reap(self: Task) -> list[str]:
    """Remove model containers of finished runs and those older than the bound."""
    s = runtime.settings()
    removed = runtime.backend().reap(s.launch.reap_max_age, runtime.ledger().is_finished)
    if removed:
        log.warning(
            "reaper removed %d model container(s) left behind: %s", len(removed), ", ".join(removed)
        )
    return removed
