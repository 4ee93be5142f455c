"""Model protocols: how a worker talks to a model server (one module per protocol).

``base`` holds the interface (:class:`ModelProtocol`), the limits every call keeps
(:class:`CallLimits`), ``registry`` the list of protocols (:data:`PROTOCOLS`); ``calls`` the bounded
HTTP plumbing they share. docs/models.md describes each contract.
"""

from workers.scoring.protocols.base import CallLimits, ModelProtocol
from workers.scoring.protocols.registry import (
    PROTOCOLS,
    check_catalog,
    open_protocol,
    probe,
    protocol_for,
)

__all__ = [
    "PROTOCOLS",
    "CallLimits",
    "ModelProtocol",
    "check_catalog",
    "open_protocol",
    "probe",
    "protocol_for",
]
