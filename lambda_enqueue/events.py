"""Decode every way an S3 "object created" notification can reach the Lambda.

* direct S3 -> Lambda: {"Records": [{"eventSource": "aws:s3", "s3": {...}}]}
* S3 -> SQS -> Lambda: {"Records": [{"eventSource": "aws:sqs", "messageId", "body": <S3 event>}]}
* S3 -> SNS -> Lambda: {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": <S3 event>}}]}
* S3 -> SNS -> SQS -> Lambda: an SQS body holding an SNS notification holding the S3 event
* EventBridge:                {"detail-type": "Object Created", "source": "aws.s3", "detail": {...}}
  (directly, or as an SQS body when a rule targets a queue)
* ``s3:TestEvent`` (sent when a notification is configured): recognised and ignored.

S3 notification keys are URL-encoded in form style (space -> '+', '+' -> '%2B');
EventBridge keys are not encoded. The result is a flat list of :class:`Item`, one
per SQS record (so partial batch failures can name the record) or one per
invocation for the other sources.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str  # decoded
    event_name: str  # e.g. "ObjectCreated:Put"
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith("ObjectCreated") or self.event_name == "Object Created"


@dataclass
class Item:
    """One unit of work from the invocation (an SQS record, or the whole event)."""

    message_id: str | None  # SQS messageId, for batchItemFailures
    events: list[ObjectEvent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why parts were ignored


class UnknownEvent(ValueError):
    pass


def _s3_record(rec: dict[str, Any]) -> ObjectEvent:
    s3 = rec["s3"]
    obj = s3["object"]
    return ObjectEvent(
        bucket=s3["bucket"]["name"],
        key=urllib.parse.unquote_plus(obj["key"]),
        event_name=str(rec.get("eventName", "")),
        version_id=obj.get("versionId") or None,
        etag=obj.get("eTag") or None,
        size=int(obj["size"]) if obj.get("size") is not None else None,
        sequencer=obj.get("sequencer"),
    )


def _eventbridge(ev: dict[str, Any]) -> ObjectEvent:
    detail = ev["detail"]
    obj = detail["object"]
    return ObjectEvent(
        bucket=detail["bucket"]["name"],
        key=obj["key"],
        event_name=str(ev.get("detail-type", "")),
        version_id=obj.get("version-id") or None,
        etag=obj.get("etag") or None,
        size=int(obj["size"]) if obj.get("size") is not None else None,
        sequencer=obj.get("sequencer"),
    )


def _payload(payload: Any, item: Item) -> None:
    """Decode one notification payload (any nesting) into ``item``."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise UnknownEvent(f"message body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise UnknownEvent(f"unexpected payload of type {type(payload).__name__}")
    if payload.get("Event") == "s3:TestEvent":
        item.notes.append("s3:TestEvent ignored")
        return
    if payload.get("Type") == "Notification" and "Message" in payload:  # SNS envelope in SQS
        _payload(payload["Message"], item)
        return
    if payload.get("source") == "aws.s3" and "detail" in payload:
        item.events.append(_eventbridge(payload))
        return
    records = payload.get("Records")
    if isinstance(records, list):
        for rec in records:
            src = rec.get("eventSource") or rec.get("EventSource")
            if src == "aws:s3" or "s3" in rec:
                item.events.append(_s3_record(rec))
            elif src == "aws:sns":
                _payload(rec["Sns"]["Message"], item)
            else:
                raise UnknownEvent(f"unexpected record source {src!r}")
        return
    raise UnknownEvent("not an S3, SNS, SQS or EventBridge event")


def decode(event: dict[str, Any]) -> tuple[list[Item], bool]:
    """Split an invocation into items; the flag says whether it came from SQS
    (then failures are reported per record with ``batchItemFailures``)."""
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return [_sqs_item(r) for r in records], True
    item = Item(message_id=None)
    _payload(event, item)
    return [item], False


def _sqs_item(rec: dict[str, Any]) -> Item:
    item = Item(message_id=rec.get("messageId"))
    try:
        _payload(rec.get("body", ""), item)
    except (UnknownEvent, KeyError, TypeError, ValueError) as exc:
        item.notes.append(f"unreadable message ignored: {exc}")
    return item
