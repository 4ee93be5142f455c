"""What every model protocol is: one interface, one registry, the same guarantees.

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
a worker starts (:func:`check_catalog`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from scorefleet.settings import PROTOCOL_OPTION_KEYS, ModelSpec
from workers.scoring.batches import Batch, Scores
from workers.scoring.protocols.calls import CallLimits, HttpModel

__all__ = ["PROTOCOLS", "CallLimits", "ModelProtocol", "check_catalog", "protocol_for"]


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


def _registry() -> dict[str, type[ModelProtocol]]:
    from workers.scoring.protocols.aws_lambda import LambdaProtocol
    from workers.scoring.protocols.json_http import JsonProtocol
    from workers.scoring.protocols.sagemaker import SageMakerProtocol
    from workers.scoring.protocols.sas_executions import SasExecutionsProtocol
    from workers.scoring.protocols.v2 import V2Protocol

    found: list[type[ModelProtocol]] = [
        SageMakerProtocol,
        V2Protocol,
        JsonProtocol,
        LambdaProtocol,
        SasExecutionsProtocol,
    ]
    return {p.name: p for p in found}


#: every protocol by its catalog name (the names the settings module accepts)
PROTOCOLS: dict[str, type[ModelProtocol]] = _registry()
if set(PROTOCOLS) != set(PROTOCOL_OPTION_KEYS):  # pragma: no cover - a developer's slip
    raise ImportError(f"protocols {sorted(PROTOCOLS)} != settings {sorted(PROTOCOL_OPTION_KEYS)}")


def protocol_for(name: str) -> type[ModelProtocol]:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"unknown model protocol {name!r} (known: {', '.join(PROTOCOLS)})"
        ) from None


def open_protocol(endpoint: str, spec: ModelSpec, limits: CallLimits) -> ModelProtocol:
    return protocol_for(spec.protocol)(endpoint, spec, limits)


def probe(endpoint: str, spec: ModelSpec, timeout: float = 3.0) -> bool:
    """One readiness check of the model at ``endpoint`` in its protocol."""
    proto = open_protocol(endpoint, spec, CallLimits(timeout=timeout, pool_size=1, attempts=1))
    try:
        return proto.ready(timeout)
    finally:
        proto.close()


def check_catalog(catalog: Mapping[str, Mapping[str, Any]]) -> None:
    """Every entry's protocol options parse; ValueError names the image and the key."""
    for image, entry in catalog.items():
        name = str(entry.get("protocol", "sagemaker"))
        cls = protocol_for(name)
        key = PROTOCOL_OPTION_KEYS[name]
        try:
            cls.parse_options(entry.get(key, {}) if key else {})
        except ValueError as exc:
            raise ValueError(f"{image}: {key or 'protocol'}: {exc}") from None
        for other, other_key in PROTOCOL_OPTION_KEYS.items():
            if other_key and other_key != key and other_key in entry:
                raise ValueError(
                    f"{image}: {other_key!r} holds options of the {other} protocol, but "
                    f"the entry's protocol is {name!r}"
                )
