"""Celery events and remote control on SQS + SNS, and the queues they leave.

Every worker publishes its events (task received/started/succeeded/failed/retried,
worker online/heartbeat/offline) to one SNS topic, ``<ns>-events``; every
monitoring session (a Flower, ``celery events``) has its own SQS queue
``<ns>-ev-<uuid>`` subscribed to it. Remote control (``celery inspect``, Flower's
worker pages) goes the same way on ``<ns>-pidbox``: each worker has a queue
``<ns>-pidbox-<hostname>-<token>`` and callers get answers on
``<ns>-reply-<id>``. ``<ns>`` is ``<SCOREFLEET_QUEUE>-mon`` (shortened if long), so
one IAM statement on ``<ns>-*`` covers all of it. The upstream fixes this needs
are in :mod:`workers.monitoring.compat_sqs`.

SQS has no auto-delete, so the per-session queues are managed here:

* created with a short message retention, tagged with their owner and a
  ``scorefleet-seen`` time that the owner refreshes every ``MONITOR_IDLE / 3``;
* event queues are deleted when their connection closes, and all of a
  process's queues (and SNS subscriptions) when it exits (also on SIGTERM for
  ``celery events``/``inspect``, which have no handler of their own);
* whatever a killed process left behind is deleted by the beat task
  ``tasks.sweep_monitor_queues`` once its ``scorefleet-seen`` is older than
  ``SCOREFLEET_MONITOR_IDLE``, and SNS subscriptions of deleted queues with it.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from celery import Celery, Task, shared_task

from scorefleet.celeryconf import transport_options
from scorefleet.settings import Settings
from workers.monitoring import compat_sqs, eventflush

log = logging.getLogger(__name__)

TAG_SEEN = "scorefleet-seen"
TAG_OWNER = "scorefleet-owner"
TAG_KIND = "scorefleet-kind"
#: Events older than this are of no use to anyone: a dead session's backlog stays small.
RETENTION_SECONDS = 600
KINDS = ("ev", "pidbox", "reply")


def namespace(queue: str) -> str:
    """``<queue>-mon``, shortened so that every derived name fits SQS's 80 characters."""
    base = queue.removesuffix(".fifo")
    ns = f"{base}-mon"
    if len(ns) > 32:
        digest = hashlib.sha256(base.encode()).hexdigest()[:6]
        ns = f"{base[:21]}-{digest}-mon"
    return ns


def topic_names(ns: str) -> tuple[str, str]:
    """SNS topics of the events and the control exchanges."""
    return f"{ns}-events", f"{ns}-pidbox"


