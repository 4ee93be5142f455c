"""A worker liveness probe that costs no broker request: ``-I workers.process.liveness``.

``celery inspect ping`` would prove that a worker consumes from SQS, but every probe
is a new process that creates (and deletes) a reply queue, publishes to SNS and waits
seconds for the answer: per pod and probe period, forever. This module proves the
same locally. Loaded into a worker with

    celery -A workers.app worker -P threads ... -I workers.process.liveness

it adds a consumer bootstep that, every :data:`TICK` seconds, touches
``$TMPDIR/scorefleet-worker.alive`` (``/tmp`` in the image) while two things hold:

1. **the consumer's event loop turns**: the touch runs as a timer entry of that
   loop (kombu's hub, which a worker uses with the SQS transport whatever its pool),
   so a blocked, dead or stopped loop stops touching;
2. **the task queue's poll cycle moves**: kombu's SQS channel calls ``_loop1`` after
   every completed ``ReceiveMessage`` (an empty long poll included, at least once per
   ``wait_time_seconds``, 20 s here) and, while every pool slot is busy, on every
   turn of the loop instead of receiving. The step wraps that method of the task
   consumer's channel and records when it last ran; a receive that never completes
   (a wedged connection) stops the touching after :data:`STALE_AFTER` seconds. A
   worker busy for hours on long steps stays alive: saturated, it cycles without
   receiving.

The probe, ``python -m workers.process.liveness --max-age 120``, is one ``stat`` of that file
(a fresh interpreter importing only the standard library: tens of milliseconds, no
network). The kubelet stops liveness probes once a pod is being deleted, so a warm
shutdown that finishes long steps (its consumer already stopped) is not killed by it.

If the transport has no such poll cycle (not SQS, or a kombu without ``_loop1``:
``tests/integration/test_liveness.py`` fails on such an upgrade), the step says so in the log
and falls back to proving only that the loop turns.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two touches of the file.
TICK = 10.0
#: The poll cycle must have moved within this many seconds (several 20 s long polls).
STALE_AFTER = 90.0
#: Default of the probe's --max-age: STALE_AFTER plus a few ticks.
MAX_AGE = 120.0
FILENAME = "scorefleet-worker.alive"


def alive_file() -> Path:
    """Where the worker touches and the probe looks (``$TMPDIR``, else ``/tmp``)."""
    return Path(tempfile.gettempdir()) / FILENAME


class Monitor:
    """What the bootstep does, without Celery: testable with a fake channel and clock."""

    def __init__(self, path: Path, stale_after: float = STALE_AFTER) -> None:
        self.path = path
        self.stale_after = stale_after
        self.last_cycle = time.monotonic()
        self.cycles = 0
        self.watching_polls = False
        self._channel: Any = None

    def cycled(self) -> None:
        self.last_cycle = time.monotonic()
        self.cycles += 1

    def watch(self, channel: Any) -> bool:
        """Record every poll cycle of ``channel``; False if it has no such cycle."""
        self.unwatch()
        self.last_cycle = time.monotonic()
        original = getattr(channel, "_loop1", None)
        if channel is None or getattr(channel, "hub", None) is None or not callable(original):
            self.watching_polls = False
            return False
        monitor = self

        def _loop1(*args: Any, **kwargs: Any) -> Any:
            monitor.cycled()
            return original(*args, **kwargs)

        channel._loop1 = _loop1
        self._channel = channel
        self.watching_polls = True
        return True

    def unwatch(self) -> None:
        if self._channel is not None:
            self._channel.__dict__.pop("_loop1", None)
            self._channel = None

    def healthy(self) -> bool:
        return not self.watching_polls or time.monotonic() - self.last_cycle <= self.stale_after

    def tick(self) -> bool:
        """Touch the file if healthy; returns whether it did."""
        if not self.healthy():
            log.error(
                "liveness: the task queue's poll cycle has not moved for %.0f s; "
                "no longer touching %s (the liveness probe will restart this worker)",
                time.monotonic() - self.last_cycle,
                self.path,
            )
            return False
        try:
            self.path.touch()
        except OSError as exc:
            log.warning("liveness: could not touch %s: %s", self.path, exc)
            return False
        return True


def _step_class() -> type:
    from celery import bootsteps

    class Liveness(bootsteps.StartStopStep):
        """Consumer bootstep: touch the alive file from the consumer's event loop."""

        requires = ("celery.worker.consumer.tasks:Tasks",)
        label = "Liveness"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.monitor = Monitor(alive_file())
            self.tref: Any = None

        def start(self, c: Any) -> None:
            channel = getattr(getattr(c, "task_consumer", None), "channel", None)
            if not self.monitor.watch(channel):
                log.warning(
                    "liveness: the task consumer has no SQS poll cycle to watch; "
                    "the probe only proves that the worker's event loop turns"
                )
            self.monitor.tick()
            self.tref = c.timer.call_repeatedly(TICK, self.monitor.tick, priority=10)

        def stop(self, c: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None
            self.monitor.unwatch()

        def shutdown(self, c: Any) -> None:
            self.stop(c)

    return Liveness


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Celery's ``worker_init``: add the step before the consumer is built."""
    app = getattr(sender, "app", None)
    if app is not None:
        app.steps["consumer"].add(_step_class())


def install() -> None:
    from celery import signals

    signals.worker_init.connect(_on_worker_init, weak=False)


# --------------------------------------------------------------------------- probe
def check(path: Path, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """(ok, message) for the liveness probe."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False, f"{path} does not exist: the worker's consumer has not started"
    age = (time.time() if now is None else now) - mtime
    if age > max_age:
        return False, (
            f"{path} is {age:.0f} s old (limit {max_age:.0f} s): the worker's consumer "
            "is stuck (event loop blocked or SQS receives not completing)"
        )
    return True, f"alive: {path} touched {age:.0f} s ago"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m workers.process.liveness",
        description="Liveness probe of a worker started with -I workers.process.liveness.",
    )
    ap.add_argument("--max-age", type=float, default=MAX_AGE, help="seconds (default %(default)s)")
    ap.add_argument("--file", type=Path, default=None, help="default: $TMPDIR/" + FILENAME)
    args = ap.parse_args(argv)
    ok, message = check(args.file or alive_file(), args.max_age)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
else:  # imported by the worker (-I workers.process.liveness)
    install()
