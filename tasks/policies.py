"""Pure policies of the steps: they read no settings and no clock of their own."""

from __future__ import annotations

import random


def compute_backoff(retries: int, base: float, cap: float, rng: random.Random) -> int:
    """The delay before retry ``retries + 1``, in whole seconds (SQS DelaySeconds):
    exponential (``base * 2**retries``, at most ``cap``) with full jitter over its
    upper half, and never under a second."""
    ceiling = min(cap, base * 2**retries)
    return max(1, round(rng.uniform(ceiling / 2, ceiling)))


def wait_delay(requested: int | None, rng: random.Random) -> int:
    """How long a step that must wait its turn goes back to the queue for: what the
    reason asked for, else a few seconds (spread, so waiting steps do not return in
    step)."""
    return requested or rng.randint(2, 6)


def lease_wait(left: float, rng: random.Random) -> int:
    """How long a redelivered launch waits for the live delivery's lease: until it
    has run out, a little after (SQS delays at most 900 s)."""
    return min(900, int(left) + rng.randint(1, 3))
