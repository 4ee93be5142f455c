"""``tasks.score``: stream the file through the model into a staging object."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from celery import shared_task

from scorefleet.errors import (
    Continues,
    ModelUnavailable,
    MustWait,
    PipelineError,
    describe,
    is_transient,
)
from scorefleet.job import Job, Output, SkipReason
from scorefleet.settings import ModelSpec
from scorefleet.storage import s3io
from scorefleet.storage.ledger import staging_location, staging_prefix
from scorefleet.submission import validate
from tasks.base import STEP_LOGGER, PipelineStep, Step, first_delivery
from tasks.inputs import expansion_limits, read_limits
from workers.backends import replicas
from workers.backends.base import Endpoint
from workers.process import metrics
from workers.process.heartbeat import Heartbeat
from workers.runtime import WorkerRuntime
from workers.scoring import resume
from workers.scoring.attempt import Attempt, Ending
from workers.scoring.contract import Contract, seen
from workers.scoring.engine import no_model, reader_rows
from workers.scoring.formats import source as data_source
from workers.scoring.preview import declared_for, first_batch_check
from workers.scoring.progress import RunProgress
from workers.scoring.protocols import CallLimits, ModelProtocol, open_protocol, protocol_for
from workers.scoring.rejects import budget_for
from workers.scoring.replicaset import ReplicaSet, with_replica_logs

log = logging.getLogger(STEP_LOGGER)

#: What scores a file: one model's protocol client, or several replicas as one.
ModelClient = ModelProtocol | ReplicaSet

#: The score step renews the run's lease (and its upload's) while it works. Going
#: back to the queue (its time is up, it waits for a dead attempt's lease to end, or
#: for room for its model), it counts a hand-over: its next delivery looks for the
#: parts committed so far, although its message is a first delivery.
SCORE = Step("score", lease=True, on_wait=lambda j: replace(j, handovers=j.handovers + 1))


@shared_task(name="tasks.score", bind=True, base=PipelineStep)
def score(self: PipelineStep, job: dict[str, Any]) -> Any:
    """Stream the file through the model into a staging object.

    A delivery that is not the message's first (a redelivery after a worker died, a
    retry) or that continues a step that handed the file over takes the file up from
    its last committed part when everything still holds (workers/scoring/resume.py);
    a step that reaches SCOREFLEET_MAX_STEP_SECONDS hands the file to a continuation
    of itself (issue 26)."""

    def body(rt: WorkerRuntime, j: Job, hb: Heartbeat) -> Job:
        if j.skipped:
            return j
        s = rt.settings
        validate(s, j)  # the image, cluster and namespace: a model may be started again
        spec = s.models.spec(j.model_image)
        lim = read_limits(s, spec)
        opened = data_source.Opened.get(rt.s3, j, spec.extra)
        described = opened.described
        # rows the model may refuse: kept aside (on disk past a few MB) for the .rejected
        budget = budget_for(
            s.scoring.max_rejected_rows, spec.max_rejected_rows, j.max_rejected_rows
        )
        token = uuid.uuid4().hex  # this delivery, as the writer of its upload
        options = resume.fingerprint(described, lim, spec, str(budget))
        source = resume.source_of(j, described)
        again = j.handovers > 0 or not first_delivery(self)
        plan = None
        if again and described.options.input.resumes and described.options.output.resumes:
            plan = resume.find(rt.s3, rt.ledger, s, j, source=source, options=options, token=token)
        staging = plan.staging if plan is not None else staging_location(s, j.run_id)
        hb.writer = staging.key  # its lease renewed by the heartbeat, once registered
        at = plan.entry.at if plan is not None else None
        reader = opened.reader(rt.s3, j, lim, expansion_limits(s), start=at)
        if plan is not None:
            log.warning(
                "taking the file up at data row %d, after its %d committed part(s) (%s)",
                plan.entry.rows + plan.entry.rejected + 1,
                plan.entry.parts,
                "a continuation" if j.handovers else "its earlier attempt stopped",
            )
        # a file whose footer says it has no rows (Parquet): its empty output needs no model
        empty = plan is None and reader_rows(reader) == 0
        client = None
        # the model's contract: the catalog's, and the model's own once it is ready;
        # the first mini-batch is checked against both before it is sent
        contracts: list[Contract] = []
        declared = declared_for(spec, rt.s3)
        if declared is not None:
            contracts.append(declared)
        if not empty:
            client, j = ready_client(rt, j, spec)
            hb.advance(j)  # a model started again is this run's, also if scoring fails
            try:
                observed = client.model_contract()
            except Exception:
                client.close()
                raise
            if observed is not None:
                seen.remember(rt.s3, s, j.model_image, observed, j.run_id)
                contracts.append(observed)
        if again:
            # uploads of earlier attempts whose workers died: their leases expired
            # (a live attempt's upload is never touched, however old; one taken up
            # here has a live lease again)
            s3io.abort_dead_uploads(
                rt.s3,
                staging_prefix(s, j.run_id),
                lambda: rt.ledger.writers(j.pipeline_id),
                unregistered_after=s.broker.visibility_timeout,
            )
        progress = RunProgress(
            rt.ledger,
            j,
            described.size,
            read=lambda: reader.bytes_in,
            replicas=len(client.replicas) if isinstance(client, ReplicaSet) else 1,
        )
        attempt = Attempt(
            rt.s3,
            rt.ledger,
            j,
            staging,
            described=described,
            budget=budget,
            progress=progress,
            lease_seconds=s.broker.visibility_timeout,
            token=token,
            options=options,
            source=source,
            plan=plan,
            stop=lambda: hb.due,
        )
        try:
            ending, stats = attempt.run(
                reader,
                client.score if client else no_model,
                # the bound per model, for each of its replicas
                max_in_flight=client.max_in_flight if client else s.scoring.max_in_flight,
                # an attempt that can hand its file over does so at MAX_STEP_SECONDS
                checkpoint=hb.check if attempt.checkpointer is None else hb.check_cap,
                superseded=lambda: hb.superseded,
                before_first=first_batch_check(contracts, reader) if contracts else None,
            )
        except Exception as exc:
            if attempt.progressed and is_transient(exc) and not isinstance(exc, MustWait):
                # it committed parts before it failed (say its model pod reached its
                # deadline): the next delivery goes on from them, without a retry
                # spent, so a file that makes progress never runs out of retries
                kind, message = describe(exc)
                raise Continues(
                    f"{kind} after {attempt.progressed} part(s) committed here ({message}); "
                    "going on from the last",
                    delay=2,
                ) from exc
            if isinstance(exc, PipelineError):
                # the .error quotes the log of the replica that failed, not replica 0's
                with_replica_logs(
                    exc,
                    lambda i, n: replicas.for_replica(rt.backend.logs, i, j, n),
                    s.models.log_lines,
                )
            raise
        finally:
            if client is not None:
                client.close()
            attempt.close()
        if ending is Ending.SUPERSEDED:
            log.warning("a newer run of this file took over; this run stops")
            return replace(j, skipped=SkipReason.SUPERSEDED)
        if ending is Ending.TAKEN_OVER:
            return replace(j, skipped=SkipReason.TAKEN_OVER)
        if ending is Ending.HANDED_OVER:
            raise Continues(
                f"handing the file to a continuation of this step after {hb.elapsed:.0f}s "
                f"(SCOREFLEET_MAX_STEP_SECONDS={s.scoring.max_step_seconds:g}): "
                f"{stats.rows:,d} rows scored so far"
                + (f", {attempt.handed.parts} part(s) committed" if attempt.handed else ""),
                delay=1,
            )
        if attempt.rejects is not None and stats.rejected:
            log.warning(
                "the model refused %d row(s), set aside in the .rejected (budget %s; %d extra "
                "model calls to find them)",
                stats.rejected,
                budget,
                attempt.rejects.extra_calls,
            )
        output = described.options.output
        j = replace(
            j,
            output=Output(
                staging_key=staging.key,
                rows=stats.rows,
                rejected_rows=stats.rejected,
                media_type=output.media_type,
                rejected_media_type=(
                    described.options.input.media_type if stats.rejected else None
                ),
                size=attempt.sink.bytes_written,
                seconds=stats.seconds,
            ),
        )
        progress.done(stats)
        log.info(
            "scored %d rows in %d mini-batches in %.2fs", stats.rows, stats.batches, stats.seconds
        )
        # A backend that keeps models (warm mode) lets this one go now, so the next
        # file of its image can have it, rather than after publishing (tasks.teardown
        # then has nothing left to do). Otherwise teardown stops it after publishing:
        # stopping a model can take a moment, and the output should not wait for it.
        try:
            if rt.backend.release(j):
                j = replace(j, model=replace(j.model, released=True))
        except Exception as exc:  # teardown will try again
            log.warning("could not release the model early: %s", exc)
        return j

    return self.run_step(SCORE, job, body)


def ready_client(rt: WorkerRuntime, j: Job, spec: ModelSpec) -> tuple[ModelClient, Job]:
    """The run's model in its protocol -- its replicas as one (a
    :class:`~workers.scoring.replicaset.ReplicaSet`) when it has several -- and the job
    with what was learned about them; starts a replica again if it has died (or takes
    one from the warm pool, where the launch left it). The endpoints are the ones the
    backend recorded for this run, never the job's."""
    s = rt.settings
    limits = CallLimits(
        timeout=s.scoring.model_timeout,
        pool_size=s.scoring.max_in_flight,
        max_answer_ratio=s.scoring.max_answer_ratio,
        max_answer_floor=s.scoring.max_answer_floor_bytes,
    )
    count = replicas.plan(spec, j).count
    # the replicas the launch started (a message's numbers, bounded by the catalog);
    # none known (one model, or the launch left them to the warm pool): all of them
    numbers = sorted({i for i in j.model.replicas if i < count}) or list(range(count))
    started = replicas.start(
        lambda i: _ready_replica(rt, j, spec, limits, i), numbers, image=j.model_image
    )
    relaunched = [(i, ep) for i, (_client, ep) in started if ep is not None]
    model = replace(j.model, replicas=tuple(i for i, _ in started) if count > 1 else ())
    if relaunched:
        first = relaunched[0][1]
        # one started here: the file waited for it from launch on (a warm one was ready)
        ready_at = j.model.ready_at if all(ep.warm for _, ep in relaunched) else time.time()
        model = replace(
            model,
            endpoint=first.url,
            handle=replicas.merged_handle(relaunched),
            ready_at=ready_at,
            image_id=first.image_id,
        )
    else:
        model = replace(model, endpoint=started[0][1][0].endpoint)
    j = replace(j, model=model)
    if len(started) == 1:
        return started[0][1][0], j
    metrics.MODEL_REPLICAS.observe(len(started))
    log.info("scoring with %d model replicas (%s)", len(started), j.model_image)
    return ReplicaSet([(i, client) for i, (client, _ep) in started]), j


def _ready_replica(
    rt: WorkerRuntime, j: Job, spec: ModelSpec, limits: CallLimits, replica: int
) -> tuple[ModelProtocol, Endpoint | None]:
    """One replica's client, ready; the Endpoint when it had to be started (again)."""
    backend, on = rt.backend, replicas.for_replica
    url = on(backend.endpoint, replica, j)
    client = open_protocol(url or "http://127.0.0.1:1", spec, limits)
    if url and client.ready(2.0):
        return client, None
    client.close()
    which = f" replica {replica}" if replica else ""
    if url and on(backend.is_alive, replica, j):
        raise ModelUnavailable(
            f"the model{which} is running but does not answer "
            + protocol_for(spec.protocol).describe_readiness(spec)
        )
    if j.model.pooled and not url:
        # the launch parked the model (or found one parked): take one
        log.info("taking a warm model of %s", j.model_image)
    else:
        log.warning("the model%s of this run is gone; starting it again", which)
    ep = on(backend.launch, replica, j, spec)
    return open_protocol(ep.url, spec, limits), ep
