"""Transitional: the sagemaker protocol moved to workers/protocols/sagemaker.py.

Re-exported here for code written against this module; nothing in the repository
imports it any more, new code uses :mod:`workers.protocols`. Remove after a release.
"""

from workers.protocols.sagemaker import (
    CSV_TYPES,
    RESPONSE_FORMATS,
    SageMakerProtocol,
    count_records,
)

__all__ = ["CSV_TYPES", "RESPONSE_FORMATS", "SageMakerProtocol", "count_records"]
