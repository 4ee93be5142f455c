"""Model replicas: how many model containers one file gets, and starting them together.

The catalog says how many a file of an image may get, and how much work justifies
one more (both read by every backend, :data:`CATALOG_OPTIONS`):

* ``replicas`` (default 1, at most :data:`MAX_REPLICAS`): the most a file may get;
* ``min_mb_per_replica`` (default 1): a file gets one replica per that many MB of
  its object (as stored: a compressed file's compressed size), at least one, at
  most ``replicas``. A small file still gets one; 0 gives every file them all.

A file's ``replicas`` tag may ask for fewer (never more: more is capped, and the
log says so). :func:`plan` is the one place that decides, from the catalog entry,
the file's size and its tag; it is a pure function, so the launch and the score
step (which may run on another worker) decide the same.

Starting them (:func:`start`): all at once, each by the backend's
``launch(job, spec, replica=i)``, and the file goes on when every one is ready. What
happens when one cannot start is decided here, the same for every backend:

* it crashes, its image cannot be pulled, it never becomes ready: the launch fails
  (as it does for one model), with **that replica's** log lines in the ``.error``
  and its number in the message;
* a transient failure (killed from outside, an API error): the launch is retried,
  and the replicas already running are adopted, not started again;
* no room for it (``SCOREFLEET_MAX_LIVE_MODELS``, a namespace's ResourceQuota, a
  pod the scheduler cannot place within ``SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT``):
  it is dropped, and the file goes on with the replicas that started; with none,
  the launch waits its turn in the queue as one model does. A file that held some
  replicas while it waited for more could deadlock with another doing the same
  (two files, each holding half a quota); one that goes on cannot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from scorefleet.errors import AtCapacity, BadInput, PipelineError
from scorefleet.job import Job
from scorefleet.settings import ModelSpec

log = logging.getLogger("workers.backends.replicas")
T = TypeVar("T")

#: the most replicas a catalog entry may give one file
MAX_REPLICAS = 64
DEFAULT_MIN_MB = 1.0
#: the file's tag that asks for fewer replicas than the catalog allows
TAG = "replicas"


def check_replicas(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"expected a whole number from 1 to {MAX_REPLICAS}, not {value!r}")


def check_min_mb(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"expected megabytes, a number of at least 0, not {value!r}")


#: the catalog keys every backend reads for replicas (workers/backends/base.py)
CATALOG_OPTIONS = {"replicas": check_replicas, "min_mb_per_replica": check_min_mb}


@dataclass(frozen=True)
class ReplicaPlan:
    """How many replicas a file gets, and why."""

    count: int
    #: what the catalog allows the image
    allowed: int
    #: what the file's tag asked for (None: no tag)
    asked: int | None = None

    def describe(self) -> str:
        why = [f"catalog allows {self.allowed}"]
        if self.asked is not None:
            why.append(f"tag asked {self.asked}")
        return f"{self.count} replica{'s' if self.count > 1 else ''} ({'; '.join(why)})"


def allowed(spec: ModelSpec) -> int:
    """The most replicas the catalog gives a file of ``spec``'s image."""
    value = spec.extra.get("replicas", 1)
    return value if isinstance(value, int) and 1 <= value <= MAX_REPLICAS else 1


def parse_tag(value: str) -> int:
    """The ``replicas`` tag's value; BadInput naming the tag when it is no count."""
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_REPLICAS:
        raise BadInput(
            f"the file's replicas tag {value!r} is not a whole number from 1 to "
            f"{MAX_REPLICAS} (the model replicas the file asks for, at most what the "
            "catalog allows its image)"
        )
    return int(text)


