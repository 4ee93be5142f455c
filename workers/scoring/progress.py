"""A file's scoring progress, written to its run record every few seconds (rows and
bytes so far, read by ``scorefleet status`` and ``submit --wait``'s progress bar).

A file scored within :data:`FIRST_PROGRESS_SECONDS` writes none: its record goes
from its claim (``launching``) straight to its outcome, record writes (and the reads
before them) that a small file does not need (issue 17). A longer file shows its
progress from then on, every interval, and ``publishing`` once scored."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from scorefleet.job import Job
from scorefleet.storage.ledger import Phase

#: seconds between two progress writes of one file (one GET and one PUT each)
PROGRESS_EVERY_SECONDS = 5.0
#: the first progress write of a file, this long after its scoring started
FIRST_PROGRESS_SECONDS = 1.0


class RunProgress:
    """Counts the input's bytes as they are read from S3 (before decompression, so
    that they compare with the object's size) and records progress, throttled."""

    def __init__(
        self,
        ledger: Any,
        job: Job,
        total_bytes: int | None,
        *,
        read: Callable[[], int],
        every: float = PROGRESS_EVERY_SECONDS,
        first: float = FIRST_PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        replicas: int = 1,
    ) -> None:
        """``read``: the bytes read so far, as the input's reader counts them;
        ``replicas``: the model replicas scoring the file (recorded when several)."""
        self.ledger = ledger
        self.job = job
        self.total_bytes = total_bytes
        self._read = read
        self.every = every
        self.clock = clock
        self.replicas = replicas
        # the first write a moment after the start: a file scored sooner needs none
        self._next = clock() + min(first, every)
        self.writes = 0

    @property
    def bytes_read(self) -> int:
        return self._read()

    def fraction_read(self) -> float:
        """The share of the input read so far (1.0 when its size is unknown)."""
        if not self.total_bytes:
            return 1.0
        return min(1.0, self.bytes_read / self.total_bytes)

    def _write(self, phase: Phase, rows: int, **extra: Any) -> None:
        self.writes += 1
        self.ledger.progress(
            self.job,
            phase,
            rows=rows,
            bytes_read=self.bytes_read,
            total_bytes=self.total_bytes,
            **({"replicas": self.replicas} if self.replicas > 1 else {}),
            **extra,
        )

    def update(self, stats: Any) -> None:
        """After each mini-batch written (workers.scoring.engine: score_stream's ``progress``)."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.every
            self._write(Phase.SCORING, int(stats.rows), **_rejected(stats))

    def fields(self) -> dict[str, Any]:
        """What a commit of the file's parts records of its progress (bytes read)."""
        return {"bytes_read": self.bytes_read, "total_bytes": self.total_bytes}

    def committed(self) -> None:
        """A commit recorded the progress (workers.scoring.checkpoint): the next
        progress write waits its interval from now."""
        self.writes += 1
        self._next = self.clock() + self.every

    def done(self, stats: Any) -> None:
        """Scored: the file now waits for its publication. Recorded only for a file
        that showed progress: a small file's next record write is its outcome, a
        queue hop away."""
        if self.writes:
            self._write(Phase.PUBLISHING, int(stats.rows), **_rejected(stats))


def _rejected(stats: Any) -> dict[str, int]:
    rejected = getattr(stats, "rejected", None)
    return {"rejected_rows": int(rejected)} if rejected else {}
