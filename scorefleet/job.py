"""The job: one run of one file, passed from step to step (launch -> score -> upload
-> teardown).

A :class:`Job` is two things (issue 23):

* its :class:`Ticket`: which upload of which object, which run of it, and what to run
  it with (model image, cluster, namespace, the options its tags give). Written when
  the file is enqueued (the Lambda, a rerun, a sweep) and never changed after;
* what the steps learn along the way, each part of its own: the run's claim on the
  file (:class:`Claimant`, the launch's), its model (:class:`ModelState`, the
  launch's, or the score's when it had to start one), its output (:class:`Output`,
  the score's), and how it ended (``published``, ``failure``, ``skipped``), with the
  chain's own clock (``step_done_at``, ``waited``).

Every part is frozen (the two mappings, ``data_tags`` and ``handle``, are read-only by
type): a step returns a new job with what it learned (``dataclasses.replace``), it
patches nothing into a shared one. The ticket's fields
read through the job too (``job.run_id`` is ``job.ticket.run_id``).

On the wire (a step's task message and return value) a job stays the one flat JSON
object it has always been (:meth:`Job.to_dict`): the same keys with the same values,
so messages queued by an older worker read the same (:meth:`Job.from_dict` also
takes the older forms), and an older worker reads ours (it ignores the keys it does
not know; the ones added are ``model_pooled``, ``model_replicas``,
``model_image_id`` and ``handovers``). tests/unit/test_job_wire.py holds this against
messages captured from the release before the split.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
    #: a later delivery of the score step took this attempt's upload over (this one
    #: was thought dead): it goes on with the file
    TAKEN_OVER = "taken over by a later delivery"


@dataclass(frozen=True)
class Failure:
    """Why a file could not be scored, as recorded by the step that gave up."""

    step: str
    kind: str  # short class name shown to the data modeller, e.g. "BadInput"
    message: str
    attempts: int = 1
    model_logs: str = ""


@dataclass(frozen=True)
class Ticket:
    """What the run is: the upload, the run of it, and what to run it with. Fixed
    at enqueue (scorefleet.submission.build_job); scorefleet.vouch re-derives the
    parts a worker acts on."""

    # --- the upload of the source object ---
    pipeline_id: str
    run_id: str
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    sequencer: str | None
    # --- what to run it with (its tags, or the fallbacks) ---
    model_image: str
    k8s_cluster: str
    k8s_namespace: str
    #: the file's max_rejected_rows tag (a count or a fraction), if it has one
    max_rejected_rows: str | None = None
    #: the file's data tags (content_type, output_format, keep/model/drop_columns)
    data_tags: Mapping[str, str] = field(default_factory=dict)
    # --- how it was asked for ---
    #: without a version id: the upload's LastModified (epoch seconds), which pins it
    last_modified: float | None = None
    enqueued_at: float = field(default_factory=time.time)
    force: bool = False

    @property
    def source(self) -> S3Uri:
        return S3Uri(self.bucket, self.key)


@dataclass(frozen=True)
class Claimant:
    """Who holds the run's claim on the file (scorefleet.storage.ledger: held_by)."""

    #: the delivery of the launch that claimed the file (travels with the chain; a
    #: launch waiting its turn keeps it for its next delivery)
    owner: str | None = None
    #: the one execution of the launch holding the claim (Ledger.release); never
    #: taken from a message: only the launch's own claim sets it
    holder: str | None = None


