"""The ``.error`` file: what a data modeller reads when a file could not be scored."""

from __future__ import annotations

import json
import shlex
import time

from scorefleet.job import Failure
from scorefleet.redact import redact
from scorefleet.s3uri import S3Uri


def rerun_commands(source: S3Uri, model_image: str | None = None) -> list[str]:
    """Shell lines that rerun a file (both ask a worker to run ``tasks.rescore``)."""
    args = shlex.quote(json.dumps([str(source)]))
    celery = f"celery -A workers.app call tasks.rescore --args {args}"
    cli = f"scorefleet rerun {shlex.quote(str(source))}"
    if model_image:
        celery += " --kwargs " + shlex.quote(json.dumps({"model_image": model_image}))
        cli += f" --model-image {shlex.quote(model_image)}"
    return [celery, cli]


#: What a failure at a step means, where its name alone misleads (a file refused by
#: the launch's look at its first bytes never started a model).
STEP_NOTES = {
    ("launch", "BadInput"): " (the input was checked before any model started: the file, "
    "not the model, is what to fix)",
    ("enqueue", "Rejected"): " (refused before any work: no model was started)",
}


def render(
    *,
    source: S3Uri,
    version: str | None,
    model_image: str,
    k8s_cluster: str,
    k8s_namespace: str,
    pipeline_id: str,
    failure: Failure,
) -> str:
    """Plain text, short, without tracebacks or credentials. What comes from outside
    (the error's text, the model's log lines) is masked; the lines scorefleet writes
    itself (the URIs, the rerun commands) are not, so they stay exact."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    attempts = "" if failure.attempts <= 1 else f" (after {failure.attempts} attempts)"
    celery_cmd, cli_cmd = rerun_commands(source)
    # a message of several lines (a model's traceback) goes on under its first line
    message = "\n              ".join(redact(failure.message).splitlines() or [""])
    lines = [
        f"scorefleet could not score {source}",
        "",
        f"failed step:  {failure.step}{attempts}{STEP_NOTES.get((failure.step, failure.kind), '')}",
        f"error:        {failure.kind}: {message}",
        "",
        f"input:        {source}" + (f"  (version {version})" if version else ""),
        f"model image:  {model_image or '(none)'}",
        f"cluster:      {k8s_cluster}   namespace: {k8s_namespace}",
        f"pipeline id:  {pipeline_id}",
        f"time (UTC):   {when}",
        "",
        "To rerun this file once the cause is fixed (or upload it again, with its tags:",
        "every upload is scored, also of the same bytes):",
        f"  {celery_cmd}",
        f"  {cli_cmd}",
        "To rerun it with another model image, add:  "
        + '--kwargs \'{"model_image": "<image>"}\'  (or --model-image <image>)',
    ]
    if failure.model_logs.strip():
        lines += ["", "Last lines the model wrote:", ""]
        lines += ["  " + line for line in redact(failure.model_logs.rstrip()).splitlines()]
    return "\n".join(lines) + "\n"
