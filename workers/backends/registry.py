"""Every launch backend by its name (``SCOREFLEET_LAUNCH_BACKEND``): the one list of them.

A new backend is one package beside ``local/`` and ``kubernetes/`` whose ``__init__``
defines its :class:`~workers.backends.base.BackendKind` (and imports nothing heavy),
plus one line in :data:`BACKENDS` and its docs page (docs/development.md, "Extension
points"). A backend's modules are imported only when it is made
(:func:`make_backend`): the kubernetes client is never loaded by a process that does
not use it.
"""

from __future__ import annotations

from collections.abc import Mapping

from scorefleet.settings import VARIABLES, Settings
from scorefleet.settings.declare import Reader, nearest
from workers.backends.base import (
    COMMON_OPTIONS,
    BackendKind,
    LaunchBackend,
    OptionCheck,
    StartCheck,
)
from workers.backends.kubernetes import BACKEND as KUBERNETES
from workers.backends.local import BACKEND as LOCAL

#: every launch backend by name
BACKENDS: dict[str, BackendKind] = {b.name: b for b in (LOCAL, KUBERNETES)}


def catalog_options() -> dict[str, list[OptionCheck]]:
    """Every catalog key a backend reads, with its checks (a key two backends read
    is checked by both: a catalog may serve either)."""
    options: dict[str, list[OptionCheck]] = {}
    for kind in BACKENDS.values():
        for key, check in {**COMMON_OPTIONS, **kind.catalog_options}.items():
            if check not in options.setdefault(key, []):
                options[key].append(check)
    return options


def backend_named(name: str) -> BackendKind:
    try:
        return BACKENDS[name]
    except KeyError:
        close = nearest(name, BACKENDS)
        raise ValueError(
            f"one of {', '.join(BACKENDS)}" + (f"; did you mean {close!r}?" if close else "")
        ) from None


def make_backend(settings: Settings) -> LaunchBackend:
    """The configured backend (its modules are imported now)."""
    return backend_named(settings.launch.backend).make(settings)


def settings_problems(environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the backends' settings: a LAUNCH_BACKEND no backend has,
    and each backend's own variables (checked whichever backend runs: a worker's
    settings are one table)."""
    variable = next(v for v in VARIABLES if v.name == "LAUNCH_BACKEND")
    raw = Reader(environ).raw(variable)
    found: list[str] = []
    try:
        name = variable.parser.parse(raw)
    except ValueError:
        name = None  # not a name at all: the core says so
    if name is not None:
        try:
            backend_named(name)
        except ValueError as exc:
            found.append(variable.parser.problem(variable.env, raw, exc))
    for kind in BACKENDS.values():
        found += kind.settings_problems(environ)
    return found


def start_checks(settings: Settings, backend: LaunchBackend) -> list[StartCheck]:
    """The configured backend's checks of where its containers run (a worker runs them
    once at start-up, ``scorefleet config --check-backend`` on demand)."""
    return backend_named(settings.launch.backend).start_checks(backend)
