"""Decode every way an S3 "object created" notification can reach the Lambda.

* direct S3 -> Lambda: {"Records": [{"eventSource": "aws:s3", "s3": {...}}]}
* S3 -> SQS -> Lambda: {"Records": [{"eventSource": "aws:sqs", "messageId", "body": <S3 event>}]}
* S3 -> SNS -> Lambda: {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": <S3 event>}}]}
* S3 -> SNS -> SQS -> Lambda: an SQS body holding an SNS notification holding the S3 event
* EventBridge:                {"detail-type": "Object Created", "source": "aws.s3", "detail": {...}}
  (directly, or as an SQS body when a rule targets a queue)
* ``s3:TestEvent`` (sent when a notification is configured): recognised and ignored.

S3 notification keys are URL-encoded in form style (space -> '+', '+' -> '%2B');
EventBridge keys are not encoded (AWS's documentation shows only "example-key"; AWS's
guidance sample guidance-for-medialake-on-aws uses EventBridge keys as they come after
testing "test+b.png" and "%2B++ %20.mp3" on real events, where libraries that decode
them, such as Powertools' S3EventBridgeNotificationObject, would turn such keys into
others: tests/unit/test_events.py). The result is a flat list of :class:`Item`, one
per SQS record (so partial batch failures can name the record) or one per
invocation for the other sources. Every record is decoded on its own: one that
cannot be read (not JSON, ``null``, nested too deeply, fields missing) is noted in
its item's ``problems`` and never stops the others.
"""

from __future__ import annotations

import json
import reprlib
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
    #: parts that could not be read (each bounded and escaped): reported, never fatal
    problems: list[str] = field(default_factory=list)


class UnknownEvent(ValueError):
    pass


def _text(value: Any, what: str, *, required: bool = False) -> str | None:
    """A string field of an event (``None`` when absent and optional)."""
    if value is None or value == "":
        if required:
            raise UnknownEvent(f"the event has no {what}")
        return None
    if not isinstance(value, str):
        raise UnknownEvent(f"the event's {what} is a {type(value).__name__}, not a string")
    return value


def _s3_record(rec: dict[str, Any]) -> ObjectEvent:
    s3 = rec["s3"]
    obj = s3["object"]
    return ObjectEvent(
        bucket=str(_text(s3["bucket"]["name"], "bucket name", required=True)),
        key=urllib.parse.unquote_plus(str(_text(obj["key"], "object key", required=True))),
        event_name=str(rec.get("eventName", "")),
        version_id=_text(obj.get("versionId"), "versionId"),
        etag=_text(obj.get("eTag"), "eTag"),
        size=int(obj["size"]) if obj.get("size") is not None else None,
        sequencer=_text(obj.get("sequencer"), "sequencer"),
    )


def _eventbridge(ev: dict[str, Any]) -> ObjectEvent:
    detail = ev["detail"]
    obj = detail["object"]
    return ObjectEvent(
        bucket=str(_text(detail["bucket"]["name"], "bucket name", required=True)),
        key=str(_text(obj["key"], "object key", required=True)),
        event_name=str(ev.get("detail-type", "")),
        version_id=_text(obj.get("version-id"), "version-id"),
        etag=_text(obj.get("etag") or obj.get("eTag"), "etag"),
        size=int(obj["size"]) if obj.get("size") is not None else None,
        sequencer=_text(obj.get("sequencer"), "sequencer"),
    )


#: Envelopes inside envelopes (SQS holding SNS holding S3...): more is not an S3 event.
MAX_NESTING = 4


def excerpt(obj: Any, limit: int = 2000) -> str:
    """A bounded, escaped rendering of anything (safe on deeply nested values)."""
    text = _REPR.repr(obj) if not isinstance(obj, str | bytes) else repr(obj[:limit])
    return text[:limit] + ("..." if len(text) > limit else "")


def _make_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # keyword arguments only from Python 3.12
    r.maxlevel, r.maxdict, r.maxlist, r.maxstring, r.maxother = 4, 8, 8, 300, 300
    return r


_REPR = _make_repr()


def _payload(payload: Any, item: Item, depth: int = 0) -> None:
    """Decode one notification payload (any nesting) into ``item``; a part that
    cannot be read is recorded in ``item.problems`` and the rest still decoded."""
    if depth > MAX_NESTING:
        raise UnknownEvent(f"envelopes nested more than {MAX_NESTING} deep")
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise UnknownEvent(f"message body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise UnknownEvent("message body is JSON nested too deeply to read") from exc
    if not isinstance(payload, dict):
        raise UnknownEvent(f"unexpected payload of type {type(payload).__name__}")
    if payload.get("Event") == "s3:TestEvent":
        item.notes.append("s3:TestEvent ignored")
        return
    if payload.get("Type") == "Notification" and "Message" in payload:  # SNS envelope in SQS
        _payload(payload["Message"], item, depth + 1)
        return
    if payload.get("source") == "aws.s3" and "detail" in payload:
        item.events.append(_eventbridge(payload))
        return
    records = payload.get("Records")
    if not isinstance(records, list):
        raise UnknownEvent("not an S3, SNS, SQS or EventBridge event")
    for n, rec in enumerate(records, 1):
        try:
            _record(rec, item, depth)
        except Exception as exc:  # one record never takes the others with it
            item.problems.append(f"record {n}: {_reason(exc)}: {excerpt(rec, 500)}")


def _record(rec: Any, item: Item, depth: int) -> None:
    if not isinstance(rec, dict):
        raise UnknownEvent(f"a record of type {type(rec).__name__}, not an object")
    src = rec.get("eventSource") or rec.get("EventSource")
    if src == "aws:s3" or "s3" in rec:
        item.events.append(_s3_record(rec))
    elif src == "aws:sns":
        _payload(rec["Sns"]["Message"], item, depth + 1)
    else:
        raise UnknownEvent(f"unexpected record source {excerpt(src, 100)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnknownEvent):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return f"{type(exc).__name__}: {exc}"[:300]


def decode(event: Any) -> tuple[list[Item], bool]:
    """Split an invocation into items; the flag says whether it came from SQS
    (then failures are reported per record with ``batchItemFailures``). Never
    raises for a bad part: what cannot be read is in each item's ``problems``."""
    records = event.get("Records") if isinstance(event, dict) else None
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return [_sqs_item(r) for r in records], True
    item = Item(message_id=None)
    try:
        _payload(event, item)
    except Exception as exc:
        item.problems.append(f"{_reason(exc)}: {excerpt(event)}")
    return [item], False


def _sqs_item(rec: dict[str, Any]) -> Item:
    item = Item(message_id=str(rec.get("messageId") or "") or None)
    try:
        _payload(rec.get("body", ""), item)
    except Exception as exc:
        item.problems.append(f"{_reason(exc)}: {excerpt(rec.get('body', ''))}")
    return item
