"""``scorefleet check``: what scorefleet would do with a file, without starting a model
or writing anything; and the same check for ``scorefleet submit --check``.

A file in S3 is read as the Lambda and the launch read it (its tags, its first bytes
or footer); a local file as it will be once uploaded (:mod:`workers.cli.localfile`).
Both go through the launch's own preflight (:func:`workers.scoring.preview.look`),
so what this prints on a file that would fail is what its ``.error`` would say.
Exit status: 0 it would be scored (as far as can be known without its model), 1 it
would fail, 2 a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from workers.cli.stackenv import Command, load_settings

#: The tags a check takes as options: (option, tag).
TAG_OPTIONS = (
    ("--model-image", "model_image"),
    ("--cluster", "k8s_cluster"),
    ("--namespace", "k8s_namespace"),
    ("--max-rejected-rows", "max_rejected_rows"),
    ("--content-type", "content_type"),
    ("--output-format", "output_format"),
    ("--keep-columns", "keep_columns"),
    ("--model-columns", "model_columns"),
    ("--drop-columns", "drop_columns"),
)


def tag_options(f: Any) -> Any:
    """One option per tag scorefleet reads (a tag on the file is overridden)."""
    for option, tag in reversed(TAG_OPTIONS):
        f = click.option(option, tag, help=f"tag {tag}")(f)
    return f


def run_check(
    settings: Any, target: str, tags: dict[str, str], *, key: str | None, full: bool
) -> Any:
    """The :class:`~workers.scoring.preview.Preview` of ``target`` (an ``s3://`` URI
    or a local file) with ``tags`` over the file's own."""
    from scorefleet.s3uri import S3Uri
    from scorefleet.storage import s3io
    from scorefleet.submission import build_job, identity_of, job_for_object
    from workers.cli.localfile import LocalObject

    s3 = s3io.client(settings.aws.region)
    if target.startswith("s3://"):
        try:
            source = S3Uri.parse(target)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="FILE") from None
        head = s3io.head(s3, source)
        if head is None:
            raise click.ClickException(f"{target} does not exist")
        job = job_for_object(settings, s3, source, identity_of(head), overrides=tags)
        reader: Any = s3
    else:
        path = Path(target)
        if not path.is_file():
            raise click.BadParameter(f"{target}: no such file", param_hint="FILE")
        source = settings.storage.input_uri.join(key or path.name)
        reader = LocalObject(path)
        job = build_job(settings, source, tags, version_id=None, etag="local", size=reader.size)
    return preview_of(settings, s3, reader, job, full=full)


def preview_of(settings: Any, s3: Any, reader: Any, job: Any, *, full: bool) -> Any:
    """The preview of ``job`` read through ``reader`` (S3, or a local file); ``s3``
    finds the contract a model reported (the state prefix)."""
    from scorefleet.errors import PermanentError
    from workers.scoring.contract import seen
    from workers.scoring.preview import declared_for, look, read_all

    spec = settings.models.spec(job.model_image)
    observed = None
    try:
        kept = seen.recall(s3, settings, job.model_image) if job.model_image else None
    except Exception as exc:  # the state prefix unreachable: say so, check the rest
        kept = None
        note = f"could not read the contract its model reported ({exc})"
    else:
        note = ""
    if kept is not None:
        observed = kept.contract
    p = look(settings, reader, job, spec, observed=observed, describe=True)
    if note:
        p.notes.append(note)
    if kept is not None:
        p.notes.append(
            f"the model's own contract is as run {kept.run_id} saw it; the model may "
            "have changed since"
        )
    elif p.protocol == "v2" and p.problem is None:
        p.notes.append(
            "the model's own metadata is read once it is ready (before the first "
            "mini-batch); no worker has reported it yet, so it is not checked here"
        )
    if full and p.problem is None:
        contracts = [c for c in (declared_for(spec, s3), observed) if c is not None]
        try:
            p.rows, p.batches = read_all(settings, reader, job, spec, contracts)
            p.rows_exact = True
        except PermanentError as exc:
            p.fail("score", exc)
    return p


