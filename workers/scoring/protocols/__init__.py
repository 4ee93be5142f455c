"""Model protocols: how a worker talks to a model server (one module per protocol).

``base`` holds the interface (:class:`ModelProtocol`), what readiness means as data
(:class:`Readiness`), the limits every call keeps (:class:`CallLimits`);
``registry`` the list of protocols (:data:`PROTOCOLS`); ``calls`` the bounded HTTP
plumbing they share. docs/models.md describes each contract.
"""

from workers.scoring.protocols.base import (
    CallLimits,
    HttpCheck,
    ModelProtocol,
    PortCheck,
    Readiness,
)
from workers.scoring.protocols.registry import (
    PROTOCOLS,
    open_protocol,
    probe,
    protocol_for,
)

__all__ = [
    "PROTOCOLS",
    "CallLimits",
    "HttpCheck",
    "ModelProtocol",
    "PortCheck",
    "Readiness",
    "open_protocol",
    "probe",
    "protocol_for",
]
