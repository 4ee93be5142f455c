"""HTTP calls to a model, bounded the same way for every protocol.

* A deadline for the whole call (:class:`Deadline`): when it is up, the socket of the
  call's connection is shut down, wherever the call is blocked -- a model that sends
  its answer a byte at a time is cut off, not given one socket timeout per byte. A
  protocol that needs several requests for one mini-batch (sas-executions: submit,
  poll, fetch) runs them all under one deadline.
* An answer cap (``max_answer_ratio`` times the request, at least
  ``max_answer_floor``), read in chunks: no model can exhaust a worker's memory.
* The status sorted once for all: connection problems, timeouts, 429 and 5xx are
  transient (:class:`ModelUnavailable`); any other non-2xx answer is the model
  refusing the rows (:class:`RowsRefused`), with the server's message.
* A model bug told from a passing fault (:func:`retrying`): the same error answer
  (HTTP 500, or another 5xx but 502, 503 and 504; numbers aside) to the same request
  twice in a row is the model failing on what it was sent -- an exception in its code
  -- which no retry fixes. It is :class:`RowsRefused` at once, with the model's whole
  answer (its traceback), not six retries a minute later. 429, 502, 503, 504, timeouts
  and refused connections (a model busy, starting, or scaling) stay retried.
* A connection pool of ``pool_size`` connections that blocks when all are busy: at
  most that many requests are in flight, whatever the protocol sends concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError as Urllib3Error

from scorefleet.errors import ModelError, ModelUnavailable, RowsRefused

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 600
_READ = 64 * 1024
T = TypeVar("T")

_call = threading.local()


@dataclass(frozen=True)
class CallLimits:
    """How long, how much and how often a protocol may call its model."""

    timeout: float = 60.0  #: deadline of one mini-batch's call, all its requests together
    pool_size: int = 4  #: connections, so requests in flight at most
    attempts: int = 3  #: tries of a transient failure before it is the task's to retry
    backoff: float = 0.5  #: first retry delay (full jitter, doubling)
    max_answer_ratio: float = 20.0
    max_answer_floor: int = 1024 * 1024


class Deadline:
    """Ends the calls made under it when its time is up, wherever they are blocked."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.ends = time.monotonic() + seconds
        # the sockets of every call made under it (several threads' when it is shared
        # by the requests of one mini-batch: fan_out)
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._outer: Deadline | None = None

    def __enter__(self) -> Deadline:
        self._outer = getattr(_call, "deadline", None)
        _call.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _call.deadline = self._outer

    @contextlib.contextmanager
    def joined(self) -> Iterator[Deadline]:
        """Make this (running) deadline the current thread's too, for one call."""
        outer = getattr(_call, "deadline", None)
        _call.deadline = self
        try:
            yield self
        finally:
            _call.deadline = outer

    def left(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            # kept here: http.client hands the socket to the response (conn.sock = None)
            # when the answer ends with the connection
            if conn.sock is not None:
                self._socks.add(conn.sock)
            if self.expired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def current_deadline() -> Deadline | None:
    return getattr(_call, "deadline", None)


class _DeadlineConnection(HTTPConnection):
    """A pooled connection that the running call's :class:`Deadline` can cut."""

    def _guard(self) -> None:
        deadline = current_deadline()
        if deadline is not None:
            deadline.attach(self)

    def connect(self) -> None:
        super().connect()
        self._guard()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._guard()
        super().request(*args, **kwargs)


@dataclass(frozen=True)
class Reply:
    status: int
    ctype: str  # media type, lower case, no parameters ('' when none)
    body: bytes
    headers: Mapping[str, str]


def snippet(body: bytes | str) -> str:
    """The start of a server's message, on one line, for an error text."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text.strip().replace("\n", " | ")
    return text[:MAX_ERROR_BODY] + ("..." if len(text) > MAX_ERROR_BODY else "")


def row_note(first_row: int) -> str:
    """Why the model's row numbers differ from the file's."""
    if first_row <= 1:
        return ""
    return (
        f" (the model counts rows from the start of this mini-batch: its row 1 is "
        f"data row {first_row} of the file)"
    )


class HttpModel:
    """One model server's HTTP connections. Thread-safe."""

    def __init__(self, endpoint: str, limits: CallLimits) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self.limits = limits
        self.pool = urllib3.HTTPConnectionPool(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            maxsize=limits.pool_size,
            block=True,
            # the deadline ends a call; the socket timeout only backs it up (a little
            # later, so that a call cut off says why: the deadline, not "read timed out")
            timeout=urllib3.Timeout(
                connect=min(5.0, limits.timeout), read=limits.timeout * 1.1 + 0.5
            ),
            retries=False,
        )
        self.pool.ConnectionCls = _DeadlineConnection

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------- readiness
    def probe(
        self, method: str, path: str, timeout: float, body: bytes | None = None
    ) -> Reply | None:
        """One request for a readiness check; None when the server does not answer."""
        try:
            r = self.pool.request(
                method,
                path,
                body=body,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=timeout,
                retries=False,
            )
        except Urllib3Error:
            return None
        ctype = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return Reply(r.status, ctype, r.data, dict(r.headers))

    def accepts(self, timeout: float) -> bool:
        """Does the server's port accept a TCP connection?"""
        parts = urlsplit(self.endpoint)
        try:
            with socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 80), timeout
            ):
                return True
        except OSError:
            return False

    # ----------------------------------------------------------------- calls
    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        span: str,
        sent: int | None = None,
    ) -> Reply:
        """One request under the running deadline; the answer read within the cap
        (``sent``: the request size the cap is relative to, else ``len(body)``).
        Connection problems and a deadline that passed raise ModelUnavailable."""
        deadline = current_deadline()
        try:
            r = self.pool.urlopen(
                method,
                path,
                body=body,
                headers=dict(headers),
                retries=False,
                preload_content=False,
                decode_content=False,
            )
            try:
                return self._read(r, span, len(body or b"") if sent is None else sent)
            except BaseException:
                r.close()  # not reused: the rest of the answer is unread
                raise
            finally:
                r.release_conn()
        except (Urllib3Error, OSError) as exc:
            if deadline is not None and deadline.expired:
                raise self.late(span) from exc
            raise ModelUnavailable(f"the model did not answer for {span}: {exc}") from exc

    def late(self, span: str) -> ModelUnavailable:
        return ModelUnavailable(
            f"the model did not finish its answer for {span} within {self.limits.timeout:g}s "
            "(SCOREFLEET_MODEL_TIMEOUT, for the whole answer)"
        )

    def _read(self, r: Any, span: str, sent: int) -> Reply:
        cap = max(self.limits.max_answer_floor, int(self.limits.max_answer_ratio * sent))
        encoding = (r.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise ModelError(
                f"the model answered {span} with Content-Encoding {encoding!r}, "
                "which scorefleet does not ask for; answer uncompressed"
            )
        declared = r.headers.get("Content-Length", "")
        if 200 <= r.status < 300 and declared.isdigit() and int(declared) > cap:
            raise ModelError(self._too_big(span, int(declared), sent, cap))
        body = bytearray()
        for chunk in r.stream(_READ):
            body += chunk
            if len(body) > cap:
                raise ModelError(self._too_big(span, len(body), sent, cap, more=True))
        ctype = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return Reply(r.status, ctype, bytes(body), dict(r.headers))

    def _too_big(self, span: str, size: int, sent: int, cap: int, *, more: bool = False) -> str:
        lim = self.limits
        return (
            f"the model's answer for {span} is {'more than ' if more else ''}{size:,d} bytes, "
            f"larger than {cap:,d} bytes: SCOREFLEET_MAX_ANSWER_RATIO={lim.max_answer_ratio:g} "
            f"times the {sent:,d}-byte request, at least SCOREFLEET_MAX_ANSWER_FLOOR_MB="
            f"{lim.max_answer_floor / 1024 / 1024:g}; raise one of them if the model "
            "really answers that much, or send smaller mini-batches (SCOREFLEET_MAX_PAYLOAD_MB)"
        )


#: 5xx answers of a server that is busy, starting, or behind a proxy that lost it:
#: retried however often they repeat (as are 429, timeouts and refused connections)
BUSY_STATUSES = frozenset({502, 503, 504})
#: of a model's error answer, the end kept in an .error (a traceback ends with its cause)
MAX_ANSWER_KEPT = 4000
#: what may differ between two answers of the same error: numbers, addresses, ids
_VARYING = re.compile(r"0x[0-9a-fA-F]+|[0-9a-fA-F]{8,}(?:-[0-9a-fA-F]{4,})*|\d+")


class ServerError(ModelUnavailable):
    """A 5xx (or 429) answer: transient, retried; but see :meth:`repeats`."""

    def __init__(self, message: str, *, status: int, answer: str) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer

    def repeats(self, earlier: ModelUnavailable | None) -> bool:
        """Is this the same error answer as ``earlier`` (the previous try of the same
        request), and one a busy server does not give? Then the model fails on what
        it is sent: a bug, not a passing fault."""
        return (
            isinstance(earlier, ServerError)
            and self.status == earlier.status
            and self.status >= 500
            and self.status not in BUSY_STATUSES
            and _VARYING.sub("#", self.answer) == _VARYING.sub("#", earlier.answer)
        )


def server_error(status: int, body: bytes | str, message: str) -> ServerError:
    """A :class:`ServerError` of ``status`` (``message``: what the one-line error says)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return ServerError(f"{message}: {snippet(text)}", status=status, answer=text)


def kept_answer(answer: str) -> str:
    """The end of a model's error answer, whole lines, at most :data:`MAX_ANSWER_KEPT`
    characters (a traceback's last lines name its cause)."""
    text = answer.strip()
    if len(text) <= MAX_ANSWER_KEPT:
        return text
    tail = text[-MAX_ANSWER_KEPT:]
    tail = tail.split("\n", 1)[1] if "\n" in tail else tail
    skipped = text[: len(text) - len(tail)].count("\n")
    return f"[... {skipped} lines before]\n{tail}"


def model_failed(exc: ServerError, span: str) -> RowsRefused:
    """What the same error answer twice is: the model failing on ``span``."""
    answer = kept_answer(exc.answer) or "(an empty answer)"
    return RowsRefused(
        f"the model failed on {span}: it answered HTTP {exc.status} twice in a row with "
        "the same error, which retrying does not fix (an exception in the model's code, "
        "perhaps on these rows' values; a model that is busy or starting answers 503 or "
        "429, which are retried). The model's answer:\n" + answer
    )


def check_status(reply: Reply, span: str, first_row: int, *, ok: tuple[int, ...] = (200,)) -> None:
    """429 and 5xx: transient (:class:`ServerError`); any other status not in ``ok``:
    the rows refused."""
    if reply.status in ok:
        return
    if reply.status == 429 or reply.status >= 500:
        raise server_error(
            reply.status, reply.body, f"the model answered HTTP {reply.status} for {span}"
        )
    raise RowsRefused(
        f"the model rejected {span} with HTTP {reply.status}: {snippet(reply.body)}"
        f"{row_note(first_row)}"
    )


def check_count(n: int, rows: int, span: str) -> None:
    if n != rows:
        raise RowsRefused(
            f"the model answered {n} result rows for {span} ({rows} rows); "
            "every input row needs exactly one result row, in order"
        )


def with_deadline(limits: CallLimits, span: str, http: HttpModel, call: Callable[[], T]) -> T:
    """Run ``call`` under one deadline of ``limits.timeout`` seconds."""
    with Deadline(limits.timeout) as deadline:
        try:
            result = call()
        except ModelUnavailable:
            raise
        except (Urllib3Error, OSError) as exc:
            if deadline.expired:
                raise http.late(span) from exc
            raise ModelUnavailable(f"the model did not answer for {span}: {exc}") from exc
    if deadline.expired:  # cut off, though what came looked complete
        raise http.late(span)
    return result


def retrying(limits: CallLimits, span: str, attempt_once: Callable[[], T]) -> T:
    """Try a transient failure a few times (full jitter) before it is the task's; the
    same error answer twice in a row (:meth:`ServerError.repeats`) is the model's
    failure (:func:`model_failed`), not retried any more."""
    last: ModelUnavailable | None = None
    for attempt in range(1, limits.attempts + 1):
        try:
            return attempt_once()
        except ModelUnavailable as exc:
            if isinstance(exc, ServerError) and exc.repeats(last):
                raise model_failed(exc, span) from exc
            last = exc
            if attempt >= limits.attempts:
                raise
            delay = random.uniform(0, limits.backoff * 2 ** (attempt - 1))
            log.warning("model call for %s failed (%s); retrying in %.2fs", span, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def fan_out(
    pool: ThreadPoolExecutor,
    limits: CallLimits,
    http: HttpModel,
    span: str,
    calls: Sequence[Callable[[], T]],
) -> list[T]:
    """Run one mini-batch's requests (one per record) on ``pool`` -- at most its
    size at once -- all under the mini-batch's one deadline (one timer, shared by
    the pool's threads: when it is up, every call still running is cut off and
    those not started fail at once). The first failure in row order is the
    batch's; transient failures retry the whole batch (``limits.attempts``)."""

    def one(call: Callable[[], T], deadline: Deadline) -> T:
        if deadline.expired:
            raise http.late(span)
        with deadline.joined():
            return call()

    def run() -> list[T]:
        # one deadline (one timer) for all the records of the mini-batch
        with Deadline(limits.timeout) as deadline:
            futures: list[Future[T]] = [pool.submit(one, call, deadline) for call in calls]
            try:
                results = [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()
        if deadline.expired:
            raise http.late(span)
        return results

    return retrying(limits, span, run)
