"""``scorefleet``: run the local stack, submit files, rerun them, check configuration.

Commands other than ``up`` read their settings from the environment; when
``SCOREFLEET_INPUT_URI`` is not set they use the local stack running in this
directory (``.scorefleet/stack.env``, see :mod:`workers.cli.stackenv`), so they work
against it out of the box, and say so in one line when none is running.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import click

from workers.cli import check as cli_check
from workers.cli import runs as cli_runs
from workers.cli.stackenv import DEFAULT_STATE, Group, load_settings
from workers.cli.tags import TagOption, file_tags
from workers.cli.tour import print_next_steps

REPO = Path(__file__).resolve().parents[2]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Score files in S3 with containerized models: one model container per file."""


# ------------------------------------------------------------------------- up
@main.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="logs, stack.env and model process records; one stack per directory",
)
@click.option("--workers", default=1, show_default=True, help="Celery worker processes")
@click.option("--concurrency", default=4, show_default=True, help="files in parallel per worker")
@click.option("--port", default=0, help="port of the S3/SQS/SNS emulator (default: a free one)")
@click.option("--flower-port", default=5555, show_default=True, help="0 picks a free port")
@click.option("--no-flower", is_flag=True, help="do not start Flower")
@click.option(
    "--catalog",
    "catalog_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="your own models: a JSON model catalog merged with the examples (README)",
)
@click.option("--demo", is_flag=True, help="drop examples/iris.csv in once the stack is up")
@click.option("--exit-after-demo", is_flag=True, help="stop the stack once the demo file is done")
def up(
    state_dir: Path,
    workers: int,
    concurrency: int,
    port: int,
    flower_port: int,
    no_flower: bool,
    catalog_file: Path | None,
    demo: bool,
    exit_after_demo: bool,
) -> None:
    """Run the whole system locally (emulated S3/SQS/SNS, Lambda bridge, worker, beat, Flower).

    Models: the examples, plus the entries of SCOREFLEET_MODEL_CATALOG and --catalog
    (allowed to run, with SCOREFLEET_ALLOWED_IMAGE_PREFIXES). Ctrl-C (SIGINT) or
    SIGTERM stops every process it started; so does any part that dies, with its error
    (a worker that dies is started again, as a Deployment would, unless it keeps dying).
    """
    from workers.localstack.stack import LocalStack, PartFailed, free_port, local_models
    from workers.localstack.state import StackRunning

    try:
        catalog, prefixes = local_models(os.environ, catalog_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if stopping:
            return  # already stopping: let it finish
        stopping = True
        raise KeyboardInterrupt

    # explicitly: a background job of a non-interactive shell (`make up &`) starts
    # with SIGINT ignored, and Python then installs no handler of its own
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if flower_port and not no_flower and not _port_free(flower_port):
        click.echo(f"port {flower_port} is taken: Flower gets a free port")
        flower_port = free_port()
    stack = LocalStack(
        state_dir.resolve(),
        workers=workers,
        concurrency=concurrency,
        flower=not no_flower,
        moto_port=port,
        flower_port=flower_port,
        catalog=catalog,
        extra_env={"SCOREFLEET_ALLOWED_IMAGE_PREFIXES": prefixes},
    )
    code, refused = 0, False
    try:
        click.echo("starting the local stack ...")
        stack.start()
        print_next_steps(stack, state_dir)
        if demo or exit_after_demo:
            ok = _run_demo(stack)
            code = 0 if ok or not exit_after_demo else 1
        while not exit_after_demo:
            stack.check()
            while stack.notices:
                click.echo(f"scorefleet up: {stack.notices.pop(0)}", err=True)
            time.sleep(0.5)
    except StackRunning as exc:
        refused = True
        raise click.ClickException(str(exc)) from None
    except PartFailed as exc:
        click.echo(f"\nscorefleet up: {exc.part} {exc.detail}", err=True)
        click.echo("stopping the local stack ...", err=True)
        code = 1
    except KeyboardInterrupt:
        click.echo("\nstopping ...")
    finally:
        stopping = True
        stack.stop()
        if not refused:
            click.echo(
                "stopped every process the local stack started (the emulator's buckets "
                "and queues went with it)."
            )
    raise SystemExit(code)


def _port_free(port: int) -> bool:
    """Can a server listen on ``port``? Bound as Flower (Tornado) binds it, with
    SO_REUSEADDR: the connections a Flower stopped a moment ago leaves in TIME-WAIT
    do not keep the next one off its port."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run_demo(stack: Any) -> bool:
    from workers.localstack.stack import IRIS_IMAGE

    demo_file = REPO / "examples" / "iris.csv"
    click.echo(f"demo: submitting {demo_file.name} ...")
    settings = load_settings(stack.state_dir / "stack.env")
    return _submit_and_wait(
        settings,
        demo_file,
        f"demo/{demo_file.name}",
        {"model_image": IRIS_IMAGE},
        wait=120,
        alive=stack.check,
    )


# --------------------------------------------------------------------- submit
@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-image", help="tag model_image (default: the configured fallback)")
@click.option("--cluster", help="tag k8s_cluster")
@click.option("--namespace", help="tag k8s_namespace")
@click.option("--tag", "tag_items", multiple=True, metavar="NAME=VALUE", cls=TagOption)
@click.option("--key", help="path under the input prefix (default: the file name)")
@click.option("--wait", default=0, help="seconds to wait for the outcome (0: do not wait)")
@click.option(
    "--check",
    "check_first",
    is_flag=True,
    help="run `scorefleet check` first: no upload if it fails",
)
@click.option("--env-file", type=click.Path(path_type=Path), help="export-style settings file")
def submit(
    file: Path,
    model_image: str | None,
    cluster: str | None,
    namespace: str | None,
    tag_items: tuple[str, ...],
    key: str | None,
    wait: int,
    check_first: bool,
    env_file: Path | None,
) -> None:
    """Upload FILE to the input prefix with its tags (the notification does the rest).

    Any tag scorefleet reads is set with --tag, e.g. --tag keep_columns=id --tag
    max_rejected_rows=10 (--model-image, --cluster and --namespace are short for three
    of them)."""
    named = {"model_image": model_image, "k8s_cluster": cluster, "k8s_namespace": namespace}
    tags = file_tags(tag_items, named)
    settings = load_settings(env_file)
    if check_first:
        p = cli_check.run_check(settings, str(file), tags, key=key or file.name, full=False)
        if p.problem is not None:
            click.echo(cli_check.render(p, f"{file} -> {p.source}"), err=True)
            click.echo("not uploaded (scorefleet check found it would fail)", err=True)
            raise SystemExit(1)
        click.echo(f"checked {file}: it would be scored")
    ok = _submit_and_wait(settings, file, key or file.name, tags, wait=wait)
    if not ok:
        raise SystemExit(1)


def _submit_and_wait(
    settings: Any,
    file: Path,
    rel_key: str,
    tags: dict[str, str],
    wait: int,
    alive: Any = None,
) -> bool:
    from scorefleet.storage import s3io

    s3 = s3io.client(settings.aws.region)
    source = settings.storage.input_uri.join(rel_key)
    started = time.time()
    s3.upload_file(
        str(file),
        source.bucket,
        source.key,
        ExtraArgs={"Tagging": s3io.encode_tags(tags)} if tags else None,
    )
    shown = " ".join(f"{k}={v}" for k, v in tags.items())
    click.echo(f"uploaded {source}" + (f" (tags: {shown})" if tags else ""))
    return _wait_for_outcome(settings, s3, source, started, wait, alive)


def _wait_for_outcome(
    settings: Any, s3: Any, source: Any, started: float, wait: int, alive: Any = None
) -> bool:
    """Wait up to ``wait`` seconds for the ``.scoreout`` or ``.error`` of ``source``
    written after ``started``, with a progress bar meanwhile (on a terminal); print
    the outcome (its first lines). True if scored."""
    from scorefleet.storage import outcome

    scoreout = outcome.scoreout_location(settings, source)
    error = outcome.error_location(settings, source)
    if not wait:
        click.echo(f"the outcome will be {scoreout} (or {error})")
        return True
    bar = cli_runs.RunBar(settings, s3, cli_runs.pipeline_of(settings, s3, str(source))[1], started)
    try:
        return _poll_outcome(s3, scoreout, error, started, wait, alive, bar)
    finally:
        bar.close()


def _poll_outcome(
    s3: Any, scoreout: Any, error: Any, started: float, wait: int, alive: Any, bar: Any
) -> bool:
    from scorefleet.storage import s3io

    deadline = started + wait
    while time.time() < deadline:
        if alive is not None:
            alive()
        bar.poll()
        for dest, good in ((scoreout, True), (error, False)):
            meta = s3io.head(s3, dest)
            if meta and meta["LastModified"].timestamp() >= started - 1:
                bar.close()
                secs = time.time() - started
                click.echo(f"{'scored' if good else 'FAILED'} in {secs:.1f}s: {dest}")
                _show_start(s3, dest, meta, 6 if good else 80)
                return good
        time.sleep(0.25)
    click.echo(f"no outcome after {wait}s; look at the worker logs", err=True)
    return False


def _show_start(s3: Any, dest: Any, meta: dict[str, Any], lines: int) -> None:
    """The first ``lines`` lines of an outcome, saying so when there is more (a
    binary output, Parquet: its size and how to fetch it)."""
    ctype = str(meta.get("ContentType", ""))
    size = int(meta.get("ContentLength", 0))
    whole = f"aws s3 cp {shlex.quote(str(dest))} -"
    if not ctype.startswith("text/") and "json" not in ctype:
        click.echo(f"({ctype or 'binary'}, {size:,} bytes: {whole} > FILE fetches it)")
        return
    body = s3.get_object(Bucket=dest.bucket, Key=dest.key, Range="bytes=0-16383")["Body"]
    text = body.read().decode("utf-8", errors="replace")
    body.close()
    shown = text.splitlines()[:lines]
    click.echo("\n".join(shown))
    if size > len("\n".join(shown).encode()) + 1:
        click.echo(f"(its first {len(shown)} lines; all of it: {whole})")


# ---------------------------------------------------------------------- rerun
@main.command()
@click.argument("uri")
@click.option("--model-image", help="score with this image instead of the tagged one")
@click.option("--cluster", help="override k8s_cluster")
@click.option("--namespace", help="override k8s_namespace")
@click.option("--no-force", is_flag=True, help="skip the file if it was already scored")
@click.option("--wait", default=0, help="seconds to wait for the outcome (0: do not wait)")
@click.option("--env-file", type=click.Path(path_type=Path), help="export-style settings file")
def rerun(
    uri: str,
    model_image: str | None,
    cluster: str | None,
    namespace: str | None,
    no_force: bool,
    wait: int,
    env_file: Path | None,
) -> None:
    """Rerun a file: sends tasks.rescore, like `celery -A workers.app call tasks.rescore`."""
    from scorefleet.celeryconf import make_app
    from scorefleet.s3uri import S3Uri
    from scorefleet.storage import s3io

    settings = load_settings(env_file)
    try:
        source = S3Uri.parse(uri)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URI") from None
    app = make_app(settings)
    kwargs = {
        "model_image": model_image,
        "k8s_cluster": cluster,
        "k8s_namespace": namespace,
        "force": not no_force,
    }
    started = time.time()
    result = app.send_task(
        "tasks.rescore", args=[uri], kwargs={k: v for k, v in kwargs.items() if v is not None}
    )
    click.echo(f"rerun requested: tasks.rescore[{result.id}] for {uri}")
    if wait and not _wait_for_outcome(
        settings, s3io.client(settings.aws.region), source, started, wait
    ):
        raise SystemExit(1)


# ------------------------------------------------------------------------ dlq
@main.group()
def dlq() -> None:
    """The dead-letter queue: messages SQS gave up on after too many receives."""


@dlq.command("list")
@click.option("--max", "limit", default=100, show_default=True, help="at most this many")
@click.option("--env-file", type=click.Path(path_type=Path), help="export-style settings file")
def dlq_list(limit: int, env_file: Path | None) -> None:
    """Show the messages in the dead-letter queue (they stay there)."""
    from workers.ops.dlq import DeadLetterQueue, age

    letters = DeadLetterQueue(load_settings(env_file)).peek(limit)
    if not letters:
        click.echo("the dead-letter queue is empty")
        return
    click.echo(f"{'message id':38} {'receives':>8} {'age':>6}  {'task':16} subject")
    for d in letters:
        click.echo(
            f"{d.message_id:38} {d.receive_count:8d} {age(d.sent_at):>6}  {d.task:16} {d.subject}"
        )
    click.echo(f"{len(letters)} message(s); `scorefleet dlq redrive --all` sends them back")


@dlq.command("redrive")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "redrive_all", is_flag=True, help="every message in the queue")
@click.option("--env-file", type=click.Path(path_type=Path), help="export-style settings file")
def dlq_redrive(message_ids: tuple[str, ...], redrive_all: bool, env_file: Path | None) -> None:
    """Send dead letters back to the task queue (fix the cause first)."""
    from workers.ops.dlq import DeadLetterQueue

    if not message_ids and not redrive_all:
        raise click.UsageError("give message ids (see `scorefleet dlq list`) or --all")
    moved = DeadLetterQueue(load_settings(env_file)).redrive(
        None if redrive_all else set(message_ids)
    )
    for d in moved:
        click.echo(f"sent back {d.message_id} ({d.task} {d.subject})")
    missing = set(message_ids) - {d.message_id for d in moved}
    if missing:
        raise click.ClickException("not found in the dead-letter queue: " + ", ".join(missing))
    click.echo(f"{len(moved)} message(s) sent back to the task queue")


# --------------------------------------------------------------------- config
@main.command()
@click.option("--markdown", is_flag=True, help="print the configuration reference table")
@click.option("--env-file", type=click.Path(path_type=Path), help="export-style settings file")
@click.option(
    "--check-backend",
    is_flag=True,
    help="also run the launch backend's start-up checks, as a worker does (kubernetes: "
    "does each scoring namespace enforce the restricted Pod Security Standard?); "
    "exit 1 if one is not as it should be",
)
def config(markdown: bool, env_file: Path | None, check_backend: bool) -> None:
    """Check the configuration in the environment (or print the reference)."""
    from scorefleet.redact import shown_setting
    from scorefleet.settings import describe_markdown

    if markdown:
        click.echo(describe_markdown(), nl=False)
        return
    settings = load_settings(env_file)
    for name, value in sorted(settings.shown()):
        click.echo(f"{name:24} {shown_setting(name, value)}")
    if check_backend:
        from workers.backends import make_backend
        from workers.backends.registry import start_checks

        checks = start_checks(settings, make_backend(settings))
        for check in checks:
            warning = "" if check.ok else "WARNING: "
            click.echo(f"{check.name:24} {check.subject}: {warning}{check.detail}")
        if not all(c.ok for c in checks):
            raise SystemExit(1)


cli_runs.register(main)
cli_check.register(main)
