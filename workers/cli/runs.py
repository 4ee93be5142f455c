"""``scorefleet status``, ``scorefleet runs`` and ``scorefleet sweep``: where a file
is, what ran lately, and files whose notification never came (registered on the
``scorefleet`` group by workers/cli/commands.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import click

from workers.cli.stackenv import Command, load_settings

_ENV_FILE = click.option(
    "--env-file", type=click.Path(path_type=Path), help="export-style settings file"
)
_SINCE = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``2d`` -> seconds."""
    m = _SINCE.match(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r}: give a duration such as 30m, 1h or 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def pipeline_of(settings: Any, s3: Any, uri: str) -> tuple[Any, str | None]:
    """(the source S3Uri, the pipeline id of its current upload; None if absent)."""
    from scorefleet.job import pipeline_id
    from scorefleet.s3uri import S3Uri
    from scorefleet.storage import s3io
    from scorefleet.submission import identity_of

    try:
        source = S3Uri.parse(uri)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URI") from None
    head = s3io.head(s3, source)
    if head is None:
        return source, None
    ident = identity_of(head)
    return source, pipeline_id(
        source.bucket, source.key, ident.version_id, ident.etag, ident.last_modified
    )


def status_view(settings: Any, s3: Any, uri: str) -> Any:
    """The :class:`~scorefleet.runstatus.RunView` of ``uri``: one HEAD and one GET (and a
    ranged GET of the ``.error``'s first lines when it failed)."""
    from scorefleet.runstatus import FileState, view
    from scorefleet.storage.ledger import Ledger

    source, pid = pipeline_of(settings, s3, uri)
    if pid is None:
        raise click.ClickException(f"{uri} does not exist (nothing to say about it)")
    rec = Ledger(settings, s3).get(pid)
    data = rec.data if rec else None
    first_lines = None
    if data and data.get("state") == "failed" and data.get("outcome"):
        first_lines = _first_lines(s3, str(data["outcome"]), 12)
    v = view(str(source), pid, data, error_lines=first_lines)
    if v.state == FileState.NOT_SEEN.value:
        v = _outcome_without_record(settings, s3, source, v)
    return v


def _outcome_without_record(settings: Any, s3: Any, source: Any, v: Any) -> Any:
    """No run record (say the state prefix was cleaned up): an outcome may be there."""
    import dataclasses

    from scorefleet.provenance import FIELDS
    from scorefleet.storage import outcome, s3io

    for dest, state in (
        (outcome.scoreout_location(settings, source), "published"),
        (outcome.error_location(settings, source), "failed"),
    ):
        meta = s3io.head(s3, dest)
        found = (meta or {}).get("Metadata", {})
        if found.get("pipeline-id") == v.pipeline_id:
            # what the run record would have said of it: the outcome's own metadata
            provenance = {k.replace("-", "_"): str(found[k]) for k in FIELDS if found.get(k)}
            return dataclasses.replace(
                v, state=state, outcome=str(dest), provenance=provenance or None
            )
    return v


def _first_lines(s3: Any, uri: str, lines: int) -> str | None:
    from scorefleet.s3uri import S3Uri

    try:
        loc = S3Uri.parse(uri)
        body = s3.get_object(Bucket=loc.bucket, Key=loc.key, Range="bytes=0-4095")["Body"]
        text = body.read().decode("utf-8", errors="replace")
    except Exception:
        return None
    return "\n".join(text.splitlines()[:lines])


def recent_records(
    settings: Any, s3: Any, since: float, *, limit: int, failed: bool, max_scan: int
) -> tuple[list[dict[str, Any]], bool]:
    """Run records written in the last ``since`` seconds, newest first, at most
    ``limit`` (and at most ``max_scan`` keys listed: True when that cut the list)."""
    from scorefleet.storage.ledger import record_location

    prefix = record_location(settings, "").key.removesuffix(".json")
    cutoff = time.time() - since
    recent: list[tuple[float, str]] = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.storage.state_uri.bucket,
        Prefix=prefix,
        PaginationConfig={"MaxItems": max_scan, "PageSize": 1000},
    )
    scanned = 0
    for page in pages:
        for o in page.get("Contents", []):
            scanned += 1
            if o["LastModified"].timestamp() >= cutoff:
                recent.append((o["LastModified"].timestamp(), str(o["Key"])))
    recent.sort(reverse=True)
    out: list[dict[str, Any]] = []
    # a failed-only list reads at most a few pages of records beyond what it shows
    for _, key in recent[: limit * (10 if failed else 1)]:
        try:
            body = s3.get_object(Bucket=settings.storage.state_uri.bucket, Key=key)["Body"]
            data = json.loads(body.read())
        except Exception as exc:  # deleted since it was listed, or not a record
            click.echo(f"(skipped {key}: {exc})", err=True)
            continue
        if failed and data.get("state") != "failed":
            continue
        data["pipeline_id"] = key.rsplit("/", 1)[-1].removesuffix(".json")
        out.append(data)
        if len(out) >= limit:
            break
    return out, scanned >= max_scan


def register(main: click.Group) -> None:
    main.add_command(status)
    main.add_command(runs)
    main.add_command(sweep)


# --------------------------------------------------------------------- status
@click.command(cls=Command)
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True, help="print the state as JSON")
@_ENV_FILE
def status(uri: str, as_json: bool, env_file: Path | None) -> None:
    """Where is my file? Its state from its run record (queued, launching, scoring
    with rows so far, publishing, published, failed), times, outcome, rerun command."""
    from scorefleet.runstatus import render
    from scorefleet.storage import s3io

    settings = load_settings(env_file)
    v = status_view(settings, s3io.client(settings.aws.region), uri)
    click.echo(json.dumps(v.to_json(), indent=2) if as_json else render(v), nl=as_json)


