# mypy: disallow-untyped-calls=False
"""Celery events and remote control over SQS + SNS: workarounds for upstream defects.

Loaded by every process that imports ``workers.app`` (workers, beat, Flower,
``celery events``, ``celery inspect``) through the Celery setting
``broker_transport = "workers.monitoring.compat_sqs:Transport"``. The Lambda never loads it:
it only publishes tasks, which stock kombu does right.

kombu 5.7 can broadcast on SQS through SNS (transport option ``supports_fanout``),
but nothing above that layer uses it correctly. Each fix below names the defect,
where it was reported, and when the shim can go; ``tests/integration/test_compat_sqs.py``
fails if a fix is removed, and its "upstream still broken" checks fail once an
upgrade makes a fix unnecessary (delete the fix then).

D1 celery 5.7.0 ``celery.events.event.get_exchange`` picks a fanout exchange only
   for redis/gcpubsub. On SQS events go to a *topic* exchange whose bindings live
   in the publishing process's memory, so no other process ever sees an event
   (Flower and ``celery events`` stay empty). Fix: fanout when the SQS transport
   has ``supports_fanout``. Not reported upstream (searched celery/celery and
   celery/kombu issues); celery/kombu#2335 asked for SQS fanout and
   celery/kombu#2372 added it without touching Celery. To file against celery:
   "get_exchange should use fanout for sqs when supports_fanout is set".
   Remove when ``get_exchange`` returns fanout for sqs (check at each upgrade).
D2 kombu 5.7.0 ``kombu.transport.SQS.Transport.implements.exchange_type`` is
   ``{'direct'}`` even with ``supports_fanout``; Celery then leaves out the
   worker's remote-control bootstep (``Control.include_if``), so ``celery inspect``
   and Flower get no answer. Fix: declare fanout when it is enabled. Same upstream
   history as D1 (kombu side); remove when kombu declares it.
D3 kombu 5.7.0 a no-ack consumer outside a worker (Flower, ``celery events``,
   replies to ``celery inspect``) deletes each received message with the async
   client, which needs the worker's event loop: ``'NoneType' object has no
   attribute 'on_close'``, and Flower retries forever, each time with a new
   queue. Fix: delete synchronously, one DeleteMessageBatch per receive. The same
   class of bug was reported for acks in celery/kombu#746 (closed); the no-ack
   path is not reported. Remove when ``_delete_message`` works without a hub.
D4 kombu 5.7.0 a worker answers ``inspect``/``ping`` by publishing to the direct
   exchange ``reply.<ns>.pidbox``; virtual transports route direct exchanges with
   a table held in the memory of the process that bound the queue, so on SQS the
   reply is dropped. Fix: route an unbound reply to the reply queue named after
   the routing key (the caller's mailbox id), without creating it if the caller
   is gone. Not reported upstream; file with D2 ("remote control on SQS").
D5 kombu 5.7.0 ``Mailbox._collect`` deletes the reply queue after every call and
   names it after ``id()`` of a throw-away copy, so each ``inspect`` creates and
   deletes an SQS queue; AWS refuses to re-create a name for 60 s after deleting
   it, and ``Channel._delete`` drops the cached URL under the wrong (raw) name.
   Fix: one reply queue per process and thread, kept for the session (deleted
   at exit by :mod:`workers.monitoring.monitor`), and the cache entry dropped by its SQS name.
   Not reported upstream; file with D2.
D6 kombu 5.7.0 ``drain_events(timeout=1)`` blocks for the transport's
   ``wait_time_seconds`` (20 s here), so ``celery inspect`` takes 20 s and more.
   Fix: reply queues long-poll no longer than the caller's timeout. Not reported
   upstream; file with D2.
D7 kombu 5.7.0 with ``predefined_queues`` (our production setting, so that the
   task queue needs no ListQueues/CreateQueue) every other queue is refused,
   including the event and reply queues. Fix: predefined queues only seed the URL
   cache, and unknown names are resolved with GetQueueUrl (an exact, IAM-scopable
   call) instead of ListQueues. Not reported upstream; remove with D2.

D8 kombu 5.7.0 ``Channel._new_boto_client`` makes a new boto3 ``Session`` for every
   SQS and SNS client, and each session parses the services' JSON models again: a
   worker held eight sessions after start-up, seven SQS/SNS clients from separate
   sessions 57 MiB where from one session they take 10 MiB. Not a wrong result, a
   cost (a worker's memory, and its start-up time when KEDA scales from zero). Fix:
   the same client, made from the process's one session (:mod:`scorefleet.aws`),
   credentials and config as kombu passes them. Not reported upstream; remove when
   kombu reuses a session.

Queue lifecycle (SQS ignores ``auto_delete``/``exclusive``/``x-expires``) is not
a defect to shim but a gap that :mod:`workers.monitoring.monitor` fills through
:class:`SessionHooks`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import celery.events
import celery.events.dispatcher
import celery.events.event
import celery.events.receiver
from botocore.config import Config
from botocore.exceptions import ClientError
from celery.app.control import Control as _CeleryControl
from kombu.common import generate_oid, get_node_id
from kombu.entity import Queue
from kombu.pidbox import Mailbox as _KombuMailbox
from kombu.transport import SQS as _sqs
from kombu.transport.SQS.exceptions import DoesNotExistQueueException, UndefinedQueueException
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property

from scorefleet import aws

log = logging.getLogger(__name__)

#: SQS error codes for "no such queue" (query and JSON protocols).
_NO_SUCH_QUEUE = ("NonExistentQueue", "QueueDoesNotExist")
_REPLY_EXCHANGE = re.compile(r"^reply\.(?P<ns>.+)\.pidbox$")


def _fanout_enabled(conn: Any) -> bool:
    transport = getattr(conn, "transport", None)
    options = getattr(conn, "transport_options", None) or {}
    return getattr(transport, "driver_type", None) == "sqs" and bool(options.get("supports_fanout"))


# ------------------------------------------------------------------------- D1
ORIGINAL_GET_EXCHANGE: Callable[..., Any] = celery.events.event.get_exchange


def get_exchange(conn: Any, name: str = celery.events.event.EVENT_EXCHANGE_NAME) -> Any:
    """:func:`celery.events.event.get_exchange`, with fanout on SQS when SNS fanout is on."""
    exchange = ORIGINAL_GET_EXCHANGE(conn, name=name)
    if exchange.type != "fanout" and _fanout_enabled(conn):
        exchange.type = "fanout"
    return exchange


def install() -> None:
    """Patch D1 into the three modules that hold a reference to ``get_exchange``
    (Flower uses ``celery.events.EventReceiver`` directly, not the app's)."""
    for module in (
        celery.events,
        celery.events.event,
        celery.events.dispatcher,
        celery.events.receiver,
    ):
        module.get_exchange = get_exchange


# ------------------------------------------------------------------- D4 / D5
def reply_queue_name(reply_exchange: str, oid: str) -> str:
    """The reply queue of mailbox ``oid`` (``<ns>-reply-<oid>``): the caller
    declares it under this name and a worker derives it from the reply's routing."""
    match = _REPLY_EXCHANGE.match(reply_exchange)
    ns = match.group("ns") if match else reply_exchange
    return f"{ns}-reply-{oid}"


def is_reply_exchange(exchange: str | None) -> bool:
    return bool(exchange and _REPLY_EXCHANGE.match(exchange))


_OID_ANCHOR = object()
_PROCESS_TOKEN: dict[int, str] = {}


def process_token() -> str:
    """8 hex digits, new in every process (also after fork)."""
    pid = os.getpid()
    if pid not in _PROCESS_TOKEN:
        _PROCESS_TOKEN[pid] = os.urandom(4).hex()
    return _PROCESS_TOKEN[pid]


def node_queue_name(namespace: str, hostname: str) -> str:
    """A worker's control queue: ``<ns>-pidbox-<hostname>-<process token>``.

    Unique per process, so a restarted worker with the same hostname never needs
    a name deleted less than 60 s ago; at most 80 characters (the SQS limit)."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", hostname)
    head = f"{namespace}-pidbox-"
    room = 80 - len(head) - 9
    return f"{head}{slug[:room]}-{process_token()}"


class Mailbox(_KombuMailbox):
    """kombu's mailbox with SQS-friendly queues (D5): one reply queue per
    process and thread instead of one per call, and unique node queues."""

    @property
    def oid(self) -> str:
        return str(generate_oid(get_node_id(), os.getpid(), threading.get_ident(), _OID_ANCHOR))

    def get_reply_queue(self) -> Queue:
        oid, exchange = self.oid, self.reply_exchange
        assert exchange is not None
        return Queue(
            reply_queue_name(str(exchange.name), oid),
            exchange=exchange,
            routing_key=oid,
            durable=False,
            exclusive=True,
            auto_delete=True,
        )

    def get_queue(self, hostname: str) -> Queue:
        return Queue(
            node_queue_name(str(self.namespace), hostname),
            exchange=self.exchange,
            durable=False,
            exclusive=True,
            auto_delete=True,
        )


class Control(_CeleryControl):
    """``app.control`` with :class:`Mailbox` (set as the app's ``control_cls``)."""

    Mailbox = Mailbox


# ------------------------------------------------------------ session queues
class SessionHooks(Protocol):
    """What :mod:`workers.monitoring.monitor` is told about per-session queues (those
    declared ``auto_delete``: event receivers, reply and control queues)."""

    def create_options(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """(attributes, tags) for CreateQueue of a session queue."""
        ...

    def declared(self, channel: Channel, name: str, url: str) -> None: ...

    def subscribed(self, channel: Channel, name: str, subscription_arn: str) -> None: ...

    def closed(self, channel: Channel) -> None: ...


# -------------------------------------------------------------------- channel
class Channel(_sqs.Channel):
    #: set by workers.monitoring.monitor
    session_hooks: ClassVar[SessionHooks | None] = None

    _drain_timeout: float | None = None
    _declaring_session: bool = False

    # ----------------------------------------------------------------- D8
    def _new_boto_client(
        self,
        service: str,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None = None,
        config: Config | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"use_ssl": self.is_secure if self.is_secure is not None else True}
        if self.endpoint_url is not None:
            kwargs["endpoint_url"] = self.endpoint_url
        client_config = Config(**(self.transport_options.get("client-config") or {}))
        if config is not None:
            client_config = client_config.merge(config)
        return aws.client(
            service,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            config=client_config,
            **kwargs,
        )

    # ----------------------------------------------------------------- D7
    @cached_property
    def predefined_queues(self) -> dict[str, Any]:
        return {}

    def _update_queue_cache(self, queue_name_prefix: str) -> None:
        known = self.transport_options.get("predefined_queues") or {}
        for name, spec in known.items():
            self._queue_cache[name] = spec["url"]

    def _resolve_queue_url(self, queue: str) -> str:
        name = self.canonical_queue_name(queue)
        url = self._queue_cache.get(name)
        if url:
            return str(url)
        try:
            url = self.sqs().get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if any(code in str(exc) for code in _NO_SUCH_QUEUE):
                raise DoesNotExistQueueException(
                    f"Queue with name '{name}' doesn't exist in SQS"
                ) from exc
            raise
        self._queue_cache[name] = url
        return str(url)

    # ------------------------------------------------- session queue hooks
    def _new_queue(self, queue: str, **kwargs: Any) -> str:
        session = bool(kwargs.get("auto_delete")) and self.session_hooks is not None
        self._declaring_session = session
        try:
            url = str(super()._new_queue(queue, **kwargs))
        finally:
            self._declaring_session = False
        if session and self.session_hooks is not None:
            self.session_hooks.declared(self, self.canonical_queue_name(queue), url)
        return url

    def _create_queue(self, queue_name: str, attributes: dict[str, str]) -> Any:
        if not (self._declaring_session and self.session_hooks is not None):
            return super()._create_queue(queue_name, attributes)
        extra_attributes, tags = self.session_hooks.create_options(queue_name)
        params: dict[str, Any] = {
            "QueueName": queue_name,
            "Attributes": {**attributes, **extra_attributes},
        }
        if tags:
            params["tags"] = tags
        return self.sqs().create_queue(**params)

    def _subscribe_queue_to_fanout_exchange_if_required(self, queue_name: str) -> None:
        try:
            exchange = self._get_exchange_for_queue(queue_name)
        except UndefinedQueueException:
            return
        if not self._exchange_is_fanout(exchange):
            return
        arn = self.fanout.subscriptions.subscribe_queue(
            queue_name=queue_name, exchange_name=exchange
        )
        if self.session_hooks is not None:
            self.session_hooks.subscribed(self, self.canonical_queue_name(queue_name), arn)

    def close(self) -> None:
        if not self.closed and self.session_hooks is not None:
            try:
                self.session_hooks.closed(self)
            except Exception:
                log.warning("could not clean up the session queues of a channel", exc_info=True)
        super().close()

    # ----------------------------------------------------------------- D3
    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> list[Any]:
        if self.hub is not None or queue not in self._noack_queues:
            return list(super()._messages_to_python(messages, queue))
        self._delete_received(queue, messages)
        return [
            self._prepare_json_payload(bytes_to_str(self._decode_python_message_body(m["Body"])))
            for m in messages
        ]

    def _delete_message(self, queue_name: str, message: dict[str, Any]) -> None:
        if self.hub is not None:
            super()._delete_message(queue_name, message)
        else:
            self._delete_received(queue_name, [message])

    def _delete_received(self, queue: str, messages: list[dict[str, Any]]) -> None:
        """Delete received messages synchronously, ten per request."""
        url = self._new_queue(queue)
        client = self.sqs()
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            try:
                resp = client.delete_message_batch(QueueUrl=url, Entries=entries)
            except ClientError as exc:
                log.warning("could not delete %d received message(s): %s", len(chunk), exc)
                continue
            if resp.get("Failed"):
                log.warning("could not delete received messages: %s", resp["Failed"])

    # ----------------------------------------------------------- D4 / D5
    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        queues = list(super()._lookup(exchange, routing_key, default))
        if queues or not routing_key or not is_reply_exchange(exchange):
            return queues
        return [reply_queue_name(exchange, routing_key)]

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if _is_reply_queue_name(queue):
            try:
                self._resolve_queue_url(queue)
            except DoesNotExistQueueException:
                log.debug("the caller of a control command is gone; reply to %s dropped", queue)
                return
        super()._put(queue, message, **kwargs)

    def after_reply_message_received(self, queue: str) -> None:
        """Keep the reply queue: it is reused by the next call of this thread."""

    def _delete(self, queue: str, exchange: str | None = None, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, exchange, *args, **kwargs)
        self._queue_cache.pop(self.canonical_queue_name(queue), None)

    # ----------------------------------------------------------------- D6
    def drain_events(
        self, timeout: float | None = None, callback: Any = None, **kwargs: Any
    ) -> Any:
        self._drain_timeout = timeout
        try:
            return super().drain_events(timeout=timeout, callback=callback, **kwargs)
        finally:
            self._drain_timeout = None

    def _receive_message(
        self, queue: str, max_number_of_messages: int = 1, wait_time_seconds: int | None = None
    ) -> Any:
        wait = wait_time_seconds or self.wait_time_seconds
        if self._drain_timeout is not None and _is_reply_queue_name(queue):
            wait = max(1, min(int(wait), math.ceil(self._drain_timeout)))
        return super()._receive_message(queue, max_number_of_messages, wait)


def _is_reply_queue_name(queue: str) -> bool:
    return "-reply-" in queue and bool(re.search(r"-reply-[0-9a-f-]{36}$", queue))


# ------------------------------------------------------------------------- D2
class Transport(_sqs.Transport):
    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        if (client.transport_options or {}).get("supports_fanout"):
            self.implements = _sqs.Transport.implements.extend(
                exchange_type=frozenset({"direct", "fanout"})
            )
