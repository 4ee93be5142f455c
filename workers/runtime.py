"""A worker process's dependencies, made once and passed to the steps explicitly:
its settings, S3 client, launch backend and run ledger (the Lambda has its own,
:class:`lambda_enqueue.handler.Runtime`).

:func:`current` builds the process's runtime on first use, after Celery forked or
started the process; the task threads share it (all its parts are thread-safe).
Steps receive it from :meth:`tasks.base.PipelineStep.run_step` and never look it up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from scorefleet.settings import Settings
from scorefleet.storage import s3io
from scorefleet.storage.ledger import Ledger
from workers.backends import LaunchBackend, make_backend


@dataclass
class WorkerRuntime:
    settings: Settings
    s3: s3io.S3Client
    ledger: Ledger
    _backend: LaunchBackend | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> WorkerRuntime:
        s3 = s3io.client(settings.aws.region)
        return cls(settings, s3, Ledger(settings, s3))

    @property
    def backend(self) -> LaunchBackend:
        """One backend per process (with its connection pools and tokens), made when a
        step first needs it, even when several threads ask at once."""
        with self._lock:
            if self._backend is None:
                self._backend = make_backend(self.settings)
            return self._backend


#: This process's runtime, once made (a box rather than a global statement).
_process: list[WorkerRuntime] = []
_process_lock = threading.Lock()


def current() -> WorkerRuntime:
    """This process's runtime (made from the environment's settings on first use)."""
    with _process_lock:
        if not _process:
            from workers.settings import load

            _process.append(WorkerRuntime.create(load()))
        return _process[0]


def reset() -> None:
    """Forget this process's runtime (tests that change the environment)."""
    with _process_lock:
        _process.clear()
