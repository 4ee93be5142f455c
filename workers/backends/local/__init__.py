"""The ``local`` launch backend: a model process per file on this machine
(:mod:`.backend`), the state directory and the processes it knows (:mod:`.runs`),
starting and stopping one (:mod:`.processes`), their run records (:mod:`.runrecords`),
the warm pool (:mod:`.warm`), the machine's model slots (:mod:`.capacity`), the
reaper (:mod:`.reaper`) and its catalog keys (:mod:`.config`). :data:`BACKEND` is what
the registry knows of it; importing this package loads nothing else."""

from __future__ import annotations

from scorefleet.settings import Settings
from workers.backends.base import BackendKind, LaunchBackend
from workers.backends.local.config import CATALOG_OPTIONS


def _make(settings: Settings) -> LaunchBackend:
    from workers.backends.local.backend import LocalBackend

    return LocalBackend(
        settings.local.state_dir,
        settings.models.launch_timeout,
        settings.models.log_lines,
        warm_idle=settings.launch.warm_idle_seconds,
        warm_max=settings.launch.warm_max_per_image,
        max_live=settings.local.max_live_models,
        model_aws=settings.local.model_aws,
        served=tuple(
            image for image, entry in settings.models.catalog.items() if entry.get("command")
        ),
    )


#: the registry line's entry (workers/backends/registry.py)
BACKEND = BackendKind(name="local", make=_make, catalog_options=CATALOG_OPTIONS)
