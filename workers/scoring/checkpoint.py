"""One scoring attempt's commits (issue 26): each output part, once it is up, is
committed in the run record with where the input goes on, so that a later delivery
of the score step takes the file up from there (:mod:`workers.scoring.resume`).

:class:`Checkpointer` is what the scoring loop reports to
(:class:`workers.scoring.engine.Checkpoints`) and what the staging upload calls once a
part cut at a mark is up (``MultipartWriter(on_part=...)``):

* after each mini-batch's answers are written, it marks the output there (only where
  the writer holds nothing back: a Parquet output between row groups); the upload
  cuts a part at a mark once a part's size is buffered, and takes a
  :class:`Snapshot` of that point;
* once that part is up: what the part needs beside its bytes (:class:`Bundle`: a
  Parquet footer's row groups, the rows refused for the ``.rejected``) goes to a side
  object (one PUT, only when there is something), then the run record gets the
  committed parts (one conditional write: scorefleet.storage.commits). The last part
  of a file is never committed (the step completes the upload instead), so a file of
  one part writes nothing;
* at :meth:`hand_over` (the step nears SCOREFLEET_MAX_STEP_SECONDS), the parts in
  flight go up, the bytes not in a part and what the writer holds go to a ``held``
  object, and the run record gets all of it with the writer's lease ended, for the
  continuation of the step.

A commit that fails (S3 failing) stops the commits of this attempt: a later delivery
goes on from the last one that was made. A commit refused because a later delivery
took the upload over (this attempt's worker was thought dead) stops the attempt
(:attr:`Checkpointer.taken_over`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scorefleet.job import Job
from scorefleet.s3uri import S3Uri
from scorefleet.storage import commits
from scorefleet.storage.commits import Committed
from scorefleet.storage.ledger import Ledger
from scorefleet.storage.multipart import MultipartWriter, UploadedPart, parts_digest
from workers.scoring.engine import ScoreStats
from workers.scoring.formats.base import Writer
from workers.scoring.rejects import RowRejects

log = logging.getLogger(__name__)


def stem(staging_key: str) -> str:
    return staging_key.removesuffix(".scoreout.part")


def side_key(staging_key: str, part: int) -> str:
    """Where part ``part`` of an attempt's output keeps what it needs beside its bytes."""
    return f"{stem(staging_key)}.side-{part:05d}.part"


def held_key(staging_key: str, handover: int) -> str:
    """Where a hand-over keeps the bytes not in a part and what the writer held."""
    return f"{stem(staging_key)}.held-{handover:05d}.part"


@dataclass
class Bundle:
    """What a side or held object holds: the output writer's and the .rejected's side
    data (Writer.side, RowRejects.side), and, in a held object, the output's bytes not
    in a part (``tail``) and the rows its writer held (``held``)."""

    writer: list[bytes] = field(default_factory=list)
    rejects: list[bytes] = field(default_factory=list)
    tail: bytes = b""
    held: bytes = b""

    def __bool__(self) -> bool:
        return any(self.writer) or any(self.rejects) or bool(self.tail or self.held)

    def pack(self) -> bytes:
        pieces = [*self.writer, *self.rejects, self.tail, self.held]
        head = {"writer": len(self.writer), "rejects": len(self.rejects)}
        head["sizes"] = [len(p) for p in pieces]  # type: ignore[assignment]
        return json.dumps(head).encode() + b"\n" + b"".join(pieces)

    @classmethod
    def unpack(cls, data: bytes) -> Bundle:
        line, _, rest = data.partition(b"\n")
        head = json.loads(line)
        pieces, pos = [], 0
        for size in head["sizes"]:
            pieces.append(rest[pos : pos + size])
            pos += size
        w, r = int(head["writer"]), int(head["rejects"])
        return cls(pieces[:w], pieces[w : w + r], pieces[w + r], pieces[w + r + 1])


@dataclass
class Snapshot:
    """The point an output part ends at, taken when the part is cut."""

    at: dict[str, Any]
    writer_state: dict[str, Any]
    rejects_state: dict[str, Any] | None
    rows: int
    rejected: int
    side: Bundle


@dataclass
class Base:
    """What an attempt goes on from (:mod:`workers.scoring.resume`): the entry it took
    over, what its output writer is restored from (the side data of every committed
    part and of the held object, and the rows the writer held), and what the held
    object gave that no part keeps yet (it goes with the next part)."""

    entry: Committed | None = None
    writer_sides: list[bytes] = field(default_factory=list)
    writer_held: bytes = b""
    pending: Bundle = field(default_factory=Bundle)


