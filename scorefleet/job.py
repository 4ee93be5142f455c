"""The job: everything the chain knows about one file, passed from step to step.

A :class:`Job` travels as the JSON-serialisable return value of each step
(launch -> score -> upload -> teardown). Steps add to it; none removes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scorefleet.s3uri import S3Uri

STEPS = ("launch", "score", "upload", "teardown")


def pipeline_id(
    bucket: str,
    key: str,
    version_id: str | None,
    etag: str | None,
    last_modified: float | None = None,
) -> str:
    """Deterministic id of one upload of one object.

    The same upload always gets the same id, whichever way it was seen (a
    notification, a duplicate of it, one without versionId or sequencer, a rerun
    or sweep that looked the object up), so duplicates map to one pipeline; every
    new upload of the key gets a new one, also when its bytes are the same. On a
    versioned bucket the version id says it all; without versioning, the ETag and
    the upload's LastModified (see scorefleet.submission.identify) do, to the second S3
    keeps it in. DNS-1123 safe, so it can name a pod.
    """
    stamp = f"{last_modified:.0f}" if last_modified is not None else ""
    identity = version_id or f"etag:{(etag or '').strip(chr(34))}:{stamp}"
    digest = hashlib.sha256(f"{bucket}\n{key}\n{identity}".encode()).hexdigest()
    return "sf-" + digest[:20]


def rerun_id(pid: str) -> str:
    """A fresh run id for a manual rerun of pipeline ``pid`` (also DNS-1123 safe)."""
    return f"{pid}-r{int(time.time())}{secrets.token_hex(2)}"


#: The run ids scorefleet makes: a pipeline id, or a rerun of one (:func:`rerun_id`).
RUN_ID = re.compile(r"(sf-[0-9a-f]{20})(?:-r[0-9]{1,12}[0-9a-f]{4})?\Z", re.ASCII)


def run_pipeline(run_id: str) -> str | None:
    """The pipeline id a run id belongs to; None if it is not a run id scorefleet makes."""
    m = RUN_ID.match(run_id) if isinstance(run_id, str) else None
    return m.group(1) if m else None


def task_id(run_id: str, step: str) -> str:
    return f"{run_id}-{step}"


class SkipReason(StrEnum):
    """Why a run did nothing more (``Job.skipped``); a plain string in the JSON, so
    messages queued by older workers read the same."""

    #: a duplicate: another delivery of this file is running it (Claim.RUNNING_ELSEWHERE)
    RUNNING_ELSEWHERE = "running elsewhere"
    #: already published for this version (Claim.DONE)
    DONE = "done"
    #: a newer run of the file (a forced rerun) took over
    SUPERSEDED = "superseded"
    #: the source was replaced by a newer upload since: that one publishes
    SOURCE_REPLACED = "source replaced"
    #: another attempt of the same run recorded (and publishes) the outcome
    PUBLISHED_ELSEWHERE = "published by another attempt"


@dataclass
class Failure:
    """Why a file could not be scored, as recorded by the step that gave up."""

    step: str
    kind: str  # short class name shown to the data modeller, e.g. "BadInput"
    message: str
    attempts: int = 1
    model_logs: str = ""


@dataclass
class Job:
    # --- identity of the source file (set at enqueue) ---
    pipeline_id: str
    run_id: str
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    sequencer: str | None
    # --- what to run it with (tags or fallbacks) ---
    model_image: str
    k8s_cluster: str
    k8s_namespace: str
    #: the file's max_rejected_rows tag (a count or a fraction), if it has one
    max_rejected_rows: str | None = None
    #: the file's data tags (content_type, output_format, keep/model/drop_columns)
    data_tags: dict[str, str] = field(default_factory=dict)
    # --- bookkeeping ---
    #: without a version id: the upload's LastModified (epoch seconds), which pins it
    last_modified: float | None = None
    enqueued_at: float = field(default_factory=time.time)
    force: bool = False
    #: the delivery that claimed the file (a launch waiting its turn keeps its claim)
    claim_owner: str | None = None
    #: the one execution of the launch holding the claim (scorefleet.storage.ledger: Ledger.release)
    claim_holder: str | None = None
    # --- filled in by the steps ---
    launch_started_at: float | None = None
    model_ready_at: float | None = None
    endpoint: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)
    staging_key: str | None = None
    rows: int | None = None
    #: rows the model refused, staged beside the output (its staging key's .rejected.part)
    rejected_rows: int = 0
    #: the Content-Type of the staged output (its format: workers.scoring.formats)
    output_type: str | None = None
    #: the Content-Type of the staged .rejected (the input's format)
    rejected_type: str | None = None
    output_bytes: int | None = None
    score_seconds: float | None = None
    published: str | None = None
    #: when the last step finished, and the total time spent between steps
    step_done_at: float | None = None
    waited: float = 0.0
    failure: Failure | None = None
    skipped: SkipReason | None = None
    #: the model was released right after scoring (warm mode): teardown has nothing to do
    released: bool = False

    @property
    def source(self) -> S3Uri:
        return S3Uri(self.bucket, self.key)

    @property
    def model_start_ms(self) -> int | None:
        if self.launch_started_at is None or self.model_ready_at is None:
            return None
        return round((self.model_ready_at - self.launch_started_at) * 1000)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("failure") is not None:
            values["failure"] = Failure(**values["failure"])
        if values.get("skipped") is not None:
            values["skipped"] = SkipReason(values["skipped"])
        handle = values.get("handle")
        if isinstance(handle, dict) and "released" in handle:
            # before 0.2 the flag travelled inside the backend's handle
            handle = dict(handle)
            values["released"] = bool(handle.pop("released")) or bool(values.get("released"))
            values["handle"] = handle
        return cls(**values)
