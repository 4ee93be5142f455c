"""Launch backends: ``local`` (a process per file) and ``kubernetes`` (a pod per file).

``base`` holds the interface (:class:`LaunchBackend`) and what the registry knows of a
backend (:class:`~workers.backends.base.BackendKind`); ``registry`` lists them
(:data:`~workers.backends.registry.BACKENDS`). Each backend is imported only when it
is chosen: the kubernetes client is never loaded by a process that does not use it
(and never by the Lambda).
"""

from __future__ import annotations

from workers.backends.base import Endpoint, LaunchBackend
from workers.backends.registry import BACKENDS, make_backend

__all__ = ["BACKENDS", "Endpoint", "LaunchBackend", "make_backend"]