def plan(spec: ModelSpec, job: Job) -> ReplicaPlan:
    """How many replicas ``job``'s file gets (see the module docstring)."""
    most = allowed(spec)
    tag = job.data_tags.get(TAG)
    asked = parse_tag(tag) if tag else None
    count = most if asked is None else min(asked, most)
    raw_mb = spec.extra.get("min_mb_per_replica", DEFAULT_MIN_MB)
    min_mb = float(raw_mb) if isinstance(raw_mb, int | float) else DEFAULT_MIN_MB
    if count > 1 and min_mb > 0 and job.size is not None:
        count = max(1, min(count, int(job.size // (min_mb * 1024 * 1024))))
    return ReplicaPlan(count, most, asked)


# ------------------------------------------------------------------ starting
def no_room(exc: BaseException) -> bool:
    """Is ``exc`` a replica that found no room (rather than one that failed)?"""
    return isinstance(exc, AtCapacity) or bool(getattr(exc, "no_room", False))


def start(
    launch: Callable[[int], T],
    replicas: Sequence[int],
    *,
    image: str,
) -> list[tuple[int, T]]:
    """Start the ``replicas`` (their numbers) together -- ``launch(i)`` starts or
    adopts replica ``i`` and returns once it is ready -- and return ``(i, what its
    launch returned)`` for each that started, in order: all of them, or fewer when
    another than replica 0 found no room (see the module docstring; a dropped
    replica leaves a gap, the others keep the numbers their containers are named
    by). A replica's failure is raised naming it."""
    if len(replicas) == 1:
        return [(replicas[0], launch(replicas[0]))]
    total = len(replicas)
    started: list[tuple[int, T]] = []
    failure: BaseException | None = None
    roomless: list[tuple[int, BaseException]] = []
    with ThreadPoolExecutor(total, thread_name_prefix="replica-launch") as pool:
        futures = [(i, pool.submit(launch, i)) for i in replicas]
        for i, fut in futures:
            try:
                started.append((i, fut.result()))
            except BaseException as exc:
                if no_room(exc):
                    roomless.append((i, exc))
                elif failure is None:
                    failure = _named(exc, i, total) if isinstance(exc, PipelineError) else exc
    if failure is not None:
        raise failure
    if not started:  # none found room: the file waits its turn, as one model does
        raise roomless[0][1]
    for i, why in roomless:
        log.warning(
            "replica %d of %s found no room (%s): the file goes on with %d replica(s)",
            i,
            image,
            why,
            len(started),
        )
    return started


def _named(exc: PipelineError, replica: int, total: int) -> PipelineError:
    """The failure of one replica, saying which (its own log lines stay with it)."""
    exc.message = f"replica {replica} (of {total}): {exc.message}"
    exc.args = (exc.message,)
    return exc


def for_replica(method: Callable[..., T], replica: int, *args: Any) -> T:
    """``method(*args)`` of a backend for ``replica``: replica 0 is asked as a run's
    one model has always been (no replica argument), the others with theirs."""
    return method(*args, replica) if replica else method(*args)


# ------------------------------------------------------------- in the job
def merged_handle(started: Sequence[tuple[int, Any]]) -> dict[str, Any]:
    """The job's one ``handle`` for the replicas that started (``(i, Endpoint)``):
    the first one's, with the others' under ``replicas`` by number (a one-model
    run's handle is what it always was)."""
    (_, first), rest = started[0], started[1:]
    handle = dict(first.handle)
    if rest:
        handle["replicas"] = {str(i): dict(ep.handle) for i, ep in rest}
    return handle


def replica_of(handle: Mapping[str, Any]) -> int:
    """The replica number a backend's handle says (0 when it says none)."""
    value = handle.get("replica", 0)
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_REPLICAS
    return value if ok else 0


def handle_of(handle: Mapping[str, Any], replica: int) -> Mapping[str, Any]:
    """What a backend's handle says of one replica (see :func:`merged_handle`);
    empty when it says nothing of it. A backend trusts none of it: it checks what a
    handle names is its own before it acts on it."""
    if replica_of(handle) == replica:
        return handle
    others = handle.get("replicas")
    mine = others.get(str(replica)) if isinstance(others, Mapping) else None
    return mine if isinstance(mine, Mapping) else {}
