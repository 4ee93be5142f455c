"""Per-process singletons of a worker: settings, S3 client, backend, ledger.

Created on first use, after Celery forked/started the process, and shared by the
task threads (all of them are thread-safe).
"""

from __future__ import annotations

import functools

from tasks import s3io
from tasks.ledger import Ledger
from tasks.settings import Settings, load
from workers.backends import LaunchBackend, make_backend


@functools.cache
def settings() -> Settings:
    return load()


def s3() -> s3io.S3Client:
    return s3io.client(settings().aws_region)


@functools.cache
def backend() -> LaunchBackend:
    return make_backend(settings())


@functools.cache
def ledger() -> Ledger:
    return Ledger(settings(), s3())
