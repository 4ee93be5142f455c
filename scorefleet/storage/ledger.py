"""Run records in S3: one small JSON object per pipeline, updated with conditional
writes (``If-None-Match`` / ``If-Match``), so duplicate deliveries of the same file
version are scored once and a superseded run never publishes.

Record ``<state prefix>runs/<pipeline id>.json``::

    {"run_id": ..., "state": "running" | "published" | "failed",
     "owner": <SQS message id of the launch that claimed it>,
     "holder": <the one delivery of it that holds the claim; null: handed back>,
     "lease_until": <epoch seconds>, "updated": <epoch seconds>, "outcome": <s3 uri>,
     "publisher": <the scoring attempt (its staging key) whose outcome is published>,
     "writers": {<staging key of a scoring attempt>: <its lease, epoch seconds>}}

A running record whose lease expired belongs to a worker that died: the next
delivery takes it over. Steps renew the lease as they go. While it is live, nothing
else runs the file: neither a duplicate notification nor a redelivery of the same
launch message (whose first delivery may still be at work, its visibility not
extended for a while); the latter waits for the lease (:meth:`Ledger.claim`). Each scoring attempt
registers its staging key under ``writers`` *before* it starts its upload, with a
lease its heartbeat renews: a redelivery aborts only the uploads whose writer's
lease has expired (see :meth:`Ledger.writers`), never a live writer's.

With acks_late a step's next task is sent before the step's own message is
deleted, so a worker killed in between leaves two copies of the rest of the
chain, each a first delivery of its own message. :meth:`Ledger.record_outcome`
is where they meet: the outcome is recorded *before* it is published, and only
the scoring attempt that recorded it publishes it.
"""

from __future__ import annotations

import enum
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scorefleet.job import Job
from scorefleet.s3uri import S3Uri
from scorefleet.settings import Settings
from scorefleet.storage.s3io import S3Client, get_json, put_json

log = logging.getLogger(__name__)

_CAS_ATTEMPTS = 8


class RunState(enum.StrEnum):
    """The ``state`` of a run record (a plain string in its JSON)."""

    QUEUED = "queued"  # its chain is being sent (the Lambda, the sweep): not claimed yet
    RUNNING = "running"
    PUBLISHED = "published"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class Phase(enum.StrEnum):
    """Where a ``running`` run is (its record's ``phase``; ``scorefleet status``)."""

    LAUNCHING = "launching"
    SCORING = "scoring"
    PUBLISHING = "publishing"


#: States of a run that is over: a new delivery of the same version does not rerun it.
FINISHED_STATES = frozenset({RunState.PUBLISHED, RunState.FAILED, RunState.SUPERSEDED})


class Claim(enum.Enum):
    CLAIMED = "claimed"  # this delivery runs the file
    RUNNING_ELSEWHERE = "running elsewhere"  # a duplicate: another delivery is on it
    DONE = "done"  # already published for this version
    #: this launch's own claim, held by a live delivery (the first delivery of a
    #: redelivered message, still at work, or the steps it handed the run to):
    #: this delivery waits until that lease ends, or the run does
    HELD = "held by a live delivery of this launch"


class Publication(enum.Enum):
    FIRST = "first"  # recorded now: publish it (nothing can be there yet)
    AGAIN = "again"  # recorded by this attempt before (redelivery, retry): look, then publish
    DUPLICATE = "duplicate"  # another attempt of this run recorded its outcome
    SUPERSEDED = "superseded"  # a newer run of the file took over


@dataclass
class Record:
    data: dict[str, Any]
    etag: str

    @property
    def state(self) -> str:
        return str(self.data.get("state", ""))

    @property
    def run_id(self) -> str:
        return str(self.data.get("run_id", ""))


def record_location(settings: Settings, pipeline_id: str) -> S3Uri:
    return settings.storage.state_uri.join(f"runs/{pipeline_id}.json")


def staging_prefix(settings: Settings, run_id: str) -> S3Uri:
    """Where the attempts of one run stage their results."""
    return settings.storage.state_uri.join(f"staging/{run_id}/")


def staging_location(settings: Settings, run_id: str) -> S3Uri:
    """A staging object of its own for each scoring attempt, so that two attempts of
    the same run (a redelivery while the first still works) never share an upload."""
    return staging_prefix(settings, run_id).join(f"{uuid.uuid4().hex[:12]}.scoreout.part")


def rejected_staging_key(staging_key: str) -> str:
    """Where a scoring attempt stages the rows its model refused: beside its output,
    derived from it (so a step never takes that key from a message)."""
    return staging_key.removesuffix(".scoreout.part") + ".rejected.part"


_STAGING_NAME = re.compile(r"[0-9a-f]{12}\.scoreout\.part\Z", re.ASCII)