@dataclass(frozen=True)
class ModelState:
    """What the steps learned about the run's model."""

    #: when the launch that started it (or took one over) began, and when it was ready
    started_at: float | None = None
    ready_at: float | None = None
    #: its URL and the backend's details, as the backend returned them (the steps
    #: never act on these: a backend looks up what it recorded for the run)
    endpoint: str | None = None
    handle: Mapping[str, Any] = field(default_factory=dict)
    #: the launch left the model in the warm pool (parked it, or found one parked):
    #: the score step takes one from there
    pooled: bool = False
    #: nothing is left for teardown to stop: the model was released after scoring
    #: (warm mode), or none was started (a file without rows)
    released: bool = False
    #: the numbers of the model replicas the run has (workers/backends/replicas.py);
    #: empty: one model, replica 0, as before replicas. Like ``handle``, what the
    #: backend answered; a step bounds it by the catalog before it acts on it
    replicas: tuple[int, ...] = ()
    #: what the backend knows of the image it ran (a pod's imageID, the digest the
    #: kubelet pulled; the local backend: its catalog entry's identity): provenance
    image_id: str | None = None

    @property
    def start_ms(self) -> int | None:
        if self.started_at is None or self.ready_at is None:
            return None
        return round((self.ready_at - self.started_at) * 1000)


