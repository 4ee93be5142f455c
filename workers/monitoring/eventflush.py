"""Task events gathered for a moment and published together: fewer SNS publishes.

A worker's task events (received, started, succeeded, failed, retried) wait in the
event dispatcher's buffer; Celery publishes that buffer as one ``task.multi`` message
at the next turn of the worker's event loop, which on SQS turns about once per
event: some 6 SNS Publish requests per file, and a fifth of a busy worker's CPU in
kombu's publishing (issue 17). :class:`Consumer` publishes it at most once every
``SCOREFLEET_EVENT_FLUSH_SECONDS`` instead (or when 24 events are waiting, Celery's
own limit), so a storm's events cost a publish per worker per second. Nothing is
dropped: every event is in a ``task.multi`` message, which Flower and ``celery
events`` unpack like any other (``celery.events.receiver``), with its own timestamp;
what waits in the buffer when the worker stops is published on the way out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)

#: The app setting that carries SCOREFLEET_EVENT_FLUSH_SECONDS to the consumer.
SETTING = "scorefleet_event_flush_seconds"


class FlushTimer:
    """Turns "an event is waiting" (from any thread) into one flush, ``interval``
    seconds after the first such request since the last flush, run on the hub."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._pending = False
        self._lock = threading.Lock()

    def request(self, hub: Any, flush: Callable[[], None]) -> None:
        if self.interval <= 0:
            hub.call_soon(flush)
            return
        with self._lock:
            if self._pending:
                return
            self._pending = True
        # the timer heap is the hub's: schedule on its own thread
        hub.call_soon(hub.call_later, self.interval, self._fire, flush)

    def _fire(self, flush: Callable[[], None]) -> None:
        with self._lock:
            self._pending = False  # an event sent during the flush asks for the next one
        flush()


class Consumer(CeleryConsumer):
    """Celery's consumer, with :class:`FlushTimer` deciding when task events go out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flush_timer = FlushTimer(float(self.app.conf.get(SETTING) or 0))

    def on_send_event_buffered(self) -> None:
        if self.hub:
            self.flush_timer.request(self.hub, self._flush_events)

    def _flush_on_the_way_out(self) -> None:
        try:
            self._flush_events()
        except Exception as exc:  # the connection may be gone already
            log.warning("could not publish the last task events: %s", exc)

    def stop(self) -> None:
        self._flush_on_the_way_out()
        super().stop()

    def shutdown(self) -> None:
        self._flush_on_the_way_out()
        super().shutdown()
