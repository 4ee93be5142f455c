"""The README's "Using the local stack" commands, run as written, in a fresh shell,
against a running stack (issue 12, item 4): they said `scorefleet ...` and
`celery ...`, which were not on PATH, and `aws ...`, which was not installed.

The commands run in the repository's directory layout: a directory whose
`examples/` and `.venv` are this checkout's and whose `.scorefleet/` is the
session's local stack (so that the test never touches a developer's own
`.scorefleet/`, which may hold a stack of their own)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def using_the_local_stack() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the local stack", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_block_is_what_this_test_runs():
    block = using_the_local_stack()
    assert block.startswith("source .scorefleet/stack.env\n")
    assert "aws s3api put-object" in block and "scorefleet rerun" in block


def test_the_readme_commands_run_as_written(stack, tmp_path):
    checkout = tmp_path / "scorefleet"
    checkout.mkdir()
    (checkout / "examples").symlink_to(REPO / "examples")
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    (checkout / ".scorefleet").symlink_to(stack.state_dir)
    block = using_the_local_stack()
    fresh = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    shell = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block],
        cwd=checkout,
        env=fresh,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = shell.stdout
    assert shell.returncode == 0, block + "\n" + out + shell.stderr
    assert out.count("scored in") == 2, out  # submit --wait and rerun --wait
    assert out.count("label,probability") >= 2, out  # ... and aws s3 cp
    assert re.search(r"^[0-9a-f-]{36}$", out, re.M), out  # celery call prints the task id
    assert "rerun requested: tasks.rescore[" in out
    assert "state       published" in out  # scorefleet status
    assert re.search(r"ago  published +s3://scorefleet-local/in/iris.csv", out), out  # runs
    assert re.search(r"^swept \d+ keys of s3://scorefleet-local/in/ .*would queue", out, re.M), out
