"""Warm mode of the local backend: healthy models parked for the next file of their
image, under ``STATE_DIR/local/_warm/<image>/``, shared by every worker on the machine.

A model is parked by the launch step as soon as it is ready (no model waits idle,
held for a file whose score is still in the queue) and again right after its file is
scored. A run claims a parked model of its image by renaming its directory to its
own (atomic: two claimants cannot get the same model). A parked model being stopped
is renamed out of its pool first (:data:`.runs.EXPIRING`), so that no launch claims
it. Parked models idle longer than the limit are stopped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from scorefleet.job import Job
from scorefleet.settings import ModelSpec
from workers.backends.base import Endpoint
from workers.backends.local.processes import HOST
from workers.backends.local.runrecords import read_record, spec_of, write_record
from workers.backends.local.runs import EXPIRING, WARM, Runs
from workers.scoring.protocols import probe

#: The backend's lines keep the logger name they have always had.
log = logging.getLogger("workers.backends.local.backend")

#: How long a launch waits for a model of its image that is scoring to be parked,
#: when no model can start (SCOREFLEET_MAX_LIVE_MODELS), before it waits its turn in
#: the queue instead.
WARM_WAIT_SECONDS = 2.0


class WarmPool:
    """The machine's parked models, one pool per image."""

    def __init__(self, runs: Runs, idle: float, max_per_image: int) -> None:
        self.runs = runs
        #: how long a parked model may idle (0: warm mode off)
        self.idle = idle
        self.max_per_image = max_per_image

    @property
    def enabled(self) -> bool:
        return self.idle > 0

    def pool(self, image: str) -> Path:
        return self.runs.root / WARM / hashlib.sha256(image.encode()).hexdigest()[:16]

    def parked(self, image: str) -> bool:
        """Is a model of ``image`` parked (warm mode)? Whether it still answers is
        checked when it is claimed."""
        return self.enabled and any(self.pool(image).glob("*"))

    # ----------------------------------------------------------------- claiming
    def claim(self, job: Job, spec: ModelSpec, replica: int = 0) -> Endpoint | None:
        """Take over a parked model of this image as the run's ``replica``, if a
        healthy one is there (a parked model is one replica: a run of several takes
        one per replica, and starts the others)."""
        pool = self.pool(spec.image)
        try:
            parked = sorted(pool.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        except FileNotFoundError:
            return None
        target = self.runs.dir(job.run_id, replica)
        for candidate in parked:
            try:
                candidate.rename(target)  # atomic: one launch wins each parked model
            except OSError:
                continue
            rec = self.runs.record(job.run_id, replica)
            proc = self.runs.process(rec)
            url = f"http://{HOST}:{rec['port']}" if rec else ""
            if rec is None or proc is None or not probe(url, spec_of(rec)):
                self.runs.remove(job.run_id, replica)
                continue
            rec.update(started=time.time(), source=str(job.source), serves=rec.get("serves", 1) + 1)
            rec.pop("parked_at", None)
            write_record(target, rec)
            with (target / "model.log").open("a") as f:
                f.write(f"---- scorefleet: this model now scores {job.source} ----\n")
            log.info(
                "reusing the warm model process %d (file %d it scores)", proc.pid, rec["serves"]
            )
            handle = {
                "pid": rec["pid"],
                "port": rec["port"],
                **({"replica": replica} if replica else {}),
            }
            return Endpoint(url=url, handle=handle, warm=True, image_id=rec.get("image_id") or None)
        return None

    def claim_or_wait(
        self, job: Job, spec: ModelSpec, room: Callable[[], bool], replica: int = 0
    ) -> Endpoint | None:
        """A parked model of this image; with none, no ``room`` to start one, and one of
        this image scoring (parked once its file is scored), wait up to
        :data:`WARM_WAIT_SECONDS` for it: a launch that lost it to another after its
        claim, cheaper here than through the queue (issue 17)."""
        deadline = time.monotonic() + WARM_WAIT_SECONDS
        while True:
            # looked at before the claim: a model parked since is in the pool for it
            # (else making room could stop the model just parked and start another)
            busy = self.runs.busy(spec.image)
            warm = self.claim(job, spec, replica)
            if warm is not None:
                return warm
            if room() or time.monotonic() > deadline or not busy:
                return None
            time.sleep(0.02)

    # ------------------------------------------------------------------ parking
    def park(self, job: Job, replica: int = 0) -> bool:
        """Keep this run's healthy model (its ``replica``) for the next file of its
        image: each replica is parked as a model of its own."""
        rec = self.runs.record(job.run_id, replica)
        if (
            rec is None
            or self.runs.process(rec) is None
            or not probe(f"http://{HOST}:{rec['port']}", spec_of(rec))
        ):
            return False
        pool = self.pool(str(rec["image"]))
        pool.mkdir(parents=True, exist_ok=True)
        if sum(1 for _ in pool.iterdir()) >= self.max_per_image:
            return False
        rec["parked_at"] = time.time()
        run_dir = self.runs.dir(job.run_id, replica)
        write_record(run_dir, rec)
        try:
            run_dir.rename(pool / run_dir.name)
        except OSError:
            return False
        log.info("parked model process %s warm for %gs", rec["pid"], self.idle)
        return True

    def expire(
        self,
        idle: float | None = None,
        *,
        oldest_only: bool = False,
        keep_image: str | None = None,
    ) -> list[str]:
        """Stop parked models idle for longer than ``idle`` (default: the warm limit);
        with ``oldest_only``, just the one idle the longest; never one of
        ``keep_image`` (the image a launch is making room for)."""
        limit = self.idle if idle is None else idle
        removed: list[str] = []
        warm = self.runs.root / WARM
        if not warm.exists():
            return removed
        now = time.time()
        kept = self.pool(keep_image).name if keep_image is not None else None
        candidates = sorted(
            (
                (read_record(p), p)
                for pool in warm.iterdir()
                if pool.name != kept
                for p in pool.iterdir()
            ),
            key=lambda rp: float((rp[0] or {}).get("parked_at", 0)),
        )
        for rec, parked in candidates:
            if oldest_only and removed:
                break
            if rec is not None and now - float(rec.get("parked_at", 0)) <= limit:
                continue
            doomed = self.runs.root / f"{EXPIRING}{parked.name}"
            try:
                parked.rename(doomed)  # fails if a launch claimed it first
            except OSError:
                continue
            self.runs.stop_doomed(doomed, rec)
            removed.append(parked.name)
        return removed
