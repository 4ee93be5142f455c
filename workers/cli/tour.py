"""What ``scorefleet up`` prints once the stack is up: where its parts are, that the
emulator keeps nothing across restarts, and the README's "Try it" commands, from the
one list of them (:data:`TOUR`; tests/e2e/test_readme.py holds it to the README's)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parents[2]


def _shown(path: Path) -> str:
    """``path`` as a shell word: relative to the current directory when inside it."""
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path.resolve())
    return shlex.quote(shown)


#: The README's "Try it" commands, in its order (tests/e2e/test_readme.py holds the two
#: the same): what `scorefleet up` prints as next steps. {env}, {iris}: paths as the
#: user's shell sees them; {image}, {bucket}: the example's.
TOUR = (
    "source {env}",
    "scorefleet check {iris} --model-image {image}",
    "scorefleet submit {iris} --model-image {image} --wait 60",
    "scorefleet submit {iris} --key kept/iris.csv --model-image {image} "
    "--tag keep_columns=sepal_length --wait 60",
    "aws s3 cp s3://{bucket}/out/kept/iris.csv.scoreout -",
    "aws s3api put-object --bucket {bucket} --key in/by-hand.csv --body {iris} "
    "--tagging 'model_image={image}'",
    "scorefleet status s3://{bucket}/in/by-hand.csv",
    "scorefleet rerun s3://{bucket}/in/iris.csv --wait 60",
    "celery -A workers.app call tasks.rescore --args '[\"s3://{bucket}/in/kept/iris.csv\"]'",
    "scorefleet runs --since 1h",
    "scorefleet sweep --dry-run",
    "scorefleet dlq list",
)

#: What `scorefleet up` says about the emulator's state (issue 28): it is not kept.
NOT_KEPT = (
    "The emulator keeps its buckets, queues and files in memory only: stopping the "
    "stack loses them, outputs included (its logs stay)."
)


def tour(env: str, iris: str) -> list[str]:
    """The README's commands, for a shell whose paths are ``env`` and ``iris``."""
    from workers.localstack.stack import BUCKET, IRIS_IMAGE

    return [line.format(env=env, iris=iris, image=IRIS_IMAGE, bucket=BUCKET) for line in TOUR]


def print_next_steps(stack: Any, state_dir: Path) -> None:
    """What `scorefleet up` prints once the stack is up: where things are, that the
    emulator keeps nothing, and the README's commands."""
    from workers.localstack.stack import BUCKET

    bin_dir = Path(sys.executable).parent
    aws = shutil.which("aws", path=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    steps = tour(_shown(state_dir / "stack.env"), _shown(REPO / "examples" / "iris.csv"))
    if not aws:
        steps = [s for s in steps if not s.startswith("aws ")]
        steps.append("(the aws CLI is not installed here: `make up` installs it)")
    lines = "\n".join(f"  {step}" for step in steps)
    click.echo(f"""
scorefleet local stack is up.
  S3/SQS/SNS emulator  {stack.endpoint}
  input                s3://{BUCKET}/in/      outputs  s3://{BUCKET}/out/
  Flower               {stack.flower_url or "(not started)"}
  logs                 {_shown(state_dir / "logs")}
{NOT_KEPT}

In another shell, from this directory (README.md, "Try it", says what each command
does and prints; stack.env puts scorefleet, celery and aws on PATH):
{lines}

Ctrl-C stops everything.
""")
