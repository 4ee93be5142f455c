"""One clear line, not a traceback, when the stack or AWS cannot be reached.

* :func:`unreachable`: the line that says what to do about an exception that means
  the emulator or an AWS service could not be reached or refused us (``scorefleet``'s
  commands answer with it: workers/cli/stackenv.py).
* The app's own connection check (:func:`install`, called by ``workers.app``): before
  a ``celery -A workers.app`` client command runs (``call``, ``inspect``, ``control``,
  ``events``, ``purge``, ``result``, ...), one request to the broker's queue tells
  whether it can work; if not, the command stops with that line (exit 1) instead of
  a 170-line traceback (``call``), a retry loop (``events``) or a false "No messages
  purged" (``purge``). It runs from Celery's ``user_preload_options`` signal, which
  Celery sends for every command once the app is loaded, before the command does
  anything. The servers (``worker``, ``beat``, ``flower``) keep retrying a broker
  they cannot reach, as a pod that starts before its network must, except against a
  local stack's emulator (a loopback endpoint), where nothing is coming back.
  ``--skip-broker-check`` skips it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from celery import Celery

    from scorefleet.settings import Settings

START_HINT = "start it with `scorefleet up` (in this directory)"

#: Celery's commands that do their work against the broker and end.
CLIENT_COMMANDS = frozenset(
    {"call", "inspect", "control", "events", "purge", "result", "status", "migrate", "list"}
)
#: Celery's long-running commands: checked only against a local stack's emulator.
SERVER_COMMANDS = frozenset({"worker", "beat", "flower"})


def local_endpoint() -> str | None:
    """The emulator's URL when this process is pointed at one on this machine."""
    url = os.environ.get("AWS_ENDPOINT_URL", "")
    return url if url.startswith(("http://127.", "http://localhost")) else None


def unreachable(exc: BaseException) -> str | None:
    """A one-line message saying what to do about ``exc``, if it means that the
    stack or an AWS service could not be reached or refused us; None otherwise."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from kombu.exceptions import OperationalError

    local = local_endpoint()
    if isinstance(exc, BotoConnectionError | OperationalError | ConnectionError):
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if local:
            return (
                f"cannot reach the local stack's emulator at {local} ({reason}): "
                f"is `scorefleet up` still running? {START_HINT[0].upper()}{START_HINT[1:]}"
            )
        return (
            f"cannot reach AWS ({reason}): check the network, AWS_REGION / "
            "AWS_ENDPOINT_URL and your credentials"
        )
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY), or run where a role provides them"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region configured: set AWS_REGION"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "?"), err.get("Message", "")
        return f"{exc.operation_name} failed: {code}: {message}".rstrip(": ")
    return None


def broker_problem(settings: Settings) -> str | None:
    """Why the broker's queue cannot be used now, in one line; None when it can.
    One SQS request (GetQueueUrl, or GetQueueAttributes of a configured queue URL),
    one attempt, a few seconds at most. Brokers other than SQS are not checked."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from scorefleet.storage.s3io import error_code

    url = urlsplit(settings.broker.url)
    if url.scheme != "sqs":
        return None
    endpoint = None
    if url.hostname:  # kombu takes a local endpoint from the broker URL (docs/local-stack.md)
        scheme = "https" if settings.broker.tls else "http"
        endpoint = f"{scheme}://{url.hostname}" + (f":{url.port}" if url.port else "")
    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
    # the credentials kombu uses: the broker URL's, else the environment's
    user, password = url.username, url.password
    try:
        sqs = boto3.session.Session(
            aws_access_key_id=unquote(user) if user and password else None,
            aws_secret_access_key=unquote(password) if user and password else None,
        ).client("sqs", region_name=settings.aws.region, endpoint_url=endpoint, config=config)
        if settings.broker.queue_url:
            sqs.get_queue_attributes(QueueUrl=settings.broker.queue_url, AttributeNames=["All"])
        else:
            sqs.get_queue_url(QueueName=settings.broker.queue)
    except ClientError as exc:
        if error_code(exc) in _NO_QUEUE:
            return None  # reached: kombu makes the queue when it first uses it
        return unreachable(exc)
    except Exception as exc:
        return unreachable(exc) or f"cannot use the broker's queue: {type(exc).__name__}: {exc}"
    return None


#: SQS's answers for a queue that does not exist (yet)
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def install(app: Celery, settings: Settings) -> None:
    """The connection check of ``celery -A workers.app`` commands (module docstring)."""
    import click
    from celery import signals

    app.user_options["preload"].add(
        click.Option(
            ["--skip-broker-check"],
            is_flag=True,
            default=False,
            help="scorefleet: run the command without first checking that the broker's "
            "queue answers",
        )
    )

    def check(sender: Any = None, app: Any = None, options: Any = None, **_: Any) -> None:
        if (options or {}).get("skip_broker_check"):
            return
        ctx = click.get_current_context(silent=True)
        command = ctx.info_name if ctx is not None else ""
        if command in CLIENT_COMMANDS or (command in SERVER_COMMANDS and local_endpoint()):
            problem = broker_problem(settings)
            if problem:
                # SystemExit: Celery's signals swallow (and log) any Exception a
                # receiver raises, a ClickException included
                click.echo(f"Error: {problem}", err=True)
                raise SystemExit(1)

    signals.user_preload_options.connect(check, weak=False)
