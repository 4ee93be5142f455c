"""The one place that builds a file's chain, used by the Lambda, the CLI and
``tasks.rescore``. Tasks are referenced by NAME only, so this module (and the
Lambda that imports it) needs no worker code.

Success path:  tasks.launch -> tasks.score -> tasks.upload -> tasks.teardown
A step that gives up starts the failure tail instead (see :func:`failure_tail`):
                tasks.upload (publishes the .error) -> tasks.teardown
so teardown runs whether the file succeeded or failed. Only a run with nothing left
to stop ends at upload (``tasks.upload`` drops the rest of the chain): in warm mode
the score step has parked the model already, or a file without rows started none.

Every step carries a short ``argsrepr``/``kwargsrepr`` (what Celery events, and so
Flower, show instead of the whole job): the file's S3 URI, and the image, cluster,
namespace and run id as a dict, so that Flower's task list reads one line per step
per file and can be searched by file name or ``kwargs:model_image=...``; a file
scored by several model replicas shows how many (``model_replicas``) from its score
step on.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, signature
from celery.canvas import Signature

from scorefleet.job import STEPS, Job, task_id


def describe_job(job: Job | dict[str, Any]) -> dict[str, str]:
    """``argsrepr``/``kwargsrepr`` of a step of ``job``."""
    d = job.to_dict() if isinstance(job, Job) else job
    shown: dict[str, Any] = {
        "model_image": d.get("model_image"),
        "k8s_cluster": d.get("k8s_cluster"),
        "k8s_namespace": d.get("k8s_namespace"),
        "run_id": d.get("run_id"),
    }
    replicas = d.get("model_replicas")
    if isinstance(replicas, list) and len(replicas) > 1:
        # the model replicas the launch started (issue 25): on the score step's line on
        shown["model_replicas"] = str(len(replicas))
    return {"argsrepr": f"s3://{d.get('bucket')}/{d.get('key')}", "kwargsrepr": repr(shown)}


def describe_step(task_name: str, payload: dict[str, Any]) -> dict[str, str]:
    """:func:`describe_job` for a message of a step whose first argument is a job;
    empty for anything else."""
    if task_name.removeprefix("tasks.") not in STEPS or not {"bucket", "key"} <= payload.keys():
        return {}
    return describe_job(payload)


def _step(app: Celery | None, job: Job, step: str, args: tuple[Any, ...] = ()) -> Signature:
    return signature(
        f"tasks.{step}",
        args=args,
        task_id=task_id(job.run_id, step),
        app=app,
        **describe_job(job),
    )


def build_chain(job: Job, app: Celery | None = None) -> Any:
    """launch -> score -> upload -> teardown, with deterministic task ids."""
    first, *rest = STEPS
    return chain(
        _step(app, job, first, (job.to_dict(),)),
        *(_step(app, job, s) for s in rest),
        app=app,
    )


def failure_tail(job: Job, failed_step: str, app: Celery | None = None) -> Any:
    """What must still run after ``failed_step`` gave up on ``job`` (job.failure set).

    launch/score failed   -> upload (writes .error) -> teardown
    upload failed         -> upload once more for the .error, unless it was already
                             publishing an .error -> teardown
    teardown failed       -> nothing (the periodic reaper removes what is left)
    """
    if failed_step == "teardown":
        return None
    if failed_step == "upload" and job.failure is not None and job.failure.step == "upload":
        return _step(app, job, "teardown", (job.to_dict(),))
    return chain(
        _step(app, job, "upload", (job.to_dict(),)),
        _step(app, job, "teardown"),
        app=app,
    )


def enqueue(app: Celery, job: Job) -> str:
    """Send the chain for ``job``; returns the id of its first task."""
    build_chain(job, app).apply_async()
    return task_id(job.run_id, STEPS[0])


#: The task that shows a file refused before any work (no chain ran for it) in Flower
#: and ``celery events``, and counts it in the workers' metrics (tasks/operations.py).
REFUSED_TASK = "tasks.refused"


def send_refusal(app: Celery, job: Job, kind: str, message: str) -> str:
    """Tell the workers that ``job`` was refused up front (its ``.error`` and run
    record are written already): ``tasks.refused`` fails with the refusal, so the file
    has its line in Flower's task list like a file whose step failed. One task id per
    run: a duplicate notification does not add a line."""
    sig = signature(
        REFUSED_TASK,
        args=(str(job.source), kind, message),
        task_id=task_id(job.run_id, "refused"),
        app=app,
        **describe_job(job),
    )
    sig.apply_async()
    return str(sig.id)