def is_staging_key(settings: Settings, run_id: str, key: str) -> bool:
    """Is ``key`` one of run ``run_id``'s staging objects (as :func:`staging_location`
    makes them)?"""
    prefix = staging_prefix(settings, run_id).key
    return key.startswith(prefix) and bool(_STAGING_NAME.match(key[len(prefix) :]))


def writer_lease(visibility_timeout: float) -> float:
    """How long a scoring attempt's lease on its upload lasts from each renewal: a
    little less than the visibility timeout, so that a dead attempt's lease is over
    when SQS hands its message on (the redelivery then takes its committed parts up
    at once: issue 26), and still far more than the third of it between two renewals
    of a live attempt."""
    return max(visibility_timeout / 2, visibility_timeout - 10)


def held_by(rec: Record, job: Job) -> bool:
    """Is the run's claim in ``rec`` this chain's? It is when it was claimed by the
    chain's launch message (``job.claim.owner``) and, within the launch step itself,
    by this very delivery (``job.claim.holder``). A job that names no owner (a message
    from before owners travelled with the job) is taken at its run id."""
    if job.claim.owner is not None and rec.data.get("owner") != job.claim.owner:
        return False
    return job.claim.holder is None or rec.data.get("holder") == job.claim.holder


class Ledger:
    def __init__(self, settings: Settings, s3: S3Client) -> None:
        self.settings = settings
        self.s3 = s3

    # ------------------------------------------------------------ primitives
    def get(self, pipeline_id: str) -> Record | None:
        found = get_json(self.s3, record_location(self.settings, pipeline_id))
        return Record(found[0], found[1]) if found is not None else None

    def _put(self, pipeline_id: str, data: dict[str, Any], *, if_match: str | None) -> bool:
        """Conditional write; False if someone else wrote first."""
        loc = record_location(self.settings, pipeline_id)
        return put_json(self.s3, loc, {**data, "updated": time.time()}, if_match=if_match)

    # ------------------------------------------------------------ operations
    def claim(
        self,
        job: Job,
        owner: str,
        lease_seconds: float,
        *,
        continuing: bool = False,
        holder: str | None = None,
    ) -> Claim:
        """Decide whether this delivery of ``job`` runs it, by the run's lease.

        ``owner`` identifies the launch (the SQS message id: shared by redeliveries
        of one message, different for a duplicate notification; a launch waiting its
        turn keeps its own). ``continuing`` is true for a retry of this run's own
        launch. ``holder`` names this one delivery (recorded; :meth:`release` takes
        it). While the lease is live, a duplicate is told RUNNING_ELSEWHERE and a
        delivery of this same launch HELD: it waits until the lease has expired (the
        delivery holding it died) or the run is over, unless the holder handed the
        claim back (:meth:`release`: its retry, or its wait for a free slot).
        """
        now = time.time()
        mine = {
            "run_id": job.run_id,
            "state": RunState.RUNNING,
            "phase": Phase.LAUNCHING,
            "owner": owner,
            "holder": holder or uuid.uuid4().hex,
            "lease_until": now + lease_seconds,
            "source": str(job.source),
            "model_image": job.model_image,
            "queued_at": job.enqueued_at,
            "started_at": now,
            "attempts": 1,
        }
        for _ in range(_CAS_ATTEMPTS):
            rec = self.get(job.pipeline_id)
            if rec is not None and rec.run_id == job.run_id:
                # the deliveries of one run: how many launches it took (for status)
                mine["attempts"] = int(rec.data.get("attempts", 0)) + 1
                # its scoring attempts' uploads and committed parts stay the run's:
                # a score step of it may still take them up (issue 26)
                for kept in ("writers", "resume"):
                    if kept in rec.data:
                        mine[kept] = rec.data[kept]
            if rec is None:
                if self._put(job.pipeline_id, mine, if_match=None):
                    return Claim.CLAIMED
                continue
            ours = rec.run_id == job.run_id
            if rec.state in FINISHED_STATES and (ours or not job.force):
                return Claim.DONE  # (a forced rerun takes over from another run's end)
            live = (
                rec.state == RunState.RUNNING
                and float(rec.data.get("lease_until", 0)) > time.time()
            )
            if live and ours and (continuing or rec.data.get("owner") == owner):
                # a record without "holder" (older workers) counts as held
                if rec.data.get("holder", "") is not None:
                    return Claim.HELD
            elif live and (ours or not job.force):
                return Claim.RUNNING_ELSEWHERE
            if self._put(job.pipeline_id, mine, if_match=rec.etag):
                if rec.state == RunState.RUNNING and not ours:
                    log.warning("run %s takes over from run %s", job.run_id, rec.run_id)
                return Claim.CLAIMED
        raise RuntimeError(f"could not claim {job.pipeline_id}: too much contention")

    def release(self, job: Job, holder: str) -> bool:
        """Hand this delivery's claim to the next delivery of the same launch (its
        retry, or itself after waiting for a free slot), which then need not wait
        for the lease: the lease stays, so a duplicate still keeps off. False if the
        claim is no longer this delivery's."""
        for _ in range(_CAS_ATTEMPTS):
            rec = self.get(job.pipeline_id)
            if rec is None or rec.run_id != job.run_id or rec.data.get("holder") != holder:
                return False
            if self._put(job.pipeline_id, {**rec.data, "holder": None}, if_match=rec.etag):
                return True
        raise RuntimeError(f"could not release the claim on {job.pipeline_id}")

    def mark_queued(self, job: Job) -> bool:
        """Record that ``job``'s chain is being sent (``scorefleet status``: queued),
        only where the file has no record yet: a finished or running record stays as
        it is (the claim decides what runs). Best effort: False if not written."""
        data = {
            "run_id": job.run_id,
            "state": RunState.QUEUED,
            "source": str(job.source),
            "model_image": job.model_image,
            "queued_at": job.enqueued_at,
        }
        try:
            return self._put(job.pipeline_id, data, if_match=None)
        except Exception as exc:  # status then says "not seen" until the launch claims it
            log.warning("could not record %s as queued: %s", job.source, exc)
            return False

    def refused(self, job: Job, outcome: str | None, error: str) -> bool:
        """Record that ``job`` was refused before any work (its tags, its image: the
        Lambda, the sweep, a rerun), so that ``scorefleet runs --failed`` lists it as
        it lists a failed run. Only where no run of the file is queued or running (a
        refused rerun leaves a live run alone). Best effort: False if not written."""
        now = time.time()
        data = {
            "run_id": job.run_id,
            "state": RunState.FAILED,
            "step": "enqueue",
            "source": str(job.source),
            "model_image": job.model_image,
            "queued_at": job.enqueued_at,
            "finished_at": now,
            "outcome": outcome,
            "error": error[:2000],
            "lease_until": 0,
        }
        try:
            for _ in range(_CAS_ATTEMPTS):
                rec = self.get(job.pipeline_id)
                if rec is not None and rec.state not in FINISHED_STATES:
                    return False
                if self._put(job.pipeline_id, data, if_match=rec.etag if rec else None):
                    return True
        except Exception as exc:  # runs --failed then misses it; its .error is there
            log.warning("could not record the refusal of %s: %s", job.source, exc)
        return False

    def progress(self, job: Job, phase: Phase, **fields: Any) -> bool:
        """Record the run's phase (launching, scoring, publishing) and its progress
        (rows and bytes so far), while the claim is this chain's. Best effort."""
        try:
            return self._update(
                job, {"phase": phase, **fields, "progress_at": time.time()}, owned=True
            )
        except Exception as exc:
            log.debug("could not record progress: %s", exc)
            return False

    def lease_left(self, pipeline_id: str) -> float:
        """Seconds until the run's lease expires (0 when it has)."""
        rec = self.get(pipeline_id)
        until = float(rec.data.get("lease_until", 0)) if rec else 0.0
        return max(0.0, until - time.time())

    def renew(self, job: Job, lease_seconds: float, *, writer: str | None = None) -> bool:
        """Extend this run's lease (and ``writer``'s, a scoring attempt's staging key),
        only while the run's claim is this chain's (:func:`held_by`): a heartbeat must
        never keep alive a lease that another delivery, perhaps a dead one, holds.
        False if another run has superseded it or another delivery holds its claim."""
        until = time.time() + lease_seconds
        if writer is None:
            return self._update(job, {"lease_until": until}, create=False, owned=True)
        mine = time.time() + writer_lease(lease_seconds)
        return self._update_writers(job, writer, mine, {"lease_until": until}, owned=True)

    def register_writer(self, job: Job, writer: str, lease_seconds: float) -> bool:
        """Record that a scoring attempt writes ``writer`` (its staging key), before it
        starts the upload; expired writers are dropped. False if superseded.
        ``lease_seconds``: the visibility timeout (see :func:`writer_lease`)."""
        return self._update_writers(
            job, writer, time.time() + writer_lease(lease_seconds), {"phase": Phase.SCORING}
        )

    def writers(self, pipeline_id: str) -> dict[str, float]:
        """The registered scoring attempts of the run: staging key -> lease (epoch s)."""
        rec = self.get(pipeline_id)
        raw = rec.data.get("writers") if rec else None
        return {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _update_writers(
        self,
        job: Job,
        writer: str,
        until: float,
        changes: dict[str, Any],
        *,
        owned: bool = False,
    ) -> bool:
        for _ in range(_CAS_ATTEMPTS):
            rec = self.get(job.pipeline_id)
            if rec is None:
                return True  # not claimed (say the state prefix was cleaned): nothing to do
            if rec.run_id != job.run_id or (owned and not held_by(rec, job)):
                return False
            now = time.time()
            raw = rec.data.get("writers")
            old: dict[str, Any] = raw if isinstance(raw, dict) else {}
            live = {k: v for k, v in old.items() if float(v) > now}
            data = {**rec.data, **changes, "writers": {**live, writer: until}}
            if self._put(job.pipeline_id, data, if_match=rec.etag):
                return True
        raise RuntimeError(f"could not update the run record of {job.pipeline_id}")

    def finish(
        self, job: Job, state: str, outcome: str | None, *, seen: Record | None = None
    ) -> bool:
        """Record how the run ended. ``seen``: the record as just read (saves a read
        when it has not changed since)."""
        changes = {"state": state, "outcome": outcome, "lease_until": 0}
        if (
            seen is not None
            and seen.run_id == job.run_id
            and self._put(job.pipeline_id, {**seen.data, **changes}, if_match=seen.etag)
        ):
            return True
        return self._update(job, changes)

    def record_outcome(
        self,
        job: Job,
        state: str,
        outcome: str | None,
        attempt: str,
        *,
        seen: Record | None,
        provenance: Mapping[str, str] | None = None,
    ) -> Publication:
        """Record how the run ended, before its outcome is published; say whether
        this attempt is the one to publish it.

        ``attempt`` names the scoring attempt whose outcome this is (its staging key,
        or one name for "no output"): redeliveries and retries of its upload share it,
        the copy of the chain left by a worker killed between sending a step and
        acknowledging its own message does not. ``seen``: the record as just read.
        ``provenance``: the outcome's (:mod:`scorefleet.provenance`), for ``scorefleet
        status``: written with the rest, no request more.
        """
        changes: dict[str, Any] = {
            "state": state,
            "outcome": outcome,
            "lease_until": 0,
            "publisher": attempt,
            "rows": job.output.rows,
            "rejected_rows": job.output.rejected_rows,
            "finished_at": time.time(),
        }
        if job.failure is not None:
            changes["error"] = f"{job.failure.kind}: {job.failure.message}"[:2000]
        if provenance:
            changes["provenance"] = dict(provenance)
        rec = seen
        for _ in range(_CAS_ATTEMPTS):
            if rec is not None and rec.run_id != job.run_id:
                return Publication.SUPERSEDED
            if rec is not None and rec.state in FINISHED_STATES:
                if rec.data.get("publisher") != attempt:
                    return Publication.DUPLICATE
                if rec.state == state and rec.data.get("outcome") == outcome:
                    return Publication.AGAIN
                # this attempt's own failure handling, after its publication failed
                if self._put(job.pipeline_id, {**rec.data, **changes}, if_match=rec.etag):
                    return Publication.AGAIN
            else:
                base = rec.data if rec else {"run_id": job.run_id, "source": str(job.source)}
                if self._put(
                    job.pipeline_id, {**base, **changes}, if_match=rec.etag if rec else None
                ):
                    return Publication.FIRST
            rec = self.get(job.pipeline_id)
        raise RuntimeError(f"could not record how {job.pipeline_id} ended: too much contention")

    def is_finished(self, run_id: str) -> bool:
        """Is the run over (or superseded by another run of its file)? For the reaper."""
        rec = self.get(run_id[: len("sf-") + 20])
        return rec is not None and (rec.run_id != run_id or rec.state in FINISHED_STATES)

    def change(self, job: Job, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """Rewrite the run's record with ``change(data)`` (``None``: leave it as it is),
        while the run and its claim are this chain's (:func:`held_by`), with a
        conditional write, read again and retried if another write came first.
        False if the record is not this chain's, or ``change`` left it."""
        for _ in range(_CAS_ATTEMPTS):
            rec = self.get(job.pipeline_id)
            if rec is None or rec.run_id != job.run_id or not held_by(rec, job):
                return False
            data = change(dict(rec.data))
            if data is None:
                return False
            if self._put(job.pipeline_id, data, if_match=rec.etag):
                return True
        raise RuntimeError(f"could not update the run record of {job.pipeline_id}")

    def _update(
        self, job: Job, changes: dict[str, Any], *, create: bool = True, owned: bool = False
    ) -> bool:
        for _ in range(_CAS_ATTEMPTS):
            rec = self.get(job.pipeline_id)
            if rec is None and not create:
                return True  # nothing to renew (not claimed yet): not superseded either
            if rec is not None and (rec.run_id != job.run_id or (owned and not held_by(rec, job))):
                return False
            data = {**(rec.data if rec else {"run_id": job.run_id}), **changes}
            if self._put(job.pipeline_id, data, if_match=rec.etag if rec else None):
                return True
        raise RuntimeError(f"could not update the run record of {job.pipeline_id}")
