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
by a file's tags. Everything else about it lives with it: its options (the object
under :attr:`ModelProtocol.options_key`, checked by :meth:`ModelProtocol.parse_options`
when a worker starts) and what "ready" means (:meth:`ModelProtocol.readiness`, as
data: a launch backend turns it into its own check, e.g. a pod's readiness probe).
The protocols themselves are listed in :mod:`.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores
from workers.scoring.contract import Contract
from workers.scoring.protocols.calls import CallLimits, HttpModel

__all__ = ["CallLimits", "HttpCheck", "ModelProtocol", "PortCheck", "Readiness"]


@dataclass(frozen=True)
class HttpCheck:
    """A request that answers 200 when the model is ready (and whose answer holds
    ``contains``, when given)."""

    path: str
    method: str = "GET"
    contains: str = ""
    #: how messages name it, when not ``<method> <path>``
    shown: str = ""

    def __str__(self) -> str:
        if self.shown:
            return self.shown
        text = f"{self.method} {self.path}"
        return text + (f" (answering {self.contains!r})" if self.contains else "")


@dataclass(frozen=True)
class PortCheck:
    """The model's port accepts a TCP connection."""

    def __str__(self) -> str:
        return "a connection to its port"


@dataclass(frozen=True)
class Readiness:
    """What "ready" means for a model, as data: every check passes, in order. The
    worker runs them (:meth:`ModelProtocol.ready`); a launch backend turns them into
    its own kind of check (the kubernetes backend: a pod's readiness probe)."""

    checks: tuple[HttpCheck | PortCheck, ...]

    def __str__(self) -> str:
        return " and ".join(str(c) for c in self.checks)


class ModelProtocol(ABC):
    """One model server spoken to in one protocol. Thread-safe: the scoring loop
    calls :meth:`score` from several threads at once."""

    #: the catalog value of ``protocol``
    name: ClassVar[str]
    #: the catalog key of this protocol's options object (None: it takes no options)
    options_key: ClassVar[str | None] = None
    #: the names of its options (the keys of that object)
    option_names: ClassVar[frozenset[str]] = frozenset()
    #: options also read at the top level of a catalog entry (the sagemaker
    #: protocol's, as catalogs spelled them before they had an object of their own)
    entry_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, endpoint: str, spec: ModelSpec, limits: CallLimits) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.spec = spec
        self.limits = limits
        self.options = self.options_of(spec)
        self.http = HttpModel(endpoint, limits)
        self._readiness = self.readiness(spec)

    # ------------------------------------------------------------- options
    @classmethod
    def raw_options(cls, entry: Mapping[str, Any]) -> dict[str, Any]:
        """This protocol's options as a catalog entry (or :attr:`ModelSpec.extra`)
        gives them: the object under :attr:`options_key`, plus the :attr:`entry_keys`
        at the top level. ValueError when they are not an object, or one is given
        in both places."""
        if cls.options_key is None:
            return {}
        raw = entry.get(cls.options_key, {})
        if not isinstance(raw, Mapping):
            raise ValueError("expected a JSON object of options")
        top = {k: entry[k] for k in sorted(cls.entry_keys) if k in entry}
        twice = sorted(set(top) & set(raw))
        if twice:
            raise ValueError(
                f"{twice[0]} is given twice, at the top level of the entry and in "
                f"{cls.options_key}: keep one"
            )
        return {**top, **raw}

    @classmethod
    def as_entry(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Options as :meth:`raw_options` gave them, back in a catalog entry."""
        return {cls.options_key: dict(raw)} if cls.options_key and raw else {}

    @classmethod
    def parse_options(cls, raw: Mapping[str, Any]) -> Any:
        """This protocol's catalog options, typed; ValueError names what is wrong."""
        if raw:
            raise ValueError(f"the {cls.name} protocol takes no options")
        return None

    @classmethod
    def options_of(cls, spec: ModelSpec) -> Any:
        """The typed options of an image's catalog entry."""
        return cls.parse_options(cls.raw_options(spec.extra))

    @classmethod
    def readiness(cls, spec: ModelSpec) -> Readiness:
        """What "ready" means for a model of this catalog entry (as data)."""
        return Readiness((HttpCheck("/ping"),))

    @classmethod
    def describe_readiness(cls, spec: ModelSpec) -> str:
        """Readiness as messages name it (``GET /ping``)."""
        return str(cls.readiness(spec))

    @classmethod
    def sends_header(cls, spec: ModelSpec) -> bool:
        """Is a CSV mini-batch sent with the input's header line? (The reader counts
        it in a mini-batch's size.)"""
        return True

    # ---------------------------------------------------------------- calls
    def ready(self, timeout: float) -> bool:
        """Readiness as this protocol defines it (:meth:`readiness`): every check,
        each within ``timeout``."""
        for check in self._readiness.checks:
            if isinstance(check, PortCheck):
                if not self.http.accepts(timeout):
                    return False
                continue
            reply = self.http.probe(check.method, check.path, timeout)
            if reply is None or reply.status != 200:
                return False
            if check.contains and check.contains not in reply.body.decode("utf-8", "replace"):
                return False
        return True

    @property
    def max_in_flight(self) -> int:
        """Mini-batches this model may have in flight (``limits.pool_size``:
        SCOREFLEET_MAX_IN_FLIGHT): what the scoring loop keeps in flight for it."""
        return self.limits.pool_size

    def model_contract(self) -> Contract | None:
        """The model's own input contract, read from the ready model where its
        protocol publishes one (the v2 protocol's model metadata); None otherwise.
        Checked against the file before the first mini-batch. Raises
        :class:`~scorefleet.errors.ContractMismatch` when the model's inputs contradict
        the catalog's options for it."""
        return None

    @abstractmethod
    def score(self, batch: Batch) -> Scores:
        """Score one mini-batch: exactly ``batch.rows`` rows back, in order. Raises
        RowsRefused / ModelError (permanent) or ModelUnavailable (transient)."""

    def close(self) -> None:
        self.http.close()
