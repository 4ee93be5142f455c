"""Launch backends: ``local`` (a process per file) and ``kubernetes`` (a pod per file)."""

from __future__ import annotations

from tasks.settings import Settings
from workers.backends.base import Endpoint, LaunchBackend

__all__ = ["Endpoint", "LaunchBackend", "make_backend"]


def make_backend(settings: Settings) -> LaunchBackend:
    if settings.launch_backend == "local":
        from workers.backends.local import LocalBackend

        return LocalBackend(settings.state_dir, settings.launch_timeout, settings.model_log_lines)
    raise NotImplementedError(f"launch backend {settings.launch_backend!r} is not available yet")
