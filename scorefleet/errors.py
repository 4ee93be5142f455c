"""Failure classes and the one rule that sorts any exception into retry or give up.

* :class:`PermanentError` and its subclasses: retrying cannot help (bad input, a
  disallowed image, a model that answers the wrong number of rows). The file gets
  its ``.error`` at once.
* :class:`TransientError`, connection errors, HTTP 5xx, throttling: retried with
  exponential backoff and jitter, a bounded number of times, then ``.error``.
"""

from __future__ import annotations

import http.client
import socket

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)


class PipelineError(Exception):
    """Base of the errors the pipeline raises on purpose; ``str()`` is shown to users."""

    transient = False
    kind = "Error"

    def __init__(self, message: str, *, model_logs: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.model_logs = model_logs


class PermanentError(PipelineError):
    kind = "Error"


class BadInput(PermanentError):
    kind = "BadInput"


class ContractMismatch(BadInput):
    """The file's columns do not fit the model's inputs (its contract: declared in the
    model catalog, an MLflow signature, or the model's own metadata). Found before any
    model starts, or before the first mini-batch: never retried."""

    kind = "ContractMismatch"


class Rejected(PermanentError):
    """The file was refused before any work: disallowed image, bad tags, wrong place."""

    kind = "Rejected"


class ModelError(PermanentError):
    """The model failed in a way retrying cannot fix (crash at start, 4xx, wrong rows)."""

    kind = "ModelError"


class RowsRefused(ModelError):
    """The model refused these rows (a 4xx answer, a wrong row count): the rows, not the
    model, are the problem, so a smaller part of them may score (issue 16 bisects only
    on this). Every protocol raises it for a refusal; other ModelErrors (a model that
    cannot start, an answer too large or unreadable) are never bisected."""

    kind = "ModelError"


class OutOfTime(PermanentError):
    """A step ran as long as SQS can protect its message (12 hours from receipt)."""

    kind = "OutOfTime"


class TransientError(PipelineError):
    transient = True
    kind = "Transient"


class MustWait(TransientError):
    """The step cannot go ahead yet. It waits its turn in the queue: it is put back
    with a delay (``delay`` seconds, or a short random one), and this does not count
    against its retries."""

    kind = "MustWait"

    def __init__(self, message: str, *, delay: int | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class AtCapacity(MustWait):
    """No room for another model container right now (the live-model limit, or a
    namespace's ResourceQuota)."""

    kind = "AtCapacity"


class LeaseHeld(MustWait):
    """Another delivery of this same launch holds the run's live lease (the first
    delivery of a redelivered message, still at work): wait until it has expired."""

    kind = "LeaseHeld"


class Continues(MustWait):
    """The score step hands the file to a continuation of itself (its committed parts
    recorded) before it runs past SCOREFLEET_MAX_STEP_SECONDS (issue 26)."""

    kind = "Continues"


class ModelUnavailable(TransientError):
    """The model did not answer (connection refused/reset, timeout, 5xx, 429)."""

    kind = "ModelUnavailable"


class Untrusted(Exception):
    """A task message asks for something this worker cannot vouch for (a run id,
    source, staging key or container that is not the job's own; scorefleet.vouch). Not a
    PipelineError: the step refuses it without acting, no .error and no teardown
    (they would act on the same untrusted fields)."""


# S3 / SQS error codes worth retrying.
RETRYABLE_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "OperationAborted",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Would retrying the step plausibly succeed?"""
    if isinstance(exc, PipelineError):
        return exc.transient
    transient_attr = getattr(exc, "transient", None)
    if isinstance(transient_attr, bool):
        return transient_attr
    if _is_kubernetes_api_error(exc):
        # status 0: no HTTP answer (TLS or connection problem)
        status = int(getattr(exc, "status", 0) or 0)
        return status in (0, 429) or status >= 500
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return err.get("Code") in RETRYABLE_AWS_CODES or int(status or 0) >= 500
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, BotoCoreError):
        return False
    return isinstance(
        exc, ConnectionError | TimeoutError | socket.timeout | http.client.HTTPException
    ) or _is_urllib3_transient(exc)


def _is_kubernetes_api_error(exc: BaseException) -> bool:
    """A kubernetes client ApiException, recognised without importing kubernetes
    (the Lambda imports this module and must not load it)."""
    return any(
        c.__name__ == "ApiException" and c.__module__.startswith("kubernetes")
        for c in type(exc).__mro__
    )


def _is_urllib3_transient(exc: BaseException) -> bool:
    try:
        from urllib3.exceptions import HTTPError
    except ImportError:  # pragma: no cover - urllib3 always comes with botocore
        return False
    return isinstance(exc, HTTPError)


def describe(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for a user-facing report, without tracebacks."""
    if isinstance(exc, PipelineError):
        return exc.kind, exc.message
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = exc.operation_name
        return "AWSError", f"{op} failed: {err.get('Code', '?')}: {err.get('Message', '')}".strip()
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    return "InternalError", f"{name}: {exc}" if str(exc) else name
