"""Keep a long step's SQS message (and its run's lease) alive while it works.

SQS hands a received message to another consumer once its visibility timeout
expires, even if the first is still working on it. Every step therefore runs
under a :class:`Heartbeat` that, every third of the visibility timeout, extends
the message's visibility (``ChangeMessageVisibility``) and renews the run's lease
in the ledger. A step can take as long as it needs; if the worker dies, the
heartbeat dies with it and the message comes back one visibility timeout later.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import boto3
from botocore.config import Config

from tasks.job import Job

log = logging.getLogger(__name__)


@functools.cache
def sqs_client(region: str) -> Any:
    return boto3.client(
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
    ) -> None:
        self.job = job
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

    def beat(self) -> None:
        self.beats += 1
        if self.receipt is not None:
            queue_url, receipt = self.receipt
            try:
                sqs_client(self.region).change_message_visibility(
                    QueueUrl=queue_url,
                    ReceiptHandle=receipt,
                    VisibilityTimeout=self.visibility_timeout,
                )
            except Exception as exc:  # the next beat may work; SQS redelivers at worst
                log.warning("could not extend the message's visibility: %s", exc)
        if self.ledger is not None:
            try:
                if not self.ledger.renew(self.job, self.visibility_timeout):
                    self.superseded = True
            except Exception as exc:
                log.warning("could not renew the run's lease: %s", exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