def kind_of(name: str, ns: str) -> str | None:
    for kind in KINDS:
        if name.startswith(f"{ns}-{kind}-"):
            return kind
    return None


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery settings for the worker side (workers, beat, Flower, celery CLI)."""
    ns = namespace(settings.broker.queue)
    conf: dict[str, Any] = {
        "broker_transport": "workers.monitoring.compat_sqs:Transport",
        "event_exchange": f"{ns}-events",
        "event_queue_prefix": f"{ns}-ev",
        "control_exchange": ns,
        "worker_send_task_events": settings.monitoring.events,
        "worker_enable_remote_control": settings.monitoring.events,
        # task-sent would come from the Lambda: no SNS permission needed there
        "task_send_sent_event": False,
    }
    if settings.monitoring.events:
        conf["broker_transport_options"] = {**transport_options(settings), "supports_fanout": True}
        # task events gathered and published together (workers/monitoring/eventflush.py)
        conf["worker_consumer"] = "workers.monitoring.eventflush:Consumer"
        conf[eventflush.SETTING] = settings.monitoring.event_flush
    return conf


def configure(app: Celery, settings: Settings) -> None:
    """Events and remote control over SNS for ``app``, and the session queue hooks."""
    if not settings.broker.url.startswith("sqs"):
        return
    compat_sqs.install()
    app.conf.update(celery_settings(settings))
    app.control_cls = "workers.monitoring.compat_sqs:Control"
    compat_sqs.Channel.session_hooks = SessionQueues.get(namespace(settings.broker.queue), settings)


# ------------------------------------------------------------- session queues
@dataclass
class _Entry:
    name: str
    url: str
    pid: int
    channel: Any
    clients: tuple[Any, Any]
    subscription: str | None = None


@dataclass
class SessionQueues:
    """This process's per-session queues: tagged at creation, kept alive by a
    refresher thread, deleted on close (event queues) or at exit (all)."""

    ns: str
    idle: float
    entries: dict[str, _Entry] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    refresher: threading.Thread | None = None
    clients: dict[tuple[Any, ...], tuple[Any, Any]] = field(default_factory=dict)

    _instances: ClassVar[dict[str, SessionQueues]] = {}

    @classmethod
    def get(cls, ns: str, settings: Settings) -> SessionQueues:
        """The registry of namespace ``ns`` in this process (one in production)."""
        if ns not in cls._instances:
            cls._instances[ns] = cls(ns, float(settings.monitoring.idle))
            atexit.register(cls._instances[ns].cleanup)
        return cls._instances[ns]

    @classmethod
    def cleanup_all(cls) -> list[str]:
        return [name for registry in cls._instances.values() for name in registry.cleanup()]

    # -- SessionHooks
    def create_options(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        tags = {
            TAG_SEEN: str(int(time.time())),
            TAG_OWNER: f"{socket.gethostname()}:{os.getpid()}"[:256],
            TAG_KIND: kind_of(name, self.ns) or "other",
        }
        return {"MessageRetentionPeriod": str(RETENTION_SECONDS)}, tags

    def declared(self, channel: Any, name: str, url: str) -> None:
        clients = self._clients_for(channel)
        with self.lock:
            entry = self.entries.get(name)
            if entry is not None and entry.pid == os.getpid():
                entry.channel = channel
                return
            self.entries[name] = _Entry(name, url, os.getpid(), channel, clients)
            self._start_refresher()
        _exit_on_sigterm()

    def subscribed(self, channel: Any, name: str, subscription_arn: str) -> None:
        with self.lock:
            entry = self.entries.get(name)
            if entry is not None:
                entry.subscription = subscription_arn

    def closed(self, channel: Any) -> None:
        with self.lock:
            gone = [
                e
                for e in self.entries.values()
                if e.channel is channel
                and e.pid == os.getpid()
                and kind_of(e.name, self.ns) == "ev"
            ]
            for e in gone:
                del self.entries[e.name]
        for e in gone:
            self._delete(e)

    # -- lifecycle
    def cleanup(self) -> list[str]:
        """Delete every session queue (and subscription) this process created."""
        self.stopping.set()
        with self.lock:
            mine = [e for e in self.entries.values() if e.pid == os.getpid()]
            self.entries.clear()
        for e in mine:
            self._delete(e)
        return [e.name for e in mine]

    def _delete(self, entry: _Entry) -> None:
        sqs, sns = entry.clients
        try:
            if entry.subscription:
                sns.unsubscribe(SubscriptionArn=entry.subscription)
            sqs.delete_queue(QueueUrl=entry.url)
            log.debug("deleted session queue %s", entry.name)
        except Exception as exc:  # pruned later (tasks.sweep_monitor_queues)
            log.warning("could not delete session queue %s: %s", entry.name, exc)
        cache = getattr(entry.channel.connection, "_queue_cache", None)
        if cache is not None:
            cache.pop(entry.name, None)

    def _clients_for(self, channel: Any) -> tuple[Any, Any]:
        key = (os.getpid(), channel.region, channel.endpoint_url, channel.conninfo.userid)
        with self.lock:
            if key not in self.clients:
                self.clients[key] = _quick_clients(channel)
            return self.clients[key]

    def _start_refresher(self) -> None:
        if self.refresher is not None and self.refresher.is_alive():
            return
        self.stopping.clear()
        self.refresher = threading.Thread(target=self._refresh_loop, daemon=True, name="sq-alive")
        self.refresher.start()

    def _refresh_loop(self) -> None:
        while not self.stopping.wait(max(1.0, self.idle / 3)):
            self.refresh()

    def refresh(self) -> None:
        now = str(int(time.time()))
        with self.lock:
            mine = [e for e in self.entries.values() if e.pid == os.getpid()]
        for e in mine:
            try:
                e.clients[0].tag_queue(QueueUrl=e.url, Tags={TAG_SEEN: now})
            except Exception as exc:
                log.warning("could not refresh session queue %s: %s", e.name, exc)


def _quick_clients(channel: Any) -> tuple[Any, Any]:
    """SQS and SNS clients with 5 s timeouts and no retries: cleanup at exit must
    not hold a shutdown up on a degraded network."""
    sqs = channel._new_release_client(channel.sqs())
    creds = sqs._request_signer._credentials
    frozen = creds.get_frozen_credentials() if creds is not None else None
    sns = channel._new_boto_client(
        service="sns",
        region=channel.region,
        access_key_id=frozen.access_key if frozen else None,
        secret_access_key=frozen.secret_key if frozen else None,
        session_token=frozen.token if frozen else None,
        config=channel.release_client_config,
    )
    return sqs, sns


def _exit_on_sigterm() -> None:
    """``celery events``/``inspect`` die on SIGTERM without running atexit; make
    SIGTERM a normal exit there (workers and Flower have handlers of their own)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _term)


