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
  and, as in Flower itself, not behind the login.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.settings import Settings

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
    if not settings.flower_unauthenticated:
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
    return check_auth(options, settings)


def running_flower() -> bool:
    """True inside ``celery flower`` (the click command being run is Flower's)."""
    import click

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "flower"
