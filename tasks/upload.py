"""``tasks.upload``: publish ``<name>.scoreout`` (or ``<name>.error``), once."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from celery import shared_task

from scorefleet.job import Job, SkipReason
from scorefleet.provenance import Provenance
from scorefleet.redact import redact
from scorefleet.s3uri import S3Uri
from scorefleet.storage import outcome, s3io
from scorefleet.storage.ledger import Publication, Record, RunState, staging_prefix
from tasks.base import STEP_LOGGER, PipelineStep, Step
from tasks.teardown import log_done
from workers.process import metrics
from workers.process.heartbeat import Heartbeat
from workers.runtime import WorkerRuntime
from workers.scoring.protocols import protocol_for

log = logging.getLogger(STEP_LOGGER)

#: The attempt name under which a run that has no output (it failed before its
#: scoring finished) records its ``.error``; see Ledger.record_outcome.
NO_OUTPUT = "no-output"

UPLOAD = Step("upload")


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

    def body(rt: WorkerRuntime, j: Job, hb: Heartbeat) -> Job:
        s, s3 = rt.settings, rt.s3
        key = j.output.staging_key
        staging = S3Uri(s.storage.state_uri.bucket, key) if key else None
        rec = rt.ledger.get(j.pipeline_id)
        cleaned = False  # the staging objects deleted with the publication
        if j.skipped:
            pass
        elif rec is not None and rec.run_id != j.run_id:
            log.warning("a newer run of this file took over; not publishing")
            j = replace(j, skipped=SkipReason.SUPERSEDED)
        elif (newer := outcome.newer_source(s3, j)) is not None:
            log.warning("not publishing: the file was replaced since (%s)", newer)
            rt.ledger.finish(j, RunState.SUPERSEDED, None, seen=rec)
            j = replace(j, skipped=SkipReason.SOURCE_REPLACED)
        elif j.failure is not None or staging is not None:
            j, cleaned = publish(rt, j, staging, rec, hb)
        if staging is not None and j.skipped is SkipReason.PUBLISHED_ELSEWHERE:
            # only its own: the publisher may not have copied its staging object yet
            s3io.delete_quietly(s3, staging)
        elif staging is not None and not cleaned:  # this attempt's, and any of a copy's
            s3io.delete_prefix(s3, staging_prefix(s, j.run_id))
        if j.model.released:
            # nothing is left for teardown to stop: the score step parked the model
            # (warm mode) or none was started (a file without rows). The chain ends
            # here, a queue hop fewer (issue 17); a failure's tail still queues teardown.
            self.request.chain = None
            log_done(j)
        return j

    return self.run_step(UPLOAD, job, body)


def provenance_of(rt: WorkerRuntime, j: Job) -> Provenance:
    """Where the run's outcome comes from (scorefleet/provenance.py): the image as run,
    what the backend knew of it, the protocol and the catalog entry as used."""
    spec = rt.settings.models.spec(j.model_image)
    return Provenance(
        model_image=j.model_image,
        model_image_id=j.model.image_id or "",
        protocol=protocol_for(spec.protocol).name,
        catalog_entry=spec.entry_id,
    )


def publish(
    rt: WorkerRuntime, j: Job, staging: S3Uri | None, rec: Record | None, hb: Heartbeat
) -> tuple[Job, bool]:
    """Record how the run ended (``rec``: its record as just read), then publish the
    ``.error`` or the ``.scoreout`` if this attempt is the one to (Ledger.record_outcome).
    The job with what was published (or why not), and whether the run's staging
    objects were deleted with the ``.scoreout``'s publication."""
    s, s3 = rt.settings, rt.s3
    failed = j.failure is not None
    dest = (
        outcome.error_location_or_none(s, j.source)
        if failed
        else outcome.scoreout_location(s, j.source)
    )
    prov = provenance_of(rt, j)
    verdict = rt.ledger.record_outcome(
        j,
        RunState.FAILED if failed else RunState.PUBLISHED,
        str(dest) if dest else None,
        j.output.staging_key or NO_OUTPUT,
        seen=rec,
        provenance=prov.record(),
    )
    if verdict is Publication.SUPERSEDED:
        log.warning("a newer run of this file took over; not publishing")
        return replace(j, skipped=SkipReason.SUPERSEDED), False
    if verdict is Publication.DUPLICATE:
        # a copy of this run's chain (see scorefleet.storage.ledger) got there first
        log.info("another attempt of this run published its outcome; not publishing")
        return replace(j, skipped=SkipReason.PUBLISHED_ELSEWHERE), False
    again = verdict is Publication.AGAIN  # this attempt recorded it before: look first
    failure = j.failure
    if failure is not None:
        if not failure.model_logs and failure.step in {"launch", "score"}:
            try:
                # masked before it rides on in the teardown's task message
                logs = redact(rt.backend.logs(j, s.models.log_lines))
                failure = replace(failure, model_logs=logs)
                j = hb.advance(replace(j, failure=failure))
            except Exception as exc:
                log.warning("could not read the model's logs: %s", exc)
        published = outcome.publish_error(s, s3, j, failure, maybe_done=again, provenance=prov)
        log.warning("published %s", published)
        if not again:
            metrics.FILES_FAILED.labels(failure.step, failure.kind).inc()
        return replace(j, published=str(published) if published else None), False
    if staging is not None:
        # this attempt's staging object, and any of a copy's: deleted with the file's
        # stale outcomes once published, in one request
        leftovers = tuple(s3io.list_prefix(s3, staging_prefix(s, j.run_id)))
        dest = outcome.publish_scoreout(
            s, s3, j, staging, maybe_done=again, then_delete=leftovers, provenance=prov
        )
        j = replace(j, published=str(dest))
        log.info("published %s (%d rows)", j.published, j.output.rows or 0)
        if not again:
            metrics.FILES_PUBLISHED.inc()
            metrics.ROWS_SCORED.inc(j.output.rows or 0)
            metrics.ROWS_REJECTED.inc(j.output.rejected_rows)
        return j, True
    return j, False
