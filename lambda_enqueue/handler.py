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

from lambda_enqueue.events import Item, ObjectEvent, UnknownEvent, decode
from tasks import logctx, outcome, s3io
from tasks.celeryconf import make_app
from tasks.chain import enqueue
from tasks.errors import Rejected
from tasks.job import Failure
from tasks.s3uri import S3Uri
from tasks.settings import Settings, load
from tasks.submission import job_for_object, validate

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
        setup_logging(settings.log_level)
        _runtime = Runtime(settings, s3io.client(settings.aws_region), make_app(settings))
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


def handle_object(rt: Runtime, ev: ObjectEvent, counts: Counts) -> None:
    settings = rt.settings
    source = S3Uri(ev.bucket, ev.key)
    if not ev.is_created:
        log.debug("ignoring %s for %s", ev.event_name, source)
        counts.ignored += 1
        return
    if any(p.contains(source) for p in settings.ignored_prefixes()):
        log.debug("ignoring %s: written by the pipeline itself", source)
        counts.ignored += 1
        return
    if not settings.input_uri.contains(source) or ev.key.endswith("/"):
        log.info("ignoring %s: not a file under %s", source, settings.input_uri)
        counts.ignored += 1
        return
    try:
        job = job_for_object(
            settings,
            rt.s3,
            source,
            version_id=ev.version_id,
            etag=ev.etag,
            size=ev.size,
            sequencer=ev.sequencer,
        )
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


def _handle_item(rt: Runtime, item: Item, counts: Counts) -> None:
    for note in item.notes:
        log.info("%s", note)
    for ev in item.events:
        handle_object(rt, ev, counts)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point."""
    return handle(event, runtime())


def handle(event: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    """Process one invocation's event with the given runtime (the local bridge and
    the tests pass their own)."""
    try:
        items, from_sqs = decode(event)
    except (UnknownEvent, KeyError, TypeError, ValueError) as exc:
        # Retrying cannot make an unreadable event readable: log it whole and move on.
        log.error("ignoring an event scorefleet cannot read (%s): %.2000r", exc, event)
        return {"enqueued": 0, "rejected": 0, "ignored": 1}
    counts = Counts()
    failed: list[str] = []
    for item in items:
        try:
            _handle_item(rt, item, counts)
        except Exception:
            if not from_sqs:
                raise  # Lambda retries the asynchronous invocation, then its DLQ/destination
            log.exception("record %s failed; SQS will deliver it again", item.message_id)
            failed.append(item.message_id or "")
    result: dict[str, Any] = {
        "enqueued": counts.enqueued,
        "rejected": counts.rejected,
        "ignored": counts.ignored,
    }
    if from_sqs:
        result["batchItemFailures"] = [{"itemIdentifier": m} for m in failed]
    return result
