"""The commands of the README's tour and of docs/local-stack.md, run as written, in a
fresh shell, against a running stack (issue 12, item 4: the README said `scorefleet
...` and `celery ...`, which were not on PATH, and `aws ...`, which was not installed;
issue 23 moved the README's sections into docs/, and their commands stay runnable).

The commands run in the repository's directory layout: a directory whose
`examples/` and `.venv` are this checkout's and whose `.scorefleet/` is the
session's local stack (so that the test never touches a developer's own
`.scorefleet/`, which may hold a stack of their own).

What cannot run here (AWS, EKS, the benchmarks, `make test` itself) is checked
against what it names in tests/unit/test_docs.py; docs/local-stack.md's own model
runs in tests/e2e/test_cli_up.py, on a stack started with its catalog."""

from __future__ import annotations

import re

import pytest

from tests.helpers.docs import (
    another_shell,
    block_starting,
    block_with,
    checkout_for,
    run_in_a_fresh_shell,
)

pytestmark = pytest.mark.slow


def the_tour() -> str:
    return block_starting("README.md", "source .scorefleet/stack.env")


def the_protocols_example() -> str:
    """docs/local-stack.md: a model in another protocol, from examples/catalog.json
    (whose entries the session's stack has: tests/helpers/servers/catalog.py)."""
    return another_shell(block_with("docs/local-stack.md", "--catalog examples/catalog.json"))


def test_the_readme_block_is_what_this_test_runs():
    block = the_tour()
    assert "aws s3api put-object" in block and "scorefleet rerun" in block
    assert the_protocols_example().startswith("source .scorefleet/stack.env\n")


def test_the_readme_commands_run_as_written(stack, tmp_path):
    block = the_tour()
    shell = run_in_a_fresh_shell(block, checkout_for(stack.state_dir, tmp_path), tmp_path, 300)
    out = shell.stdout
    assert shell.returncode == 0, block + "\n" + out + shell.stderr
    assert out.count("scored in") == 2, out  # submit --wait and rerun --wait
    assert out.count("label,probability") >= 2, out  # ... and aws s3 cp
    assert re.search(r"^[0-9a-f-]{36}$", out, re.M), out  # celery call prints the task id
    assert "rerun requested: tasks.rescore[" in out
    assert "state       published" in out  # scorefleet status
    assert re.search(r"ago  published +s3://scorefleet-local/in/iris.csv", out), out  # runs
    assert re.search(r"^swept \d+ keys of s3://scorefleet-local/in/ .*would queue", out, re.M), out


def test_the_local_stack_docs_protocol_example_runs_as_written(stack, tmp_path):
    block = the_protocols_example()
    shell = run_in_a_fresh_shell(block, checkout_for(stack.state_dir, tmp_path), tmp_path, 180)
    assert shell.returncode == 0, block + "\n" + shell.stdout + shell.stderr
    assert shell.stdout.count("scored in") == 1, shell.stdout
    assert "label,probability" in shell.stdout, shell.stdout
