"""What every model protocol is: one interface, the same guarantees.

A protocol turns a :class:`~workers.scoring.batches.Batch` into the requests its kind of
model server takes and the answers back into :class:`~workers.scoring.batches.Scores`.
Whatever the protocol:

* one result row per input row, in order -- anything else raises
  :class:`~scorefleet.errors.RowsRefused` and nothing is written;
* failures sorted: :class:`~scorefleet.errors.ModelUnavailable` (transient: connection
  refused or reset, timeouts, 429, 5xx) or :class:`~scorefleet.errors.ModelError`
  (permanent), :class:`~scorefleet.errors.RowsRefused` when the model refused the rows
  (a 4xx answer, a wrong row count), always with the server's message;
* bounded: at most ``limits.pool_size`` requests in flight, answers capped, one
  deadline (``limits.timeout``) for all the requests of a mini-batch.

The protocol is chosen per image by the operator (catalog key ``protocol``), never
by a file's tags; its options (``v2: {...}``, ``json: {...}``, ...) are checked when
a worker starts. The protocols themselves are listed in :mod:`.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores
from workers.scoring.protocols.calls import CallLimits, HttpModel

__all__ = ["CallLimits", "ModelProtocol"]


class ModelProtocol(ABC):
    """One model server spoken to in one protocol. Thread-safe: the scoring loop
    calls :meth:`score` from several threads at once."""

    #: the catalog value of ``protocol``
    name: ClassVar[str]
    #: how readiness reads in messages ("GET /ping")
    readiness: ClassVar[str] = "GET /ping"

    def __init__(self, endpoint: str, spec: ModelSpec, limits: CallLimits) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.spec = spec
        self.limits = limits
        self.options = self.parse_options(spec.protocol_options)
        self.http = HttpModel(endpoint, limits)

    # ------------------------------------------------------------- options
    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> Any:
        """This protocol's catalog options, typed; ValueError names what is wrong."""
        if raw:
            raise ValueError(f"the {cls.name} protocol takes no options")
        return None

    @classmethod
    def describe_readiness(cls, spec: ModelSpec) -> str:
        """Readiness as messages name it (``GET /ping``)."""
        return cls.readiness

    @classmethod
    def pod_probe(cls, spec: ModelSpec) -> dict[str, Any]:
        """The kubernetes readiness probe handler for this protocol's readiness:
        ``{"httpGet": {"path": ...}}`` or ``{"tcpSocket": {}}`` (the port is added by
        the backend)."""
        return {"httpGet": {"path": "/ping"}}

    # ---------------------------------------------------------------- calls
    @abstractmethod
    def ready(self, timeout: float) -> bool:
        """Readiness as this protocol defines it (one check, within ``timeout``)."""

    @abstractmethod
    def score(self, batch: Batch) -> Scores:
        """Score one mini-batch: exactly ``batch.rows`` rows back, in order. Raises
        RowsRefused / ModelError (permanent) or ModelUnavailable (transient)."""

    def close(self) -> None:
        self.http.close()
