"""The operators' tasks: ``tasks.rescore`` (rerun a file by hand) and ``tasks.reap``
(beat: remove what dead workers left behind)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from scorefleet import logctx
from scorefleet.chain import enqueue
from scorefleet.errors import Rejected, is_transient
from scorefleet.job import Failure
from scorefleet.s3uri import S3Uri
from scorefleet.storage import outcome, s3io
from scorefleet.submission import identity_of, job_for_object, validate
from tasks.base import RNG, STEP_LOGGER
from tasks.policies import compute_backoff
from workers import runtime

log = logging.getLogger(STEP_LOGGER)


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
            pid_job = pid_job.rerun()
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
    rt = runtime.current()
    removed = rt.backend.reap(rt.settings.launch.reap_max_age, rt.ledger.is_finished)
    if removed:
        log.warning(
            "reaper removed %d model container(s) left behind: %s", len(removed), ", ".join(removed)
        )
    return removed