# ------------------------------------------------------- pruning idle queues
@dataclass
class PruneReport:
    queues_seen: int = 0
    queues_deleted: list[str] = field(default_factory=list)
    subscriptions_deleted: int = 0


def prune_queues(
    sqs: Any, sns: Any, ns: str, max_idle: float, now: float | None = None
) -> PruneReport:
    """Delete the session queues of ``ns`` not refreshed for ``max_idle`` seconds
    (untagged ones: created that long ago), then SNS subscriptions whose queue is gone."""
    now = time.time() if now is None else now
    report = PruneReport()
    alive: set[str] = set()
    for url in _list_queues(sqs, f"{ns}-"):
        name = url.rsplit("/", 1)[1]
        if kind_of(name, ns) is None:
            continue
        report.queues_seen += 1
        try:
            tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
            seen = float(tags.get(TAG_SEEN) or 0)
            if not seen:
                attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["CreatedTimestamp"])
                seen = float(attrs["Attributes"]["CreatedTimestamp"])
            if now - seen <= max_idle:
                alive.add(name)
                continue
            sqs.delete_queue(QueueUrl=url)
            report.queues_deleted.append(name)
        except Exception as exc:
            if any(code in str(exc) for code in ("NonExistentQueue", "QueueDoesNotExist")):
                continue
            log.warning("pruning monitoring queues: could not check %s: %s", name, exc)
            alive.add(name)
    for topic in topic_names(ns):
        arn = _topic_arn(sns, topic)
        if arn is None:
            continue
        for sub in _subscriptions(sns, arn):
            queue = str(sub.get("Endpoint", "")).rsplit(":", 1)[-1]
            if sub.get("Protocol") != "sqs" or kind_of(queue, ns) is None or queue in alive:
                continue
            if sub.get("SubscriptionArn", "").startswith("arn:"):
                sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
                report.subscriptions_deleted += 1
    if report.queues_deleted or report.subscriptions_deleted:
        log.warning(
            "pruned %d abandoned monitoring queue(s) and %d subscription(s): %s",
            len(report.queues_deleted),
            report.subscriptions_deleted,
            ", ".join(report.queues_deleted),
        )
    return report


#: At most this many queues, topics or subscriptions are listed (bounded listings).
MAX_LISTED = 100_000


def _list_queues(sqs: Any, prefix: str, page_size: int = 1000) -> list[str]:
    pages = sqs.get_paginator("list_queues").paginate(
        QueueNamePrefix=prefix, PaginationConfig={"PageSize": page_size, "MaxItems": MAX_LISTED}
    )
    return [url for page in pages for url in page.get("QueueUrls", [])]


def _topic_arn(sns: Any, name: str) -> str | None:
    pages = sns.get_paginator("list_topics").paginate(PaginationConfig={"MaxItems": MAX_LISTED})
    for page in pages:
        for t in page.get("Topics", []):
            if t["TopicArn"].rsplit(":", 1)[1] == name:
                return str(t["TopicArn"])
    return None


def _subscriptions(sns: Any, topic_arn: str) -> list[dict[str, Any]]:
    pages = sns.get_paginator("list_subscriptions_by_topic").paginate(
        TopicArn=topic_arn, PaginationConfig={"MaxItems": MAX_LISTED}
    )
    return [sub for page in pages for sub in page.get("Subscriptions", [])]


def prune_app(app: Celery, max_idle: float) -> PruneReport:
    """:func:`prune_queues` with the broker connection (and credentials) of ``app``."""
    ns = str(app.conf.control_exchange)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return prune_queues(channel.sqs(), channel.fanout.get_client(), ns, max_idle)


@shared_task(name="tasks.sweep_monitor_queues", bind=True, ignore_result=True)
def sweep_monitor_queues(self: Task) -> dict[str, Any]:
    """Beat: delete monitoring queues whose Flower, ``celery events``/``inspect``
    or worker died without cleaning up."""
    from workers import runtime

    report = prune_app(self.app, float(runtime.current().settings.monitoring.idle))
    return {"deleted": report.queues_deleted, "subscriptions": report.subscriptions_deleted}
