"""The dead-letter queue: what SQS gave up on, shown and sent back.

SQS moves a message to the task queue's dead-letter queue once it has been
received ``maxReceiveCount`` times (the queue's redrive policy) without being
deleted: a message whose processing kills the worker every time, or one no
worker can handle (an unregistered task). ``scorefleet dlq list`` shows them,
``scorefleet dlq redrive`` puts them back on the task queue once the cause is
fixed.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from scorefleet import aws
from scorefleet.celeryconf import LATER_STEPS
from scorefleet.logctx import escape
from scorefleet.settings import Settings

_RECEIVE_VISIBILITY = 60


@dataclass
class DeadLetter:
    message_id: str
    receipt: str
    body: str
    attributes: dict[str, Any]
    receive_count: int
    sent_at: float
    task: str
    task_id: str
    subject: str  # the S3 URI (or what the message says it is about)


def _client(settings: Settings) -> Any:
    return aws.client(
        "sqs",
        config=Config(region_name=settings.aws.region, retries={"mode": "standard"}),
    )


def _url(sqs: Any, name_or_url: str) -> str:
    if name_or_url.startswith(("https://", "http://")):
        return name_or_url
    return str(sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"])


def describe_body(body: str) -> tuple[str, str, str]:
    """(task name, task id, subject) of a Celery message body, best effort, each on
    one line: whoever sent the message chose them, and they go to a terminal."""
    task, task_id, subject = _describe(body)
    return escape(task), escape(task_id), escape(subject)


def _describe(body: str) -> tuple[str, str, str]:
    try:
        envelope = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        try:
            envelope = json.loads(body)
        except ValueError:
            return "(not a Celery message)", "", body[:80]
    if not isinstance(envelope, dict):
        return "(not a Celery message)", "", body[:80]
    headers = envelope.get("headers") or {}
    task, task_id = str(headers.get("task", "?")), str(headers.get("id", ""))
    subject = str(headers.get("argsrepr") or "")
    try:
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        first = args[0] if args else None
        if isinstance(first, dict) and "bucket" in first:
            subject = f"s3://{first['bucket']}/{first['key']}"
        elif isinstance(first, str):
            subject = first
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error):
        pass
    return task, task_id, subject


class DeadLetterQueue:
    def __init__(self, settings: Settings, sqs: Any | None = None) -> None:
        self.sqs = sqs or _client(settings)
        self.url = settings.broker.dead_letter_queue_url or _url(
            self.sqs, settings.broker.dead_letter_queue
        )
        self.settings = settings

    def _target(self, task: str) -> str:
        """The queue a dead letter came from: later steps have their own queue."""
        s = self.settings
        if task in LATER_STEPS:
            return s.broker.steps_queue_url or _url(self.sqs, s.broker.steps_queue)
        return s.broker.queue_url or _url(self.sqs, s.broker.queue)

    def _receive_all(self, limit: int) -> Iterator[DeadLetter]:
        """Receive (and hold invisible) up to ``limit`` distinct messages."""
        seen: set[str] = set()
        while len(seen) < limit:
            resp = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, limit - len(seen)),
                WaitTimeSeconds=1,
                VisibilityTimeout=_RECEIVE_VISIBILITY,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
            if not messages:
                return
            for m in messages:
                seen.add(m["MessageId"])
                attrs = m.get("Attributes", {})
                task, task_id, subject = describe_body(m["Body"])
                yield DeadLetter(
                    message_id=m["MessageId"],
                    receipt=m["ReceiptHandle"],
                    body=m["Body"],
                    attributes=m.get("MessageAttributes", {}),
                    receive_count=int(attrs.get("ApproximateReceiveCount", 0)),
                    sent_at=int(attrs.get("SentTimestamp", 0)) / 1000,
                    task=task,
                    task_id=task_id,
                    subject=subject,
                )

    def _release(self, letters: Iterable[DeadLetter]) -> None:
        for d in letters:
            self.sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=d.receipt, VisibilityTimeout=0
            )

    def peek(self, limit: int = 100) -> list[DeadLetter]:
        """The messages in the DLQ (left there, visible again right after)."""
        letters = list(self._receive_all(limit))
        self._release(letters)
        return letters

    def redrive(self, message_ids: set[str] | None = None, limit: int = 1000) -> list[DeadLetter]:
        """Send messages (all, or those with the given ids) back to the task queue."""
        moved, kept = [], []
        for d in self._receive_all(limit):
            if message_ids is not None and d.message_id not in message_ids:
                kept.append(d)
                continue
            extra = {"MessageAttributes": d.attributes} if d.attributes else {}
            self.sqs.send_message(QueueUrl=self._target(d.task), MessageBody=d.body, **extra)
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=d.receipt)
            moved.append(d)
        self._release(kept)
        return moved


def age(sent_at: float) -> str:
    secs = max(0, time.time() - sent_at)
    if secs < 120:
        return f"{secs:.0f}s"
    if secs < 7200:
        return f"{secs / 60:.0f}m"
    return f"{secs / 3600:.1f}h"
