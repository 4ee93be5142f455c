"""Flower for scorefleet: ``celery -A workers.app flower``.

:func:`prepare` runs inside the Flower process once Flower has read its options
(``--name=value`` and ``FLOWER_*`` variables) and before it serves anything
(``workers.app`` calls it from Celery's ``import_modules`` signal). It

* refuses to start without authentication (``FLOWER_BASIC_AUTH=user:password``
  from a secret, or Flower's OAuth options), unless
  ``SCOREFLEET_FLOWER_UNAUTHENTICATED=true`` *and* Flower listens on a loopback
  address: the local stack, nothing else;
* applies scorefleet's defaults for options the operator did not set (see
  :data:`DEFAULTS`); ``/metrics`` (Prometheus) and ``/healthcheck`` are always on
  and, as in Flower itself, not behind the login;
* gives Flower's Broker tab (and ``/api/queues/length``) the SQS queues: Flower
  2.2 knows only RabbitMQ and Redis and answers "'sqs' broker is not supported".
  :class:`SqsQueues` shows each queue the workers consume, and the dead-letter
  queue, with its depth from ``GetQueueAttributes``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from scorefleet.settings import Settings

#: Flower options scorefleet sets unless given on the command line or as FLOWER_<NAME>.
DEFAULTS: dict[str, Any] = {
    # Workers always send events (worker_send_task_events). Flower's default
    # re-enables them with a broadcast every 5 s: an SNS publish plus a receive
    # and a delete per worker, for nothing.
    "enable_events": False,
    # One line per step per file: the S3 URI is the args column (searchable).
    "tasks_columns": "name,args,state,received,runtime,retries,worker,exception,kwargs,uuid,result",
    # Replies come through SQS: allow for a long-polling worker and a slow network.
    "inspect_timeout": 3000.0,
    # Workers come and go with the autoscaler: forget a dead one after an hour.
    "purge_offline_workers": 3600,
}

MIN_PASSWORD = 12

log = logging.getLogger(__name__)


class FlowerConfigError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"scorefleet flower: {message}")


def explicit_options(argv: Sequence[str], environ: Mapping[str, str]) -> set[str]:
    """Names of the Flower options set on the command line or in the environment."""
    names = {k[len("FLOWER_") :].lower() for k in environ if k.startswith("FLOWER_")}
    for arg in argv:
        if arg.startswith("--"):
            names.add(arg[2:].split("=", 1)[0].replace("-", "_"))
    return names


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_auth(options: Any, settings: Settings) -> str:
    """How Flower authenticates ("basic", "oauth" or "none (local)"); raises
    :class:`FlowerConfigError` when it must not start."""
    basic = [c for c in (options.basic_auth or []) if c]
    for credential in basic:
        user, sep, password = credential.partition(":")
        if not (sep and user and password):
            raise FlowerConfigError("FLOWER_BASIC_AUTH must be user:password[,user:password...]")
        if len(password) < MIN_PASSWORD:
            raise FlowerConfigError(
                f"the FLOWER_BASIC_AUTH password of {user!r} is shorter than {MIN_PASSWORD} "
                "characters"
            )
    if basic:
        return "basic"
    if options.auth:
        return "oauth"
    if not settings.monitoring.flower_unauthenticated:
        raise FlowerConfigError(
            "refusing to start without authentication: set FLOWER_BASIC_AUTH=user:password "
            "(from a secret) or Flower's OAuth options; see docs/flower.md"
        )
    if not (options.unix_socket or is_loopback(options.address or "")):
        raise FlowerConfigError(
            "SCOREFLEET_FLOWER_UNAUTHENTICATED=true is for the local stack only: Flower must "
            f"then listen on a loopback address (--address=127.0.0.1), not {options.address!r}"
        )
    return "none (local)"


def prepare(
    settings: Settings,
    options: Any = None,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Apply :data:`DEFAULTS` and check authentication; returns the auth mode."""
    if options is None:
        from tornado.options import options as tornado_options

        options = tornado_options
    given = explicit_options(
        sys.argv if argv is None else argv, os.environ if environ is None else environ
    )
    for name, value in DEFAULTS.items():
        if name not in given:
            setattr(options, name, value)
    mode = check_auth(options, settings)
    install_broker_view(settings)
    return mode


# ------------------------------------------------------------ the Broker tab
class SqsQueues:
    """What Flower's Broker tab asks a broker for (``await queues(names)``), on SQS:
    per queue, the messages waiting (``ready``), received and not yet deleted
    (``unacked``: steps running, or a dead worker's until their visibility timeout)
    and their sum with the delayed ones (retries waiting in SQS) as ``messages``.
    SQS does not say how many consumers a queue has."""

    ATTRIBUTES = (
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    )

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            from botocore.config import Config

            from scorefleet import aws

            cfg = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1})
            self._client = aws.client("sqs", region_name=self.settings.aws.region, config=cfg)
        return self._client

    async def queues(self, names: Sequence[str]) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.depths, list(names))

    def depths(self, names: Sequence[str]) -> list[dict[str, Any]]:
        s = self.settings
        # URLs known from the settings: no GetQueueUrl (Flower's role on AWS grants
        # GetQueueAttributes on these three queues only)
        known = {
            s.broker.queue: s.broker.queue_url,
            s.broker.steps_queue: s.broker.steps_queue_url,
            s.broker.dead_letter_queue: s.broker.dead_letter_queue_url,
        }
        rows = []
        for name in dict.fromkeys([*names, s.broker.dead_letter_queue]):  # in order, once each
            try:
                url = known.get(name) or (
                    name
                    if name.startswith(("https://", "http://"))
                    else self.client().get_queue_url(QueueName=name)["QueueUrl"]
                )
                attrs = self.client().get_queue_attributes(
                    QueueUrl=url, AttributeNames=list(self.ATTRIBUTES)
                )["Attributes"]
            except Exception as exc:  # a queue Flower may not read, or one that is gone
                log.warning("Broker tab: cannot read the depth of queue %s: %s", name, exc)
                continue
            ready, unacked, delayed = (int(attrs.get(a, 0)) for a in self.ATTRIBUTES)
            rows.append(
                {
                    "name": name.rsplit("/", 1)[-1],
                    "messages": ready + unacked + delayed,
                    "messages_ready": ready,
                    "messages_unacknowledged": unacked,
                    "consumers": None,
                    "idle_since": None,
                }
            )
        return rows


def install_broker_view(settings: Settings) -> None:
    """On an SQS broker, make Flower's broker lookup answer with :class:`SqsQueues`
    (Flower sees the broker URL of our transport, ``workers.monitoring.compat_sqs:Transport://``,
    so the choice is made from scorefleet's own setting)."""
    if not settings.broker.url.startswith("sqs"):
        return
    from flower import views

    def broker(broker_url: str, *args: Any, **kwargs: Any) -> Any:
        return SqsQueues(settings)

    views.Broker = broker


def running_flower() -> bool:
    """True inside ``celery flower`` (the click command being run is Flower's)."""
    import click

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "flower"
