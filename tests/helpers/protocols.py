"""Calling a model in a protocol from a test, in as few words as the old client took."""

from __future__ import annotations

from typing import Any

from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, Scores, span_of
from workers.scoring.protocols.base import ModelProtocol
from workers.scoring.protocols.calls import CallLimits
from workers.scoring.protocols.sagemaker import SageMakerProtocol


def sagemaker(
    url: str,
    *,
    timeout: float = 5,
    pool_size: int = 1,
    attempts: int = 3,
    backoff: float = 0.5,
    **spec: Any,
) -> SageMakerProtocol:
    limits = CallLimits(timeout=timeout, pool_size=pool_size, attempts=attempts, backoff=backoff)
    return SageMakerProtocol(url, ModelSpec(image="test/model:1", extra=spec), limits)


def invoke(proto: ModelProtocol, payload: bytes, first_row: int, rows: int) -> Scores:
    """One mini-batch of raw CSV ``payload`` (its header line included, as sent)."""
    return proto.score(Batch(first_row, rows, span_of(first_row, rows), (), csv=payload))