# ----------------------------------------------------------------------- runs
@click.command(cls=Command)
@click.option("--since", default="1h", show_default=True, help="e.g. 30m, 6h, 2d")
@click.option("--failed", is_flag=True, help="only the runs that failed")
@click.option("--limit", default=50, show_default=True, help="at most this many runs")
@click.option("--max-scan", default=100_000, show_default=True, help="run records listed at most")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@_ENV_FILE
def runs(
    since: str, failed: bool, limit: int, max_scan: int, as_json: bool, env_file: Path | None
) -> None:
    """Recent runs, newest first, one line per upload of a file (from the run records;
    files refused before any work included)."""
    from scorefleet.runstatus import ago, progress_text, view
    from scorefleet.storage import s3io

    settings = load_settings(env_file)
    s3 = s3io.client(settings.aws.region)
    records, cut = recent_records(
        settings, s3, parse_since(since), limit=limit, failed=failed, max_scan=max_scan
    )
    now = time.time()
    views = [view(str(r.get("source", "?")), str(r["pipeline_id"]), r, now=now) for r in records]
    if as_json:
        for v in views:
            click.echo(json.dumps(v.to_json()))
    else:
        if not views:
            click.echo(f"no {'failed ' if failed else ''}runs in the last {since}")
        else:
            click.echo(
                f"{'updated':>10}  {'state':10}  file  (newest first; one line per upload "
                "of a file: a file uploaded twice has two lines)"
            )
        for v in views:
            when = ago(now - (v.updated_at or now))
            first_error = (v.error or "").partition("\n")[0][:100]
            extra = progress_text(v) or first_error
            click.echo(f"{when:>6} ago  {v.state:10}  {v.uri}  {extra}".rstrip())
    if cut:
        click.echo(
            f"(listed the first {max_scan} run records only: raise --max-scan for more)",
            err=True,
        )


# ---------------------------------------------------------------------- sweep
@click.command(cls=Command)
@click.option("--dry-run", is_flag=True, help="say what would be queued; queue nothing")
@click.option(
    "--prefix",
    help="only this part of the input prefix (a path under it, or an s3:// URI), "
    "from its start; the periodic sweep's checkpoint is neither read nor moved",
)
@click.option("--max-keys", type=int, help="keys to list at most (SCOREFLEET_SWEEP_MAX_KEYS)")
@click.option("--grace", type=float, help="seconds (SCOREFLEET_SWEEP_GRACE_SECONDS)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@_ENV_FILE
def sweep(
    dry_run: bool,
    prefix: str | None,
    max_keys: int | None,
    grace: float | None,
    as_json: bool,
    env_file: Path | None,
) -> None:
    """Queue the files that have neither an outcome nor a run in progress (their
    notification never came): what the periodic sweep (tasks.sweep) does."""
    import dataclasses

    from scorefleet.celeryconf import make_app
    from scorefleet.s3uri import S3Uri
    from scorefleet.storage import s3io
    from workers.ops.sweep import Sweep, SweepLimits

    settings = load_settings(env_file)
    limits = SweepLimits.from_settings(settings)
    if max_keys is not None:
        limits = dataclasses.replace(limits, max_keys=max_keys)
    if grace is not None:
        limits = dataclasses.replace(limits, grace_seconds=grace)
    where = None
    if prefix:
        try:
            where = S3Uri.parse(prefix) if prefix.startswith("s3://") else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--prefix") from None
        where = where or settings.storage.input_uri.join(prefix.lstrip("/"))
    app = None if dry_run else make_app(settings)
    try:
        report = Sweep(settings, s3io.client(settings.aws.region), app, limits).run(
            where, dry_run=dry_run
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    for uri in report.queued:
        click.echo(f"{'would queue' if dry_run else 'queued'} {uri}")
    for problem in report.problems:
        click.echo(f"could not queue {problem}", err=True)
    click.echo(report.summary())


# ------------------------------------------------------------- --wait's bar
class RunBar:
    """While ``submit/rerun --wait`` waits: a progress bar of the file's bytes read
    (tqdm: small, no dependencies of its own, off by itself when stderr is not a
    terminal), with the rows so far and the state, from its run record."""

    POLL_SECONDS = 1.0

    def __init__(
        self,
        settings: Any,
        s3: Any,
        pipeline_id: str | None,
        started: float,
        *,
        file: Any = None,
        disable: bool | None = None,
    ) -> None:
        from scorefleet.storage.ledger import Ledger

        self.ledger = Ledger(settings, s3)
        self.pipeline_id = pipeline_id
        self.started = started
        self.file = file
        self.disable = disable
        self.bar: Any = None
        self._next = 0.0

    def poll(self) -> None:
        from tqdm import tqdm

        from scorefleet.runstatus import view

        now = time.monotonic()
        if self.pipeline_id is None or now < self._next:
            return
        self._next = now + self.POLL_SECONDS
        try:
            rec = self.ledger.get(self.pipeline_id)
        except Exception:  # the bar is a nicety: the outcome is what is waited for
            return
        if rec is None or float(rec.data.get("updated", 0)) < self.started - 1:
            return  # nothing yet, or an earlier run's record
        v = view("", self.pipeline_id, rec.data)
        if self.bar is None:
            self.bar = tqdm(
                total=v.total_bytes or None,
                unit="B",
                unit_scale=True,
                file=self.file,
                disable=self.disable,
                leave=False,
                dynamic_ncols=True,
            )
        self.bar.set_description_str(v.state)
        if v.rows is not None:
            self.bar.set_postfix_str(f"{v.rows:,} rows")
        if v.bytes_read is not None and v.bytes_read > self.bar.n:
            self.bar.update(v.bytes_read - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
