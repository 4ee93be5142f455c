"""Every model protocol by its catalog name: the one list of them.

A new protocol is one module beside this one (a :class:`.base.ModelProtocol`) and
one line in :data:`PROTOCOLS`, plus its page in docs/models.md (docs/development.md,
"Extension points"). Nothing else names the protocols: the catalog's checks
(:mod:`workers.catalog`) and the backends ask this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scorefleet.settings import ModelSpec
from scorefleet.settings.declare import nearest
from workers.scoring.protocols.aws_lambda import LambdaProtocol
from workers.scoring.protocols.base import ModelProtocol
from workers.scoring.protocols.calls import CallLimits
from workers.scoring.protocols.json_http import JsonProtocol
from workers.scoring.protocols.sagemaker import SageMakerProtocol
from workers.scoring.protocols.sas_executions import SasExecutionsProtocol
from workers.scoring.protocols.v2 import V2Protocol

#: every protocol by its catalog name; the first is the default (an entry without
#: ``protocol``)
PROTOCOLS: dict[str, type[ModelProtocol]] = {
    p.name: p
    for p in (
        SageMakerProtocol,
        V2Protocol,
        JsonProtocol,
        LambdaProtocol,
        SasExecutionsProtocol,
    )
}
DEFAULT: type[ModelProtocol] = next(iter(PROTOCOLS.values()))


def protocol_for(name: str) -> type[ModelProtocol]:
    """The protocol of a catalog entry's ``protocol`` (empty: the default)."""
    if not name:
        return DEFAULT
    try:
        return PROTOCOLS[name]
    except KeyError:
        close = nearest(name, PROTOCOLS)
        raise ValueError(
            f"protocol must be one of {', '.join(PROTOCOLS)}, not {name!r}"
            + (f": did you mean {close!r}?" if close else "")
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


def _keys(cls: type[ModelProtocol]) -> list[str]:
    """The catalog keys a protocol reads: its options object, its top-level options."""
    return sorted({*([cls.options_key] if cls.options_key else []), *cls.entry_keys})


def catalog_keys() -> frozenset[str]:
    """Every catalog key some protocol reads."""
    return frozenset(k for p in PROTOCOLS.values() for k in _keys(p))


def entry_problems(image: str, entry: Mapping[str, Any]) -> list[str]:
    """What is wrong with an entry's protocol and its options, every problem, each
    naming the image and the key. Another protocol's options are refused, naming it."""
    name = entry.get("protocol")
    if name is not None and not (isinstance(name, str) and name):
        return []  # not a name: the core says so (scorefleet/settings/catalog.py)
    try:
        cls = protocol_for(str(name or ""))
    except ValueError as exc:
        return [f"{image}: {exc}"]
    found: list[str] = []
    given = [k for k in _keys(cls) if k in entry]
    try:
        cls.parse_options(cls.raw_options(entry))
    except ValueError as exc:
        # name the object the options are in (options at the top level name themselves)
        where = cls.options_key if cls.options_key in entry or not given else None
        found.append(f"{image}: {where}: {exc}" if where else f"{image}: {exc}")
    for other in PROTOCOLS.values():
        for key in _keys(other):
            if key in entry and key not in given:
                what = "holds options" if key == other.options_key else "is an option"
                found.append(
                    f"{image}: {key!r} {what} of the {other.name} protocol, but the "
                    f"entry's protocol is {cls.name!r}"
                )
    return found
