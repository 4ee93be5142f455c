"""The local stack's workers are started again when they die, as a Deployment starts
another pod on EKS (issue 26): the emulator, and everything in it, stays up, SQS
hands the dead worker's message to the new one once its visibility timeout is over,
and the file goes on from its last committed part.

A worker that keeps dying is not restarted for ever: :class:`Restarts` starts it
again after a growing pause (1, 2, 4 s: a crash loop does not spin), and gives up
at the ``limit``-th death within ``window`` seconds, or at once when the worker
exited because its configuration is wrong (exit code 2: starting it again cannot
help); the stack then stops with that worker's last log lines, as it does for any
other part that dies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The worker's exit code for a configuration it refuses (workers.app).
CONFIG_ERROR = 2
#: The local stack's SQS visibility timeout (s): how long the message of a worker
#: that died waits before another worker gets it. On AWS it is the queue's own
#: (SCOREFLEET_VISIBILITY_TIMEOUT, 300 by default); on a laptop, a worker killed
#: mid-file is followed by the next one within this time.
LOCAL_VISIBILITY_TIMEOUT = 30


@dataclass
class Restarts:
    """When to start a dead worker again (see the module docstring)."""

    limit: int = 4
    window: float = 120.0
    deaths: dict[str, list[float]] = field(default_factory=dict)
    #: workers to start again: name -> when (monotonic seconds)
    due: dict[str, float] = field(default_factory=dict)

    def died(self, name: str, code: int, now: float) -> float | None:
        """Worker ``name`` exited with ``code`` at ``now``: the pause before it is
        started again, or None to give up."""
        times = [t for t in self.deaths.get(name, []) if now - t < self.window] + [now]
        self.deaths[name] = times
        if code == CONFIG_ERROR or len(times) >= self.limit:
            return None
        pause = float(min(8, 2 ** (len(times) - 1)))
        self.due[name] = now + pause
        return pause

    def ready(self, now: float) -> list[str]:
        """The workers whose pause is over (taken off the list)."""
        names = [n for n, when in self.due.items() if when <= now]
        for n in names:
            del self.due[n]
        return names
