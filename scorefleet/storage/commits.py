"""Committed parts: how far a scoring attempt's staging upload has got, in the run's
record, so that the next delivery of the score step goes on from there (issue 26).

A scoring attempt writes its output as a multipart upload cut at mini-batch ends
(scorefleet.storage.multipart). Once a part is up, the attempt records, in the run
record's ``resume`` entry (:class:`Committed`), one write per part:

* the upload (staging key, upload id) and its parts so far: how many, their bytes,
  and a digest of their numbers, sizes and ETags (``parts_digest``), which the next
  delivery checks against what S3 lists before it keeps them;
* where the input goes on (``at``: the format's resume point) and the output's
  writer's state, with the rows written and refused so far;
* what the output needs beside its bytes (a Parquet footer's row groups, the refused
  rows of the ``.rejected``): ``sides`` objects beside the staging object, one per part
  that needs one, and at a hand-over between steps the bytes not in a part yet
  (``held``);
* what the parts were made from: the source upload read (``source``) and everything
  that decides the output (``options``, a fingerprint); a delivery that finds either
  changed starts over.

``writer`` names the attempt that writes the upload: a later delivery that takes the
upload over (:func:`take_over`, only once its writer's lease has expired, as
:func:`scorefleet.storage.s3io.abort_dead_uploads` decides) names itself there, and a
commit of any other attempt of that upload is refused from then on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from scorefleet.job import Job
from scorefleet.settings import Settings
from scorefleet.storage.ledger import Ledger, Record, staging_prefix, writer_lease

log = logging.getLogger(__name__)

#: The run record's key for the committed parts.
RESUME = "resume"


@dataclass(frozen=True)
class Committed:
    """A scoring attempt's committed parts (the run record's ``resume`` entry)."""

    run_id: str
    #: the staging upload: its key (under the run's staging prefix) and upload id
    #: (None while everything is still in ``held``)
    key: str
    upload_id: str | None
    #: the attempt that writes it (a token of its own, per delivery)
    writer: str
    #: the parts that are up: how many, their bytes, their digest
    parts: int
    size: int
    digest: str
    #: where the input goes on, and the output's rows and refused rows so far
    at: dict[str, Any]
    rows: int
    rejected: int
    #: the output writer's and the .rejected's state at that point
    writer_state: dict[str, Any]
    rejects_state: dict[str, Any] | None
    #: side objects of the parts (one per part that needed one)
    sides: int = 0
    #: the object that holds what a step handed over and no part holds yet
    held: str | None = None
    #: what the parts were made from
    source: dict[str, Any] = field(default_factory=dict)
    options: str = ""
    #: steps it took: hand-overs at SCOREFLEET_MAX_STEP_SECONDS, and take-overs
    #: after a worker died
    handovers: int = 0
    resumes: int = 0
    committed_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Committed | None:
        """The entry in a record; None if there is none or it is not one."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None


def of(rec: Record | None) -> Committed | None:
    return Committed.from_json(rec.data.get(RESUME)) if rec is not None else None


def belongs(settings: Settings, job: Job, entry: Committed) -> str | None:
    """Why ``entry`` is not this run's own (None when it is)."""
    if entry.run_id != job.run_id:
        return f"the committed parts are run {entry.run_id}'s, not this run's ({job.run_id})"
    if not entry.key.startswith(staging_prefix(settings, job.run_id).key):
        return "the committed parts are not in this run's staging prefix"
    return None


def commit(ledger: Ledger, job: Job, entry: Committed, progress: dict[str, Any]) -> bool | None:
    """Record ``entry`` (and the run's ``progress``) as the run's committed parts: True;
    False if another attempt has taken this upload over; None if the run is no longer
    this chain's (superseded). The entry of another upload (an attempt of the run that
    died) is replaced: the latest commit is the one to go on from."""
    taken: list[bool] = []

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        now = Committed.from_json(data.get(RESUME))
        if now is not None and now.key == entry.key and now.writer != entry.writer:
            taken.append(True)
            return None  # taken over by a later delivery
        return {**data, **progress, RESUME: entry.to_json(), "progress_at": time.time()}

    if ledger.change(job, change):
        return True
    return False if taken else None


def take_over(
    ledger: Ledger, job: Job, entry: Committed, token: str, lease_seconds: float
) -> Committed | None:
    """Make this delivery (``token``) the writer of ``entry``'s upload, if its writer's
    lease has still expired and nobody took it over since; the entry as taken over,
    or None. ``lease_seconds``: the visibility timeout (ledger.writer_lease)."""
    taken: list[Committed] = []

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        now = Committed.from_json(data.get(RESUME))
        if now is None or now.key != entry.key or now.writer != entry.writer:
            return None
        raw = data.get("writers")
        writers: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        if float(writers.get(entry.key, 0)) > time.time():
            return None  # its writer renewed its lease meanwhile: alive after all
        mine = dataclasses.replace(now, writer=token, resumes=now.resumes + 1)
        taken.append(mine)
        writers[entry.key] = time.time() + writer_lease(lease_seconds)
        return {**data, RESUME: mine.to_json(), "writers": writers, "phase": "scoring"}

    return taken[-1] if ledger.change(job, change) and taken else None


def hand_back(ledger: Ledger, job: Job, key: str, entry: Committed | None = None) -> bool:
    """Let the next delivery take ``key``'s upload up at once: its writer's lease ends
    now (a step that hands the file over, or retries). ``entry``: the parts committed
    with it (a hand-over's), recorded in the same write."""

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        now = Committed.from_json(data.get(RESUME))
        if now is None or now.key != key:
            return None
        if entry is not None and now.writer != entry.writer:
            return None
        raw = data.get("writers")
        writers: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        writers[key] = 0
        out = {**data, "writers": writers}
        if entry is not None:
            out[RESUME] = entry.to_json()
        return out

    return ledger.change(job, change)