class Checkpointer:
    """One scoring attempt's commits (see the module docstring); ``sink`` is set to
    its staging upload once that is made."""

    def __init__(
        self,
        ledger: Ledger,
        s3: Any,
        job: Job,
        staging: S3Uri,
        token: str,
        *,
        options: str,
        source: dict[str, Any],
        rejects: RowRejects | None,
        progress: Callable[[], dict[str, Any]] = dict,
        on_commit: Callable[[], None] = lambda: None,
        stop: Callable[[], bool] = lambda: False,
        base: Base | None = None,
    ) -> None:
        self.ledger, self.s3, self.job = ledger, s3, job
        self.staging, self.token = staging, token
        self.options, self.source = options, source
        self.rejects = rejects
        self.progress = progress
        self.on_commit = on_commit
        self._stop = stop
        self.base = base or Base()
        entry = self.base.entry
        self.digest = entry.digest if entry else ""
        self.size = entry.size if entry else 0
        self.sides = entry.sides if entry else 0
        self.handovers = entry.handovers if entry else 0
        self.resumes = entry.resumes if entry else 0
        self.pending = self.base.pending
        self.sink: MultipartWriter | None = None
        self.commits = 0
        self.broken = False
        self.taken_over = False
        self.superseded = False
        self.last: tuple[dict[str, Any], Writer] | None = None

    # ------------------------------------------------- the scoring loop's side
    def restore(self, writer: Writer) -> None:
        entry = self.base.entry
        if entry is not None:
            writer.restore(entry.writer_state, self.base.writer_sides, self.base.writer_held)

    def written(self, writer: Writer, at: dict[str, Any], stats: ScoreStats) -> None:
        self.last = (at, writer)
        if self.sink is not None and writer.settled and not self.broken:
            self.sink.mark(lambda: self._snapshot(writer, at, stats))

    def stop(self) -> bool:
        return self.taken_over or self.superseded or self._stop()

    def _take_sides(self, writer: Writer | None) -> Bundle:
        side = Bundle(
            writer=[*self.pending.writer, writer.side() if writer is not None else b""],
            rejects=[*self.pending.rejects, self.rejects.side() if self.rejects else b""],
        )
        self.pending = Bundle()
        return Bundle([w for w in side.writer if w], [r for r in side.rejects if r])

    def _snapshot(self, writer: Writer, at: dict[str, Any], stats: ScoreStats) -> Snapshot:
        return Snapshot(
            at=at,
            writer_state=writer.state(),
            rejects_state=self.rejects.state() if self.rejects else None,
            rows=stats.rows,
            rejected=stats.rejected,
            side=self._take_sides(writer),
        )

    # ------------------------------------------------- the upload thread's side
    def _entry(self, snap: Snapshot, parts: int, **extra: Any) -> Committed:
        assert self.sink is not None
        return Committed(
            run_id=self.job.run_id,
            key=self.staging.key,
            upload_id=self.sink.upload_id,
            writer=self.token,
            parts=parts,
            size=self.size,
            digest=self.digest,
            at=snap.at,
            rows=snap.rows,
            rejected=snap.rejected,
            writer_state=snap.writer_state,
            rejects_state=snap.rejects_state,
            sides=self.sides,
            source=self.source,
            options=self.options,
            handovers=self.handovers,
            resumes=self.resumes,
            committed_at=time.time(),
            **extra,
        )

    def on_part(self, part: UploadedPart, snap: Snapshot) -> None:
        """Part ``part`` is up, cut at ``snap``: commit it."""
        if self.broken:
            return
        try:
            if snap.side:
                self._put(side_key(self.staging.key, part.number), snap.side.pack())
                self.sides += 1
            self.digest = parts_digest([part], self.digest)
            self.size += part.size
            entry = self._entry(snap, part.number)
            done = commits.commit(self.ledger, self.job, entry, self._progress(snap))
            if not done:
                self.broken = True
                if done is None:  # the run is no longer this chain's
                    self.superseded = True
                    return
                self.taken_over = True
                log.warning(
                    "part %d is not committed: another delivery has taken this file's "
                    "upload over; this attempt stops",
                    part.number,
                )
                return
            self.commits += 1
            self.on_commit()
        except Exception as exc:  # a later delivery goes on from the last commit
            self.broken = True
            log.warning("could not commit part %d (%s); no more commits", part.number, exc)

    def _progress(self, snap: Snapshot) -> dict[str, Any]:
        out = {**self.progress(), "phase": "scoring", "rows": snap.rows}
        if snap.rejected:
            out["rejected_rows"] = snap.rejected
        return out

    def _put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.staging.bucket, Key=key, Body=data)

    # ------------------------------------------------------------ hand-over
    def hand_over(self, stats: ScoreStats) -> Committed | None:
        """The scoring loop stopped: commit everything written so far for the step's
        continuation, and end this writer's lease. The entry handed over, or None
        when there was nothing to hand over that is not committed already."""
        assert self.sink is not None
        handed = self.sink.hand_over()
        if self.last is None or self.broken:
            # nothing written here, or the commits broke: the next delivery goes on
            # from the last commit (or starts over)
            commits.hand_back(self.ledger, self.job, self.staging.key)
            return None
        at, writer = self.last
        self.handovers += 1
        bundle = self._take_sides(writer)
        bundle.tail, bundle.held = handed.tail, writer.held()
        key = held_key(self.staging.key, self.handovers)
        self._put(key, bundle.pack())
        self.digest, self.size = parts_digest(handed.parts), sum(p.size for p in handed.parts)
        snap = Snapshot(
            at=at,
            writer_state=writer.state(),
            rejects_state=self.rejects.state() if self.rejects else None,
            rows=stats.rows,
            rejected=stats.rejected,
            side=Bundle(),
        )
        entry = self._entry(snap, len(handed.parts), held=key)
        if not commits.hand_back(self.ledger, self.job, self.staging.key, entry):
            if commits.commit(self.ledger, self.job, entry, self._progress(snap)) is not True:
                return None
            commits.hand_back(self.ledger, self.job, self.staging.key, entry)
        return entry
