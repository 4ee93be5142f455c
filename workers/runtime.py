"""Per-process singletons of a worker: settings, S3 client, backend, ledger.

Created on first use, after Celery forked/started the process, and shared by the
task threads (all of them are thread-safe).
"""

from __future__ import annotations

import functools
import threading

from scorefleet.settings import Settings
from scorefleet.storage import s3io
from scorefleet.storage.ledger import Ledger
from workers.backends import LaunchBackend, make_backend
from workers.settings import load


@functools.cache
def settings() -> Settings:
    return load()


def s3() -> s3io.S3Client:
    return s3io.client(settings().aws.region)


_backend_lock = threading.Lock()


@functools.cache
def _make_backend() -> LaunchBackend:
    return make_backend(settings())


def backend() -> LaunchBackend:
    """One backend per process (with its connection pools and tokens), even when the
    first steps of several threads ask for it at once."""
    with _backend_lock:
        return _make_backend()


@functools.cache
def ledger() -> Ledger:
    return Ledger(settings(), s3())
