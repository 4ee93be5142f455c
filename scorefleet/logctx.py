"""Log lines that say which file they are about, one record per line.

``with bind(job.run_id, str(job.source)): ...`` puts the pipeline id and the S3
URI into every record logged inside (per thread/task, via contextvars);
:class:`ContextFilter` exposes them to formatters as ``%(pipeline)s`` and
``%(s3_uri)s``; :class:`RedactingFormatter` writes every record safely:

* control characters (newlines, carriage returns, ANSI escapes, Unicode line
  separators and bidi overrides) are escaped in every value a record carries: the
  message with its arguments, the pipeline id and S3 URI fields, and exception
  messages, so that a key or a message with a newline cannot write a forged line;
* credentials are masked in the message and in exception messages
  (:mod:`scorefleet.redact`);
* tracebacks keep their lines (frames are scorefleet's and its libraries' code,
  masked like the rest); each exception's own text is escaped and masked.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import traceback
from collections.abc import Iterator

from scorefleet.redact import redact

_pipeline: contextvars.ContextVar[str] = contextvars.ContextVar("pipeline", default="-")
_uri: contextvars.ContextVar[str] = contextvars.ContextVar("s3_uri", default="-")

FORMAT = "%(asctime)s %(levelname)s [%(pipeline)s %(s3_uri)s] %(name)s: %(message)s"

#: C0 and C1 controls, DEL, Unicode line/paragraph separators, bidi marks and overrides.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape(text: str) -> str:
    """``text`` on one line: control characters written as ``\\n``, ``\\x1b``, ..."""
    return _CONTROL.sub(_escape_one, text)


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


def format_exception(exc: BaseException) -> str:
    """A traceback as Python prints it, with each exception's text (which may come
    from anywhere: a key, a model's answer) masked and on one line."""
    return "".join(_exception_chunks(traceback.TracebackException.from_exception(exc))).rstrip("\n")


def _exception_chunks(te: traceback.TracebackException) -> Iterator[str]:
    if te.__cause__ is not None:
        yield from _exception_chunks(te.__cause__)
        yield "\nThe above exception was the direct cause of the following exception:\n\n"
    elif te.__context__ is not None and not te.__suppress_context__:
        yield from _exception_chunks(te.__context__)
        yield "\nDuring handling of the above exception, another exception occurred:\n\n"
    if te.stack:
        yield "Traceback (most recent call last):\n"
        yield from (redact(frame) for frame in te.stack.format())
    for line in te.format_exception_only():
        yield escape(redact(line.rstrip("\n"))) + "\n"
    for i, sub in enumerate(getattr(te, "exceptions", None) or (), 1):  # an ExceptionGroup
        yield f"  sub-exception {i}:\n"
        yield from ("    " + ln + "\n" for ln in "".join(_exception_chunks(sub)).splitlines())


class RedactingFormatter(logging.Formatter):
    """Writes each record on its own line(s), credentials masked (see the module)."""

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)  # other handlers keep the original
        safe.msg, safe.args = escape(redact(record.getMessage())), None
        for name in ("pipeline", "s3_uri"):
            if hasattr(safe, name):
                setattr(safe, name, escape(str(getattr(safe, name))))
        safe.exc_text = None  # another formatter may have cached an unescaped traceback
        return super().format(safe)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        exc = ei[1]
        if exc is None:
            return super().formatException(ei)
        return format_exception(exc)


def install(handler: logging.Handler, fmt: str = FORMAT) -> None:
    """Give a handler our filter and our redacting format (idempotent)."""
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())
    handler.setFormatter(RedactingFormatter(fmt))
