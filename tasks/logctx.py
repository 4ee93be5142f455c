"""Log lines that say which file they are about.

``with bind(job.run_id, str(job.source)): ...`` puts the pipeline id and the S3
URI into every record logged inside (per thread/task, via contextvars);
:class:`ContextFilter` exposes them to formatters as ``%(pipeline)s`` and
``%(s3_uri)s``; :class:`RedactingFormatter` masks credentials in everything a
handler writes, tracebacks included.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from tasks.redact import redact

_pipeline: contextvars.ContextVar[str] = contextvars.ContextVar("pipeline", default="-")
_uri: contextvars.ContextVar[str] = contextvars.ContextVar("s3_uri", default="-")

FORMAT = "%(asctime)s %(levelname)s [%(pipeline)s %(s3_uri)s] %(name)s: %(message)s"


@contextlib.contextmanager
def bind(pipeline: str, s3_uri: str) -> Iterator[None]:
    t1, t2 = _pipeline.set(pipeline), _uri.set(s3_uri)
    try:
        yield
    finally:
        _pipeline.reset(t1)
        _uri.reset(t2)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.pipeline = _pipeline.get()
        record.s3_uri = _uri.get()
        return True


class RedactingFormatter(logging.Formatter):
    """Masks credentials in the whole formatted record, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install(handler: logging.Handler, fmt: str = FORMAT) -> None:
    """Give a handler our filter and our redacting format (idempotent)."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    handler.setFormatter(RedactingFormatter(fmt))
