"""The one path from "an object arrived" to "its chain is queued", shared by the
Lambda (a notification) and the sweep (a file whose notification never came):
identify the upload, read its tags, apply the fallbacks, validate (a refused file
gets its ``.error`` here), mark the run queued, send the chain. The run record
decides duplicates later (scorefleet.storage.ledger: Ledger.claim), so sending a chain twice
for one upload scores it once.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError
from celery import Celery

from scorefleet import logctx
from scorefleet.chain import enqueue, send_refusal
from scorefleet.errors import Rejected
from scorefleet.job import Failure, Job
from scorefleet.s3uri import S3Uri
from scorefleet.settings import Settings
from scorefleet.storage import outcome, s3io
from scorefleet.storage.ledger import Ledger
from scorefleet.submission import MisnamedTag, identify, job_for_object, validate

log = logging.getLogger("scorefleet.intake")


class Intake(enum.Enum):
    ENQUEUED = "enqueued"
    REJECTED = "rejected"  # refused (tags, image, namespace): its .error is written
    GONE = "gone"  # replaced or deleted before it could be queued
    SKIPPED = "skipped"  # the caller's ``skip`` said why (the sweep: a run in progress)


class NotInput(enum.Enum):
    """Why an object is not a file to score."""

    OURS = "written by the pipeline itself"
    OUTSIDE = "not a file under the input prefix"


def not_an_input(settings: Settings, source: S3Uri) -> NotInput | None:
    """``None`` if ``source`` is a file to score; else why not (an event about it,
    or a key the sweep lists, is ignored)."""
    if any(p.contains(source) for p in settings.storage.ignored_prefixes()):
        return NotInput.OURS
    if not settings.storage.input_uri.contains(source) or source.key.endswith("/"):
        return NotInput.OUTSIDE
    return None


def refuse(
    settings: Settings, s3: s3io.S3Client, app: Celery | None, job: Job, exc: Rejected
) -> S3Uri | None:
    """A file refused before any work (the Lambda, the sweep, ``tasks.rescore``): its
    ``.error``, a run record that says so (``scorefleet runs --failed``, ``scorefleet
    status``) and, with ``app``, its line in Flower (:func:`scorefleet.chain.send_refusal`).
    Where its ``.error`` is (None: outside the input prefix)."""
    where = outcome.publish_error(
        settings, s3, job, Failure(step="enqueue", kind=exc.kind, message=exc.message)
    )
    Ledger(settings, s3).refused(job, str(where) if where else None, f"{exc.kind}: {exc.message}")
    if app is not None:
        try:
            send_refusal(app, job, exc.kind, exc.message)
        except Exception as send_exc:  # the .error and the run record say it already
            log.warning("could not show the refusal in Flower: %s", send_exc)
    return where


@dataclass(frozen=True)
class Intaken:
    verdict: Intake
    job: Job | None = None
    detail: str = ""


def take_in(
    settings: Settings,
    s3: s3io.S3Client,
    app: Celery | None,
    source: S3Uri,
    *,
    version_id: str | None = None,
    etag: str | None = None,
    size: int | None = None,
    sequencer: str | None = None,
    skip: Callable[[Job], str | None] | None = None,
    dry_run: bool = False,
) -> Intaken:
    """Queue the upload of ``source`` an event (or the sweep's listing) is about.

    ``skip`` sees the job before anything is written and may name a reason not to
    queue it. ``dry_run``: decide, write nothing, send nothing. Transient failures
    (S3 or SQS unavailable) are raised for the caller to retry.
    """
    try:
        identity = identify(s3=s3, source=source, version_id=version_id, etag=etag, size=size)
        if identity is None:
            log.warning(
                "ignoring %s: replaced or deleted before it could be queued (a newer "
                "upload is scored on its own notification)",
                source,
            )
            return Intaken(Intake.GONE, detail="replaced or deleted")
        misnamed: MisnamedTag | None = None
        try:
            job = job_for_object(settings, s3, source, identity, sequencer=sequencer)
        except MisnamedTag as exc:
            job, misnamed = exc.job, exc
    except ClientError as exc:
        if s3io.error_code(exc) in {"NoSuchKey", "NoSuchVersion", "404"}:
            log.warning("ignoring %s: deleted before it could be queued", source)
            return Intaken(Intake.GONE, detail="deleted")
        raise
    with logctx.bind(job.run_id, str(source)):
        reason = skip(job) if skip is not None else None
        if reason:
            return Intaken(Intake.SKIPPED, job, reason)
        try:
            if misnamed is not None:
                raise misnamed
            validate(settings, job)
        except Rejected as exc:
            if not dry_run:
                where = refuse(settings, s3, app, job, exc)
                log.warning("rejected: %s (error file: %s)", exc.message, where)
            return Intaken(Intake.REJECTED, job, exc.message)
        if dry_run or app is None:
            return Intaken(Intake.ENQUEUED, job, "dry run: not sent")
        Ledger(settings, s3).mark_queued(job)
        first = enqueue(app, job)
        log.info("enqueued %s with %s (first task %s)", source, job.model_image, first)
        return Intaken(Intake.ENQUEUED, job, first)
