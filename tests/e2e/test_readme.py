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

import itertools
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


def test_scorefleet_up_prints_the_readmes_commands():
    """Issue 28, item 8: the next steps `scorefleet up` printed differed from the
    README's (`rerun` without `--model-image`)."""
    from workers.cli.tour import tour

    shown = [" ".join(c.split()) for c in tour(".scorefleet/stack.env", "examples/iris.csv")]
    lines = the_tour().replace("\\\n", " ").splitlines()
    assert shown == [" ".join(line.split()) for line in lines if not line.startswith("#")]
    # each command has its line on what it does and prints, above it
    assert all(prev.startswith("#") for prev, line in itertools.pairwise(lines) if line[:1] != "#")


def test_the_readme_commands_run_as_written(stack, tmp_path):
    block = the_tour()
    shell = run_in_a_fresh_shell(block, checkout_for(stack.state_dir, tmp_path), tmp_path, 300)
    out = shell.stdout
    assert shell.returncode == 0, block + "\n" + out + shell.stderr
    assert out.count("scored in") == 3, out  # submit --wait twice, rerun --wait
    # issue 28, item 8: the output shown cut to its first lines, saying so
    assert "(its first 6 lines; all of it: aws s3 cp s3://scorefleet-local/out/iris.csv" in out
    assert "uploaded s3://scorefleet-local/in/kept/iris.csv (tags: " in out
    assert "keep_columns=sepal_length" in out
    assert out.count("sepal_length,label,probability") == 2, out  # submit and aws s3 cp
    assert '"ETag": ' in out  # aws s3api put-object
    assert re.search(r"^[0-9a-f-]{36}$", out, re.M), out  # celery call prints the task id
    assert "rerun requested: tasks.rescore[" in out
    assert re.search(r"^state       \w+", out, re.M), out  # scorefleet status, of by-hand.csv
    assert "file        s3://scorefleet-local/in/by-hand.csv" in out
    assert re.search(r"ago  published +s3://scorefleet-local/in/iris.csv", out), out  # runs
    assert "one line per upload of a file" in out
    assert re.search(r"^swept \d+ keys of s3://scorefleet-local/in/ .*would queue", out, re.M), out
    assert "the dead-letter queue is empty" in out


def test_the_local_stack_docs_protocol_example_runs_as_written(stack, tmp_path):
    block = the_protocols_example()
    shell = run_in_a_fresh_shell(block, checkout_for(stack.state_dir, tmp_path), tmp_path, 180)
    assert shell.returncode == 0, block + "\n" + shell.stdout + shell.stderr
    assert shell.stdout.count("scored in") == 1, shell.stdout
    assert "label,probability" in shell.stdout, shell.stdout
