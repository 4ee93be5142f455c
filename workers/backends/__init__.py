"""Launch backends: ``local`` (a process per file) and ``kubernetes`` (a pod per file).

Each backend is imported only when it is chosen: the kubernetes client is never
loaded by a process that does not use it (and never by the Lambda).
"""

from __future__ import annotations

from scorefleet.settings import Settings
from workers.backends.base import Endpoint, LaunchBackend

__all__ = ["Endpoint", "LaunchBackend", "make_backend"]


def make_backend(settings: Settings) -> LaunchBackend:
    if settings.launch.backend == "local":
        from workers.backends.local.backend import LocalBackend

        return LocalBackend(
            settings.local.state_dir,
            settings.models.launch_timeout,
            settings.models.log_lines,
            warm_idle=settings.launch.warm_idle_seconds,
            warm_max=settings.launch.warm_max_per_image,
            max_live=settings.local.max_live_models,
        )
    if settings.launch.backend == "kubernetes":
        from workers.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    raise NotImplementedError(f"launch backend {settings.launch.backend!r} is not available")
