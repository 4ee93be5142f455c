"""Celery events without credentials: what workers send to Flower and ``celery events``.

A ``task-failed`` or ``task-retried`` event carries the exception's repr and the
traceback's text (Flower shows both on a task's page, ``celery events`` prints
them), and a step's exception may hold what came from outside: a model's answer or
log lines, a message of a library quoting what it was given. :class:`MaskingDispatcher`
masks those fields with :func:`scorefleet.redact.redact` before an event leaves the
worker, as the log formatter does for log lines (:mod:`scorefleet.logctx`); the S3 URIs
scorefleet writes into its own messages are left alone (the patterns do not match
inside a path or URI). The other fields are scorefleet's own: a step's args and
kwargs as Flower shows them are its S3 URI (``workers.app``), its result the job.

``workers.app`` makes its app use :class:`MaskedEvents` (``app.events_cls``), so the
worker's event dispatcher, and any other this app makes, is a masking one.
"""

from __future__ import annotations

from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher

from scorefleet.redact import redact

#: Event fields whose text may come from outside scorefleet.
MASKED_FIELDS = ("exception", "traceback")


def masked(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` of an event with the text of :data:`MASKED_FIELDS` masked."""
    return {
        k: redact(v) if k in MASKED_FIELDS and isinstance(v, str) else v for k, v in fields.items()
    }


class MaskingDispatcher(EventDispatcher):
    def send(self, type: str, *args: Any, **fields: Any) -> Any:
        return super().send(type, *args, **masked(fields))


class MaskedEvents(Events):
    dispatcher_cls = f"{__name__}:MaskingDispatcher"