@dataclass(frozen=True)
class Output:
    """What the score step made: the staged output, and how much."""

    staging_key: str | None = None
    rows: int | None = None
    #: rows the model refused, staged beside the output (its staging key's .rejected.part)
    rejected_rows: int = 0
    #: the Content-Type of the staged output (its format: workers.scoring.formats)
    media_type: str | None = None
    #: the Content-Type of the staged .rejected (the input's format)
    rejected_media_type: str | None = None
    size: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Job:
    ticket: Ticket
    claim: Claimant = field(default_factory=Claimant)
    model: ModelState = field(default_factory=ModelState)
    output: Output = field(default_factory=Output)
    # --- how it ended ---
    published: str | None = None
    failure: Failure | None = None
    skipped: SkipReason | None = None
    # --- the chain's clock: when the last step finished, the total time between steps
    step_done_at: float | None = None
    waited: float = 0.0
    #: how many times the score step went back to the queue with its file under way
    #: (it reached SCOREFLEET_MAX_STEP_SECONDS, or waited for a dead attempt's lease
    #: to end; issue 26): its next delivery takes the committed parts up although
    #: its message is a first delivery
    handovers: int = 0

    # ------------------------------------------------- the ticket, read through
    @property
    def pipeline_id(self) -> str:
        return self.ticket.pipeline_id

    @property
    def run_id(self) -> str:
        return self.ticket.run_id

    @property
    def bucket(self) -> str:
        return self.ticket.bucket

    @property
    def key(self) -> str:
        return self.ticket.key

    @property
    def version_id(self) -> str | None:
        return self.ticket.version_id

    @property
    def etag(self) -> str | None:
        return self.ticket.etag

    @property
    def size(self) -> int | None:
        return self.ticket.size

    @property
    def sequencer(self) -> str | None:
        return self.ticket.sequencer

    @property
    def model_image(self) -> str:
        return self.ticket.model_image

    @property
    def k8s_cluster(self) -> str:
        return self.ticket.k8s_cluster

    @property
    def k8s_namespace(self) -> str:
        return self.ticket.k8s_namespace

    @property
    def max_rejected_rows(self) -> str | None:
        return self.ticket.max_rejected_rows

    @property
    def data_tags(self) -> Mapping[str, str]:
        return self.ticket.data_tags

    @property
    def last_modified(self) -> float | None:
        return self.ticket.last_modified

    @property
    def enqueued_at(self) -> float:
        return self.ticket.enqueued_at

    @property
    def force(self) -> bool:
        return self.ticket.force

    @property
    def source(self) -> S3Uri:
        return self.ticket.source

    # ------------------------------------------------------- what steps learn
    def claimed(self, owner: str | None, holder: str | None = None) -> Job:
        """This job with its claim held by ``owner`` (and, within the launch that made
        it, its ``holder``)."""
        return replace(self, claim=Claimant(owner, holder))

    def rerun(self) -> Job:
        """A new run of the same upload (:func:`rerun_id`), learned nothing yet."""
        return Job(replace(self.ticket, run_id=rerun_id(self.pipeline_id)))

    # ------------------------------------------------------------------ wire
    def to_dict(self) -> dict[str, Any]:
        """The job as it travels: one flat JSON object (see the module docstring)."""
        t, c, m, o = self.ticket, self.claim, self.model, self.output
        return {
            "pipeline_id": t.pipeline_id,
            "run_id": t.run_id,
            "bucket": t.bucket,
            "key": t.key,
            "version_id": t.version_id,
            "etag": t.etag,
            "size": t.size,
            "sequencer": t.sequencer,
            "model_image": t.model_image,
            "k8s_cluster": t.k8s_cluster,
            "k8s_namespace": t.k8s_namespace,
            "max_rejected_rows": t.max_rejected_rows,
            "data_tags": dict(t.data_tags),
            "last_modified": t.last_modified,
            "enqueued_at": t.enqueued_at,
            "force": t.force,
            "claim_owner": c.owner,
            "claim_holder": c.holder,
            "launch_started_at": m.started_at,
            "model_ready_at": m.ready_at,
            "endpoint": m.endpoint,
            "handle": copy.deepcopy(dict(m.handle)),
            "staging_key": o.staging_key,
            "rows": o.rows,
            "rejected_rows": o.rejected_rows,
            "output_type": o.media_type,
            "rejected_type": o.rejected_media_type,
            "output_bytes": o.size,
            "score_seconds": o.seconds,
            "published": self.published,
            "step_done_at": self.step_done_at,
            "waited": self.waited,
            "failure": dataclasses.asdict(self.failure) if self.failure is not None else None,
            "skipped": self.skipped,
            "released": m.released,
            "model_pooled": m.pooled,
            "model_replicas": list(m.replicas),
            "model_image_id": m.image_id,
            "handovers": self.handovers,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """A job from its JSON (this release's, or an older one's); keys it does not
        know are ignored (a newer release's). TypeError, ValueError or AttributeError
        when it is no job at all (scorefleet.vouch then checks the values' types)."""
        values = dict(data.items())
        handle = values.get("handle", {})
        if isinstance(handle, dict) and "released" in handle:
            # before 0.2 the flag travelled inside the backend's handle
            handle = dict(handle)
            values["released"] = bool(handle.pop("released")) or bool(values.get("released"))
            values["handle"] = handle
        if values.get("failure") is not None:
            values["failure"] = Failure(**values["failure"])
        if values.get("skipped") is not None:
            values["skipped"] = SkipReason(values["skipped"])
        if isinstance(values.get("model_replicas"), list):
            values["model_replicas"] = tuple(values["model_replicas"])
        ticket = Ticket(**_part(values, _TICKET_KEYS))
        return cls(
            ticket,
            claim=Claimant(**_part(values, _CLAIM_KEYS)),
            model=ModelState(**_part(values, _MODEL_KEYS)),
            output=Output(**_part(values, _OUTPUT_KEYS)),
            **_part(values, _JOB_KEYS),
        )


def _part(values: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    """The fields of one part of a job from its flat JSON (``keys``: JSON key -> field)."""
    return {name: values[wire] for wire, name in keys.items() if wire in values}


#: Each part's fields by their JSON keys (Job.to_dict writes the same keys).
_TICKET_KEYS = {f.name: f.name for f in dataclasses.fields(Ticket)}
_CLAIM_KEYS = {"claim_owner": "owner", "claim_holder": "holder"}
_MODEL_KEYS = {
    "launch_started_at": "started_at",
    "model_ready_at": "ready_at",
    "endpoint": "endpoint",
    "handle": "handle",
    "model_pooled": "pooled",
    "released": "released",
    "model_replicas": "replicas",
    "model_image_id": "image_id",
}
_OUTPUT_KEYS = {
    "staging_key": "staging_key",
    "rows": "rows",
    "rejected_rows": "rejected_rows",
    "output_type": "media_type",
    "rejected_type": "rejected_media_type",
    "output_bytes": "size",
    "score_seconds": "seconds",
}
_JOB_KEYS = {
    name: name
    for name in ("published", "failure", "skipped", "step_done_at", "waited", "handovers")
}