def render(p: Any, shown: str) -> str:
    """The preview as text."""

    def listing(cols: list[str] | None) -> str:
        if cols is None:
            return "(not known from the first bytes)"
        return ", ".join(c or "''" for c in cols[:40]) + (
            f" and {len(cols) - 40} more" if len(cols) > 40 else ""
        )

    allowed = {True: "allowed", False: "NOT allowed", None: "?"}[p.allowed]
    lines = [
        f"file           {shown}",
        f"image          {p.image or '(none)'} ({allowed})",
        f"protocol       {p.protocol}",
        f"catalog entry  {p.catalog_entry or '(none: the defaults)'}",
    ]
    if p.format:
        lines.append(
            f"format         {p.format} ({p.format_decided_by}), compression "
            f"{p.compression}; output {p.output_format}"
        )
    if p.size is not None:
        lines.append(f"size           {p.size:,d} bytes")
    if p.columns is not None or p.format:
        lines.append(f"columns        {listing(p.columns)}")
        sent = "all of them" if p.model_columns == p.columns else listing(p.model_columns)
        lines.append(f"model is sent  {sent}")
        lines.append(f"kept           {listing(p.kept_columns) if p.kept_columns else 'none'}")
    if p.contract:
        verdict = "does not fit" if p.problem and p.problem.kind == "ContractMismatch" else "fits"
        lines.append(f"contract       {p.contract}: {verdict}")
        lines.append(f"               (checked {p.contract_checked})")
    else:
        lines.append("contract       none declared (the catalog's inputs)")
    if p.format:
        rows = "unknown until read (--full reads it)"
        if p.rows is not None:
            plural = "" if p.rows == 1 else "s"
            rows = f"{'' if p.rows_exact else 'about '}{p.rows:,d} row{plural}"
        batches = f"{p.batches:,d}" if p.batches is not None else "?"
        exact = "" if p.rows_exact else "about "
        lines.append(
            f"mini-batches   up to {p.batch_bytes / 2**20:g} MB each "
            f"(SCOREFLEET_MAX_PAYLOAD_MB): {exact}{batches} ({rows})"
        )
    if p.output:
        lines.append(f"output         {p.output}")
    lines += [f"note           {n}" for n in p.notes]
    if p.problem is None:
        lines.append("would be scored (as far as can be known without its model)")
    else:
        where = (
            "refused before it is queued"
            if p.problem.step == "enqueue"
            else (
                f"fails at {p.problem.step}"
                + (" (no model started)" if p.problem.step == "launch" else "")
            )
        )
        lines.append(f"WOULD FAIL: {where}; its .error would say:")
        lines.append(f"{p.problem.kind}: {p.problem.message}")
    return "\n".join(lines)


@click.command(cls=Command)
@click.argument("file")
@tag_options
@click.option("--key", help="a local file: its path under the input prefix (default: its name)")
@click.option("--full", is_flag=True, help="read the whole file as the score step does")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--env-file", type=click.Path(path_type=Path), help="export-style settings file")
def check(
    file: str,
    key: str | None,
    full: bool,
    as_json: bool,
    env_file: Path | None,
    **tags: str | None,
) -> None:
    """Say what scorefleet would do with FILE (s3://bucket/key, or a local file to try
    before uploading it), without starting a model or writing anything: the image and
    whether it is allowed, protocol, format, columns, the model's contract, mini-batches,
    the output. Exit status 0: it would be scored; 1: it would fail, with the message
    its .error would carry.

    Tags given as options override the file's own. --full reads the whole file as the
    score step does (without a model): exact rows and mini-batches, and every row read.
    """
    settings = load_settings(env_file)
    given = {k: v for k, v in tags.items() if v}
    p = run_check(settings, file, given, key=key, full=full)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=2))
    else:
        shown = file if file.startswith("s3://") else f"{file} -> {p.source}"
        click.echo(render(p, shown))
    if p.problem is not None:
        raise SystemExit(1)


def register(main: click.Group) -> None:
    main.add_command(check)
