"""Keep a long step's SQS message (and its run's lease) alive while it works.

SQS hands a received message to another consumer once its visibility timeout
expires, even if the first is still working on it. Every step therefore runs
under a :class:`Heartbeat` that, every third of the visibility timeout, extends
the message's visibility (``ChangeMessageVisibility``) and renews the run's lease
in the ledger (and the lease of the scoring attempt's upload, :attr:`writer`). If
the worker dies, the heartbeat dies with it and the message comes back one
visibility timeout later.

A step cannot take longer than SQS can protect it: a message's visibility cannot
be extended past 12 hours from its receipt. The heartbeat never asks for more than
what is left of those 12 hours, and :meth:`Heartbeat.check` (called by long steps
between units of work) stops a step at ``max_seconds`` with an :class:`OutOfTime`,
which ends in the file's ``.error``, rather than let the message be delivered to
another worker in the middle of the work.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

from botocore.config import Config

from scorefleet import aws
from scorefleet.errors import OutOfTime
from scorefleet.job import Job
from scorefleet.settings import SQS_VISIBILITY_CAP

log = logging.getLogger(__name__)


@functools.cache
def sqs_client(region: str) -> Any:
    return aws.client(
        "sqs", config=Config(region_name=region, retries={"mode": "standard", "max_attempts": 3})
    )


def sqs_receipt(request: Any) -> tuple[str, str] | None:
    """(queue URL, receipt handle) of the SQS message a Celery task is running."""
    props = getattr(request, "properties", None) or {}
    queue_url = (props.get("delivery_info") or {}).get("sqs_queue")
    receipt = props.get("delivery_tag")
    if isinstance(queue_url, str) and isinstance(receipt, str):
        return queue_url, receipt
    return None


class Heartbeat:
    """Context manager; ``superseded`` turns true if another run took the file over."""

    def __init__(
        self,
        *,
        job: Job,
        request: Any,
        visibility_timeout: int,
        region: str,
        ledger: Any | None,
        max_seconds: float = SQS_VISIBILITY_CAP - 900,
        step: str = "step",
        claims: bool = False,
    ) -> None:
        #: the job as the step has advanced it so far (:meth:`advance`)
        self.job = job
        self.step = step
        #: the step makes the run's claim itself (the launch): see :attr:`holds_claim`
        self.claims = claims
        self.max_seconds = max_seconds
        #: when the step started (the message was received a moment before)
        self.started = time.monotonic()
        #: the staging key of the scoring attempt running under this heartbeat
        self.writer: str | None = None
        self.receipt = sqs_receipt(request)
        self.visibility_timeout = visibility_timeout
        self.every = max(1.0, visibility_timeout / 3)
        self.region = region
        self.ledger = ledger
        self.superseded = False
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        """Raise :class:`OutOfTime` once the step has run ``max_seconds``."""
        if self.elapsed >= self.max_seconds:
            raise OutOfTime(
                f"the {self.step} step ran for {self.elapsed / 3600:.1f} h and was stopped at "
                f"SCOREFLEET_MAX_STEP_SECONDS={self.max_seconds:g}: SQS cannot keep a message "
                "invisible for more than 12 hours after it was received, so running on would "
                "hand the file to another worker mid-way; split the file, or score it faster "
                "(SCOREFLEET_MAX_IN_FLIGHT, a faster model)"
            )

    #: how long before SQS's 12 hours a step that hands its file over at
    #: ``max_seconds`` is stopped all the same (check_cap)
    CAP_MARGIN = 120

    @property
    def due(self) -> bool:
        """Has the step run ``max_seconds``? (A step that can hand its file over to
        a continuation of itself does so then: issue 26.)"""
        return self.elapsed >= self.max_seconds

    def check_cap(self) -> None:
        """Raise :class:`OutOfTime` only when SQS can no longer protect the message
        (what a step handing its file over at ``max_seconds`` checks meanwhile)."""
        if self.elapsed >= SQS_VISIBILITY_CAP - self.CAP_MARGIN:
            raise OutOfTime(
                f"the {self.step} step ran for {self.elapsed / 3600:.1f} h: SQS cannot keep "
                "a message invisible for more than 12 hours after it was received"
            )

    @property
    def holds_claim(self) -> bool:
        """May this step renew the run's lease? Not a step that claims the run itself
        (the launch) before its own claim: the lease it would renew is another
        delivery's (a dead one's, perhaps), and renewing it would keep every later
        delivery off the file for good."""
        return not self.claims or self.job.claim.holder is not None

    def advance(self, job: Job) -> Job:
        """The job as the step has advanced it so far (its claim, its model): the lease
        is renewed as this job's from now on, and this is the job that goes back to the
        queue should the step have to wait its turn or give up. Returns ``job``."""
        self.job = job
        return job

    def beat(self) -> None:
        self.beats += 1
        # never past 12 hours from the receipt (SQS refuses that); a margin for the clock
        visibility = min(self.visibility_timeout, int(SQS_VISIBILITY_CAP - self.elapsed - 60))
        if self.receipt is not None and visibility > 0:
            queue_url, receipt = self.receipt
            try:
                sqs_client(self.region).change_message_visibility(
                    QueueUrl=queue_url,
                    ReceiptHandle=receipt,
                    VisibilityTimeout=visibility,
                )
            except Exception as exc:  # the next beat may work; SQS redelivers at worst
                log.warning("could not extend the message's visibility: %s", exc)
        if self.ledger is not None and self.holds_claim:
            try:
                if not self.ledger.renew(self.job, self.visibility_timeout, writer=self.writer):
                    self.superseded = True
            except Exception as exc:
                log.warning("could not renew the run's lease: %s", exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
