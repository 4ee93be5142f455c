"""Several replicas of one model behind the interface of one.

A file that gets several model replicas (workers/backends/replicas.py) is scored by
one score step through a :class:`ReplicaSet`: the scoring loop
(workers/scoring/engine.py) calls :meth:`ReplicaSet.score` for each mini-batch as it
would call one model's protocol, and writes the answers in input order as always, so
exactly-once, rejected rows, the staging/copy publish and the step's deadlines are
the engine's, unchanged. What the set adds:

* each mini-batch goes to the replica with the fewest calls in flight (ties: the
  next in turn), so a slow replica gets less work; each replica's own client keeps
  its bound of ``SCOREFLEET_MAX_IN_FLIGHT`` requests (:attr:`max_in_flight` is the
  sum: what the engine may have in flight for the whole set);
* a replica that stays unavailable after its protocol's own retries (it died, its
  node went away) is taken out of the set for the rest of the step, and the
  mini-batch goes to another; when none is left the failure is the step's (retried
  by the task, which starts the replicas again);
* a failure names the replica it came from (:attr:`PipelineError.replica`), so the
  ``.error`` quotes that replica's log lines (:func:`with_replica_logs`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scorefleet.errors import ModelUnavailable, PipelineError
from workers.process import metrics
from workers.scoring.batches import Batch, Scores
from workers.scoring.contract import Contract
from workers.scoring.protocols import ModelProtocol

log = logging.getLogger(__name__)


@dataclass
class _Member:
    replica: int
    client: ModelProtocol
    in_flight: int = 0
    down: bool = False


class ReplicaSet:
    """Model replicas (``(replica number, its protocol client)``) as one model."""

    def __init__(self, members: Sequence[tuple[int, ModelProtocol]]) -> None:
        if not members:
            raise ValueError("a replica set needs at least one replica")
        self.members = [_Member(i, c) for i, c in members]
        self._lock = threading.Lock()
        self._turn = itertools.count()
        #: mini-batches sent again to another replica after one failed
        self.failovers = 0

    @property
    def replicas(self) -> list[int]:
        return [m.replica for m in self.members]

    @property
    def max_in_flight(self) -> int:
        """Mini-batches the whole set may have in flight: each replica's bound."""
        return sum(m.client.max_in_flight for m in self.members)

    def ready(self, timeout: float) -> bool:
        return all(m.client.ready(timeout) for m in self.members if not m.down)

    def close(self) -> None:
        for m in self.members:
            m.client.close()

    def model_contract(self) -> Contract | None:
        """The model's own contract, as its first replica publishes it (every replica
        runs the same image)."""
        return self.members[0].client.model_contract()

    # ----------------------------------------------------------------- calls
    def _pick(self, tried: set[int]) -> _Member | None:
        with self._lock:
            live = [m for m in self.members if not m.down and m.replica not in tried]
            if not live:
                return None
            least = min(m.in_flight for m in live)
            candidates = [m for m in live if m.in_flight == least]
            member = candidates[next(self._turn) % len(candidates)]
            member.in_flight += 1
            return member

    def score(self, batch: Batch) -> Scores:
        """The mini-batch scored by one of the replicas (see the module docstring)."""
        tried: set[int] = set()
        while True:
            member = self._pick(tried)
            if member is None:
                raise AssertionError("unreachable: the last replica's failure is raised")
            try:
                return member.client.score(batch)
            except ModelUnavailable as exc:
                tried.add(member.replica)
                if not self._take_out(member, exc):
                    raise _named(exc, member.replica) from None
                metrics.REPLICA_FAILOVERS.inc()
            except PipelineError as exc:
                raise _named(exc, member.replica) from None
            finally:
                with self._lock:
                    member.in_flight -= 1

    def _take_out(self, member: _Member, exc: ModelUnavailable) -> bool:
        """Take an unavailable replica out of the set; False when it is the last."""
        with self._lock:
            others = [m for m in self.members if m is not member and not m.down]
            if not others:
                return False
            if not member.down:
                member.down = True
                log.warning(
                    "model replica %d is unavailable (%s); its mini-batches go to the "
                    "%d other replica(s) for the rest of this step",
                    member.replica,
                    exc,
                    len(others),
                )
            self.failovers += 1
            return True


def _named(exc: PipelineError, replica: int) -> PipelineError:
    """The failure, marked with the replica it came from (once)."""
    if getattr(exc, "replica", None) is None:
        exc.replica = replica  # type: ignore[attr-defined]
    return exc


def with_replica_logs(exc: BaseException, logs: Callable[[int, int], str], lines: int) -> None:
    """Put the log lines of the replica a failure came from into it (``logs(replica,
    lines)``), unless it already has some: the ``.error`` quotes the failing
    replica's, not another's."""
    replica = getattr(exc, "replica", None)
    if not isinstance(exc, PipelineError) or not isinstance(replica, int):
        return
    if exc.model_logs:
        return
    try:
        text = logs(replica, lines)
    except Exception as err:  # the failure being reported matters more
        log.warning("could not read the logs of model replica %d: %s", replica, err)
        return
    exc.model_logs = f"(model replica {replica})\n{text}" if text else ""
