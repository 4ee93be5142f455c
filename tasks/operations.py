"""The operators' tasks: ``tasks.rescore`` (rerun a file by hand), ``tasks.refused``
(a file refused before any work, shown in Flower) and ``tasks.reap`` (beat: remove
what dead workers left behind)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from scorefleet import logctx
from scorefleet.chain import REFUSED_TASK, enqueue
from scorefleet.errors import Rejected, is_transient
from scorefleet.intake import refuse
from scorefleet.s3uri import S3Uri
from scorefleet.storage import outcome, s3io
from scorefleet.submission import MisnamedTag, identity_of, job_for_object, validate
from tasks.base import RNG, STEP_LOGGER
from tasks.policies import compute_backoff
from workers import runtime
from workers.process import metrics

log = logging.getLogger(STEP_LOGGER)


@shared_task(name="tasks.rescore", bind=True, acks_late=True, max_retries=5, throws=(Rejected,))
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
    rt = runtime.current()
    s, s3 = rt.settings, rt.s3
    try:
        source = S3Uri.parse(uri)
    except ValueError as exc:
        raise Rejected(f"{uri!r} is not an s3:// URI: {exc}") from exc
    with logctx.bind("-", uri):
        try:
            head = s3io.head(s3, source)
        except Exception as exc:
            if is_transient(exc):
                delay = compute_backoff(
                    self.request.retries, s.retries.backoff, s.retries.backoff_max, RNG
                )
                raise self.retry(exc=exc, countdown=delay) from exc
            raise
        if head is None:
            raise Rejected(f"{uri} does not exist")
        misnamed: MisnamedTag | None = None
        try:
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
        except MisnamedTag as exc:
            pid_job, misnamed = exc.job, exc
        if force:
            pid_job = pid_job.rerun()
        elif outcome.already_scored(s, s3, pid_job):
            log.info("%s was already scored for this version; not rerunning it", uri)
            return {"run_id": pid_job.run_id, "skipped": "already scored"}
        try:
            if misnamed is not None:
                raise misnamed
            validate(s, pid_job)
        except Rejected as exc:
            # this task fails with the refusal: it is the file's line in Flower
            dest = refuse(s, s3, None, pid_job, exc)
            log.warning("rerun refused: %s (%s)", exc.message, dest)
            raise Rejected(f"{exc.message} (error file: {dest})") from None
        first = enqueue(self.app, pid_job)
        log.info("rerun of %s queued as %s with %s", uri, pid_job.run_id, pid_job.model_image)
        return {"run_id": pid_job.run_id, "first_task": first, "model_image": pid_job.model_image}


@shared_task(name=REFUSED_TASK, throws=(Rejected,), ignore_result=True)
def refused(uri: str, kind: str, message: str) -> None:
    """A file refused before any work (scorefleet.chain.send_refusal): its ``.error``
    and run record are written already. Fails with the refusal, so that the file
    has its failed line in Flower's task list, and counts it in the metrics."""
    with logctx.bind("-", uri):
        log.warning("%s was refused before any work: %s: %s", uri, kind, message)
    metrics.FILES_FAILED.labels("enqueue", kind).inc()
    raise Rejected(message)


@shared_task(name="tasks.reap", bind=True, ignore_result=True)
def reap(self: Task) -> list[str]:
    """Remove model containers of finished runs and those older than the bound."""
    rt = runtime.current()
    removed = rt.backend.reap(rt.settings.launch.reap_max_age, rt.ledger.is_finished)
    if removed:
        log.warning(
            "reaper removed %d model container(s) left behind: %s", len(removed), ", ".join(removed)
        )
    return removed
