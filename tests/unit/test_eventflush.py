"""Issue 17: a worker's task events go out together, at most once per interval,
and none is lost (workers/monitoring/eventflush.py)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Connection

from workers.monitoring.eventflush import FlushTimer


class Hub:
    """The worker's event loop, turned by hand: what is ready, and a clock of timers."""

    def __init__(self) -> None:
        self.ready: list[tuple[Any, tuple[Any, ...]]] = []
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []
        self.now = 0.0

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.ready.append((fn, args))

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.timers.append((self.now + delay, fn, args))

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for fn, args in ready:
            fn(*args)
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, fn, args in due:
            fn(*args)


def dispatcher(on_send_buffered: Any) -> Any:
    app = Celery("t", set_as_current=False)
    d = app.events.Dispatcher(
        Connection("memory://"),
        hostname="w@test",
        enabled=True,
        buffer_group=["task"],
        on_send_buffered=on_send_buffered,
    )
    published: list[Any] = []
    d._publish = lambda event, producer, routing_key, **_: published.append((routing_key, event))
    return d, published


def test_the_events_of_a_second_go_out_in_one_message():
    hub, timer = Hub(), FlushTimer(1.0)
    d, published = dispatcher(lambda: timer.request(hub, d.flush))
    for n in range(3):  # three files' steps: received, started, succeeded
        for kind in ("received", "started", "succeeded"):
            d.send(f"task-{kind}", uuid=f"t{n}")
            hub.turn()  # the loop turns between events, as on SQS
    assert published == []  # Celery's own would have published at each turn
    hub.now = 1.0
    hub.turn()
    assert len(published) == 1
    routing_key, events = published[0]
    assert routing_key == "task.multi" and len(events) == 9
    assert [e["type"] for e in events[:3]] == ["task-received", "task-started", "task-succeeded"]
    # the next event starts a new interval
    d.send("task-received", uuid="t9")
    hub.turn()
    hub.now = 1.5
    hub.turn()
    assert len(published) == 1
    hub.now = 2.0
    hub.turn()
    assert len(published) == 2 and [e["uuid"] for e in published[1][1]] == ["t9"]


def test_a_full_buffer_goes_out_at_once():
    hub, timer = Hub(), FlushTimer(1.0)
    d, published = dispatcher(lambda: timer.request(hub, d.flush))
    for n in range(24):  # Celery's buffer limit
        d.send("task-received", uuid=f"t{n}")
    assert len(published) == 1 and len(published[0][1]) == 24


def test_zero_is_celerys_own_flush_at_each_turn():
    hub, timer = Hub(), FlushTimer(0)
    d, published = dispatcher(lambda: timer.request(hub, d.flush))
    d.send("task-received", uuid="a")
    hub.turn()
    d.send("task-started", uuid="a")
    hub.turn()
    assert len(published) == 2
