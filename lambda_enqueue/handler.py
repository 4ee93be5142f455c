"""Lambda entry point: ``lambda_enqueue.handler.handler``.

For each new object under the input prefix: read its tags, apply the configured
fallbacks, validate, and enqueue its chain (by task name) with a deterministic id.
A file that is refused gets its ``.error`` right here. Events for the pipeline's
own outputs, deletions and ``s3:TestEvent`` are ignored.

Failures that a retry can fix (S3 or SQS unavailable) are raised: for SQS-triggered
invocations they are reported per record in ``batchItemFailures`` (the event source
mapping needs ``ReportBatchItemFailures``), otherwise Lambda retries the invocation.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from celery import Celery

from lambda_enqueue.events import Item, ObjectEvent, decode
from scorefleet import logctx
from scorefleet.celeryconf import make_app
from scorefleet.chain import enqueue
from scorefleet.errors import Rejected, is_transient
from scorefleet.job import Failure
from scorefleet.s3uri import S3Uri
from scorefleet.settings import Settings, load
from scorefleet.storage import outcome, s3io
from scorefleet.submission import identify, job_for_object, validate

log = logging.getLogger("scorefleet.lambda")


@dataclass
class Runtime:
    """What one Lambda container keeps between invocations."""

    settings: Settings
    s3: s3io.S3Client
    app: Celery


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 - one per Lambda container, reused across invocations
    if _runtime is None:
        settings = load()  # ConfigError names every bad variable
        setup_logging(settings.monitoring.log_level)
        _runtime = Runtime(settings, s3io.client(settings.aws.region), make_app(settings))
    return _runtime


def setup_logging(level: str) -> None:
    root = logging.getLogger("scorefleet")
    root.setLevel(level)
    if not root.handlers:
        h = logging.StreamHandler(sys.stdout)
        logctx.install(h)
        root.addHandler(h)
        root.propagate = False


@dataclass
class Counts:
    enqueued: int = 0
    rejected: int = 0
    ignored: int = 0
    unreadable: int = 0  # parts of the event that could not be read
    failed: int = 0  # files that could not be queued
    first_error: Exception | None = None


def handle_object(rt: Runtime, ev: ObjectEvent, counts: Counts) -> None:
    settings = rt.settings
    source = S3Uri(ev.bucket, ev.key)
    if not ev.is_created:
        log.debug("ignoring %s for %s", ev.event_name, source)
        counts.ignored += 1
        return
    if any(p.contains(source) for p in settings.storage.ignored_prefixes()):
        log.debug("ignoring %s: written by the pipeline itself", source)
        counts.ignored += 1
        return
    if not settings.storage.input_uri.contains(source) or ev.key.endswith("/"):
        log.info("ignoring %s: not a file under %s", source, settings.storage.input_uri)
        counts.ignored += 1
        return
    try:
        identity = identify(
            s3=rt.s3, source=source, version_id=ev.version_id, etag=ev.etag, size=ev.size
        )
        if identity is None:
            log.warning(
                "ignoring %s: replaced or deleted before it could be queued (a newer "
                "upload is scored on its own notification)",
                source,
            )
            counts.ignored += 1
            return
        job = job_for_object(settings, rt.s3, source, identity, sequencer=ev.sequencer)
    except ClientError as exc:
        if s3io.error_code(exc) in {"NoSuchKey", "NoSuchVersion", "404"}:
            log.warning("ignoring %s: deleted before it could be queued", source)
            counts.ignored += 1
            return
        raise
    with logctx.bind(job.run_id, str(source)):
        try:
            validate(settings, job)
        except Rejected as exc:
            where = outcome.publish_error(
                settings, rt.s3, job, Failure(step="enqueue", kind=exc.kind, message=exc.message)
            )
            log.warning("rejected: %s (error file: %s)", exc.message, where)
            counts.rejected += 1
            return
        first = enqueue(rt.app, job)
        log.info("enqueued %s with %s (first task %s)", source, job.model_image, first)
        counts.enqueued += 1


def _handle_item(rt: Runtime, item: Item, counts: Counts) -> bool:
    """Handle every event of one item, each on its own; True if the item must be
    seen again: a part could not be read, or a step failed (see :func:`handle`)."""
    for note in item.notes:
        log.info("%s", note)
    again = False
    for problem in item.problems:
        log.error("unreadable part of message %s: %s", item.message_id or "-", problem)
        counts.unreadable += 1
        again = True
    for ev in item.events:
        try:
            handle_object(rt, ev, counts)
        except Exception as exc:
            again = True
            counts.failed += 1
            counts.first_error = counts.first_error or exc
            if is_transient(exc):
                log.warning("%s/%s could not be queued yet: %s", ev.bucket, ev.key, exc)
            else:
                log.exception("%s/%s could not be queued", ev.bucket, ev.key)
    return again


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point."""
    return handle(event, runtime())


def handle(event: Any, rt: Runtime) -> dict[str, Any]:
    """Process one invocation's event with the given runtime (the local bridge and
    the tests pass their own).

    Every record is isolated: what one record holds (unreadable JSON, ``null``,
    nesting too deep, a field of the wrong type, an error while queueing it) never
    stops another. From SQS, a record that could not be read or queued is reported
    in ``batchItemFailures``: SQS delivers it again and, after ``maxReceiveCount``,
    moves it to the events dead-letter queue, where an operator sees it whole and
    can redrive it once the cause is fixed (a file's notification is never just
    dropped; its good files are queued each time, which the run records make
    harmless). Invoked directly (S3 -> Lambda), unreadable parts are logged and
    counted, and a failure to queue a file is raised so that Lambda retries.
    """
    items, from_sqs = decode(event)
    counts = Counts()
    failed: list[str] = []
    for item in items:
        if _handle_item(rt, item, counts):
            failed.append(item.message_id or "")
    result: dict[str, Any] = {
        "enqueued": counts.enqueued,
        "rejected": counts.rejected,
        "ignored": counts.ignored,
    }
    if counts.unreadable:
        result["unreadable"] = counts.unreadable
    if from_sqs:
        result["batchItemFailures"] = [{"itemIdentifier": m} for m in failed]
    elif counts.first_error is not None:
        raise counts.first_error  # Lambda retries the asynchronous invocation
    return result
