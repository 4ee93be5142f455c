"""Every model protocol by its catalog name: the one list of them.

A new protocol is one module beside this one (a :class:`.base.ModelProtocol`) and
one line in :data:`PROTOCOLS` (docs/development.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scorefleet.settings import PROTOCOL_OPTION_KEYS, ModelSpec
from workers.scoring.protocols.aws_lambda import LambdaProtocol
from workers.scoring.protocols.base import ModelProtocol
from workers.scoring.protocols.calls import CallLimits
from workers.scoring.protocols.json_http import JsonProtocol
from workers.scoring.protocols.sagemaker import SageMakerProtocol
from workers.scoring.protocols.sas_executions import SasExecutionsProtocol
from workers.scoring.protocols.v2 import V2Protocol


def _registry() -> dict[str, type[ModelProtocol]]:
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
