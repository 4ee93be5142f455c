"""What a launch backend does: start a run's model containers (one per replica:
:mod:`workers.backends.replicas`), tell whether each is alive, hand out its logs, let
them go once their file is scored, remove them, and reap what dead workers left
behind (:class:`LaunchBackend`); and what the registry knows of a backend without
loading it (:class:`BackendKind`: its name, how it is made, its catalog keys and
settings checks).

The steps (tasks/) know a backend by this interface only: a backend's ``handle``
(:attr:`Endpoint.handle`) is its own, travelling with the job for the backend to read
back; whatever a step needs to know is answered here (:attr:`Endpoint.warm`,
:meth:`LaunchBackend.release`), and warm mode is the backend's business."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from scorefleet.job import Job
from scorefleet.settings import ModelSpec, Settings
from workers.backends.replicas import CATALOG_OPTIONS as REPLICA_OPTIONS

#: A check of one catalog value (its key's): ValueError says what is wrong.
OptionCheck = Callable[[Any], None]


@dataclass(frozen=True)
class Endpoint:
    url: str  # base URL of the model's HTTP server, e.g. http://10.0.3.7:8080
    handle: dict[str, Any] = field(default_factory=dict)  # backend details, JSON-safe
    #: the model was taken over from the warm pool, ready before this run asked for it
    #: (not started for it)
    warm: bool = False
    #: what the backend knows of the image it runs, for the outcome's provenance (a
    #: pod's status imageID: the digest pulled; the local backend: its catalog
    #: entry's identity); None when it knows nothing
    image_id: str | None = None


class LaunchBackend(Protocol):
    name: str

    def launch(self, job: Job, spec: ModelSpec, replica: int = 0) -> Endpoint:
        """Start (or adopt, if this run already has it) the model container of the
        run's ``replica`` and return once it is ready (its protocol's readiness).
        Raises ModelError when it cannot start, a TransientError when trying again
        later may help, AtCapacity (or an error whose ``no_room`` is true) when there
        is no room for it now. Replica 0 is the run's one model when it has one;
        each replica is a container of its own, named so that teardown, the reaper
        and ``scorefleet status`` find every one."""
        ...

    def has_room(self, spec: ModelSpec) -> bool:
        """Could a model of this image start now? (Checked before a launch claims its
        file, so that a launch without room goes back to the queue cheaply.)"""
        ...

    def has_parked(self, spec: ModelSpec) -> bool:
        """Warm mode: is a model of this image parked where any worker's next run of
        it can take it? Then a launch need not start one (the score step takes it).
        Always False for a backend whose parked models only their own worker reuses."""
        ...

    def park(self, job: Job) -> bool:
        """Warm mode: hand this run's ready model over to the pool at once, for
        whichever run of its image scores next (the launch step's hand-over: no model
        sits idle, held for a file whose score is still in the queue). False when the
        run keeps it: warm mode off, the pool full, the model not healthy, or a
        backend whose parked models only their own worker reuses."""
        ...

    def endpoint(self, job: Job, replica: int = 0) -> str | None:
        """The base URL of this run's model (its ``replica``) as this backend itself
        recorded it (never the job's ``endpoint``, which a task message can set to
        anything); None when the run has no such container."""
        ...

    def is_alive(self, job: Job, replica: int = 0) -> bool:
        """Is this run's container (its ``replica``) still running?"""
        ...

    def logs(self, job: Job, lines: int, replica: int = 0) -> str:
        """The last ``lines`` log lines of the run's container (its ``replica``)
        ('' if none)."""
        ...

    def release(self, job: Job) -> bool:
        """The run's file is scored: let its model go now if this backend keeps models
        for the next file of their image (warm mode), parked for it or else stopped.
        True when it was let go (teardown has nothing left to stop); False when the
        run keeps its model until teardown stops it (no warm mode). Raises when it
        could not be let go (teardown tries again)."""
        ...

    def teardown(self, job: Job) -> bool:
        """Remove this run's containers, every replica (warm mode, after a success:
        park them); idempotent. True if something was removed (or parked)."""
        ...

    def reap(self, max_age: float, is_finished: Callable[[str], bool]) -> list[str]:
        """Remove containers older than ``max_age`` seconds or whose run is finished
        (``is_finished(run_id)``); return the run ids removed."""
        ...


@dataclass(frozen=True)
class StartCheck:
    """One finding of a backend's start-up checks of where its containers run (the
    kubernetes backend: what Pod Security Admission enforces in each namespace)."""

    #: what was checked, e.g. ``pod_security``
    name: str
    #: where, e.g. ``cluster default, namespace scoring``
    subject: str
    #: as it should be?
    ok: bool
    #: what was found; when not ok, what to do about it
    detail: str


def no_start_checks(backend: LaunchBackend) -> list[StartCheck]:
    return []


@dataclass(frozen=True)
class BackendKind:
    """A launch backend as its registry line names it. Defined in a module of the
    backend that loads nothing heavy (the kubernetes client is imported by
    :attr:`make` only), so that the worker's settings checks, ``scorefleet config``
    and the Lambda's package never load a backend they do not run."""

    #: the value of SCOREFLEET_LAUNCH_BACKEND
    name: str
    #: the backend, made from the settings (its modules are imported then)
    make: Callable[[Settings], LaunchBackend]
    #: the per-image catalog keys it reads, each with its check
    catalog_options: Mapping[str, OptionCheck] = field(default_factory=dict)
    #: what is wrong with its own variables in an environment, one problem per
    #: variable, worded as :func:`scorefleet.settings.load` words its own
    settings_problems: Callable[[Mapping[str, str]], list[str]] = lambda environ: []
    #: its checks of where its containers run, made with the backend itself (so they
    #: may call its API): a worker runs them once at start-up and logs what is not ok
    #: as a warning; ``scorefleet config --check-backend`` prints them
    start_checks: Callable[[LaunchBackend], list[StartCheck]] = no_start_checks


def check_launch_timeout(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= 86400
    ):
        raise ValueError(f"expected seconds, a number above 0 and at most 86400, not {value!r}")


#: Catalog keys every backend reads (``env``, the model's environment, is the core's:
#: scorefleet/settings/catalog.py checks it whatever the backend): the launch timeout,
#: and how many replicas a file gets (workers/backends/replicas.py).
COMMON_OPTIONS: Mapping[str, OptionCheck] = {
    "launch_timeout": check_launch_timeout,
    **REPLICA_OPTIONS,
}
