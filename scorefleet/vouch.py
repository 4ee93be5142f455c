"""What a worker re-checks in a task message before it acts on it.

Whoever can send to the task queue (the Lambda, ``tasks.rescore``, ``celery call``,
Flower's task API, any process with ``sqs:SendMessage`` on the queue, or on the local
stack any local process) can put any job into a step's message. A step therefore
acts only on what it can re-derive from the job's identity and its own settings:

* the run id is one scorefleet makes (``sf-<20 hex>``, or ``…-r<digits><4 hex>`` for a
  rerun) and belongs to the job's pipeline id, which is the one
  :func:`scorefleet.job.pipeline_id` gives for the job's bucket, key, version, ETag and
  LastModified (the upload's identity):
  the run (its pod name, its local directory, its staging prefix, its run record) is
  bound to the file;
* the source is a file under ``SCOREFLEET_INPUT_URI`` and not one of the pipeline's
  own outputs;
* a staging key is one of that run's own (``<state>/staging/<run id>/<12 hex>.scoreout.part``).

The rest is checked where it is used: the image, cluster and namespace by
:func:`scorefleet.submission.validate` wherever a model may be started; the model
endpoint is never taken from the message (the backend looks up what it recorded for
the run); a backend touches only containers that are its own for that run.

Re-derivation rather than signed payloads: a signature needs a secret shared by the
Lambda, the CLI and every worker (more to deploy and rotate, and whoever can read a
worker's environment can forge), while every field that matters can be recomputed
from what a worker already has. What a sender can still do is what the pipeline is
for: ask for a file under the input prefix to be scored (again) with an allowed
image (docs/security.md).
"""

from __future__ import annotations

from scorefleet.errors import Untrusted
from scorefleet.job import Job, pipeline_id, run_pipeline
from scorefleet.settings import Settings
from scorefleet.storage.ledger import is_staging_key, staging_prefix

_TEXT_FIELDS = (
    *("pipeline_id", "run_id", "bucket", "key"),
    *("model_image", "k8s_cluster", "k8s_namespace"),
)
_OPTIONAL_TEXT_FIELDS = ("version_id", "etag", "sequencer")


def check_run_id(run_id: object) -> str:
    """``run_id`` if it is a run id scorefleet makes; :class:`Untrusted` otherwise."""
    if not isinstance(run_id, str) or run_pipeline(run_id) is None:
        raise Untrusted(
            f"run id {run_id!r} is not one scorefleet makes (sf-<20 hex>, or "
            "sf-<20 hex>-r<digits><4 hex> for a rerun)"
        )
    return run_id


def check_job(settings: Settings, job: Job) -> None:
    """Raise :class:`Untrusted` unless ``job``'s identity is one this worker would
    have made itself for that file (see the module docstring)."""
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(job.ticket, name), str):
            raise Untrusted(f"the job's {name} is not a string")
    for name in _OPTIONAL_TEXT_FIELDS:
        if not isinstance(getattr(job.ticket, name), str | None):
            raise Untrusted(f"the job's {name} is neither a string nor null")
    staging_key = job.output.staging_key
    if not isinstance(staging_key, str | None):
        raise Untrusted("the job's staging_key is neither a string nor null")
    if not isinstance(job.model.handle, dict):
        raise Untrusted("the job's handle is not an object")
    replicas = job.model.replicas
    if not isinstance(replicas, tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1000 for i in replicas
    ):
        raise Untrusted("the job's model_replicas is not a list of replica numbers")
    if not isinstance(job.model.image_id, str | None):
        raise Untrusted("the job's model_image_id is neither a string nor null")
    tags = job.data_tags
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise Untrusted("the job's data_tags is not an object of strings")
    check_run_id(job.run_id)
    if run_pipeline(job.run_id) != job.pipeline_id:
        raise Untrusted(f"run id {job.run_id!r} is not a run of pipeline {job.pipeline_id!r}")
    if not isinstance(job.last_modified, int | float | None) or isinstance(job.last_modified, bool):
        raise Untrusted("the job's last_modified is not a number")
    if not isinstance(job.handovers, int) or isinstance(job.handovers, bool) or job.handovers < 0:
        raise Untrusted("the job's handovers is not a count")
    derived = pipeline_id(job.bucket, job.key, job.version_id, job.etag, job.last_modified)
    if derived != job.pipeline_id:
        raise Untrusted(
            f"pipeline id {job.pipeline_id!r} is not the one of {job.source} with the "
            f"version and ETag the job gives ({derived})"
        )
    source = job.source
    if (
        not settings.storage.input_uri.contains(source)
        or not source.key
        or source.key.endswith("/")
    ):
        raise Untrusted(
            f"{source} is not a file under the input location {settings.storage.input_uri}"
        )
    if any(p.contains(source) for p in settings.storage.ignored_prefixes()):
        raise Untrusted(f"{source} is one of the pipeline's own outputs")
    if staging_key is not None and not is_staging_key(settings, job.run_id, staging_key):
        raise Untrusted(
            f"staging key {staging_key!r} is not one of run {job.run_id}'s "
            f"({staging_prefix(settings, job.run_id)}<12 hex>.scoreout.part)"
        )
