"""``SCOREFLEET_MAX_LIVE_MODELS`` for the local backend: how many model processes
this machine runs at once (parked warm ones too), counted across all its workers."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator

from scorefleet.errors import AtCapacity
from scorefleet.settings import ModelSpec
from workers.backends.local.runs import WARM, Runs
from workers.backends.local.warm import WarmPool


class Capacity:
    """The machine's model slots (``max_live``; 0: no limit)."""

    def __init__(self, runs: Runs, warm: WarmPool, max_live: int) -> None:
        self.runs = runs
        self.warm = warm
        self.max_live = max_live
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise capacity decisions between the threads of this worker and the
        other workers on the machine (an flock on the state directory)."""
        if not self.max_live:
            yield
            return
        root = self.runs.root
        root.mkdir(parents=True, exist_ok=True)
        with self._lock, (root.parent / "local-capacity.lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def has_room(self, spec: ModelSpec) -> bool:
        """Could a launch of this image go ahead now (a free slot, or a warm model of
        it)? A cheap look, no lock: the launch itself decides for sure."""
        if not self.max_live or not self.runs.root.exists():
            return True
        if self.warm.parked(spec.image):
            return True
        live = self.runs.live()
        return len(live) < self.max_live or (
            self.warm.enabled and any(p.parent.parent.name == WARM for p in live)
        )

    def room(self) -> bool:
        """Is a slot free now?"""
        return (
            not self.max_live
            or not self.runs.root.exists()
            or len(self.runs.live()) < self.max_live
        )

    def make_room(self, image: str) -> bool:
        """Enforce MAX_LIVE_MODELS: True if a model of ``image`` may start, after
        stopping the idle warm model of another image parked the longest if need be.
        False in warm mode when only models of ``image`` itself are parked (the
        caller takes one of those); otherwise, with no room, AtCapacity."""
        if not self.max_live or not self.runs.root.exists():
            return True
        if len(self.runs.live()) < self.max_live:
            return True
        if self.warm.expire(idle=-1, oldest_only=True, keep_image=image):
            return True
        if self.warm.parked(image):
            return False
        raise self.full()

    def full(self) -> AtCapacity:
        return AtCapacity(
            f"{self.max_live} model processes are running (SCOREFLEET_MAX_LIVE_MODELS)"
        )
