"""Every `celery` and `scorefleet` command the docs show answers a stopped stack in one
clear line (issue 28, item 3: `celery -A workers.app call ...` printed a 170-line
traceback, `events` retried forever, `purge` said "No messages purged").

The shell is pointed at a stack that is gone (what `source .scorefleet/stack.env`
left in it): nothing listens on the emulator's port. `scorefleet` commands answer
through their own error handling (workers/cli/stackenv.py); `celery` commands through
the app's own connection check (workers/process/reach.py), made from Celery's
``user_preload_options`` signal before the command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.docs import blocks, commands, inline_commands
from workers.localstack.stack import free_port, stack_env

#: pages whose commands a user runs against the local stack
PAGES = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
#: what needs no stack: starting one, help, printing the configuration
NO_STACK = {"up", "config", "--help", "-h"}


def documented_commands() -> list[list[str]]:
    """Each `celery -A workers.app` and `scorefleet` command of the docs, one per
    command and verb (the first of each)."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for page in PAGES:
        found = [c for b in blocks(page) for c in commands(b)]
        found += [c for i in inline_commands(page) for c in commands(i)]
        for words in found:
            if words[:3] == ["celery", "-A", "workers.app"] and len(words) > 3:
                seen.setdefault(("celery", words[3]), words)
            elif words[:1] == ["scorefleet"] and len(words) > 1 and words[1] not in NO_STACK:
                verb = tuple(w for w in words[1:3] if not w.startswith(("-", "s3://", "examples/")))
                seen.setdefault(("scorefleet", *verb), words)
    return list(seen.values())


def run(words: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    program = ["-m", "celery"] if words[0] == "celery" else ["-m", "workers.cli"]
    proc = subprocess.run(
        [sys.executable, *program, *words[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def test_the_docs_show_celery_and_scorefleet_commands():
    shown = {tuple(c[:4]) for c in documented_commands()}
    assert ("celery", "-A", "workers.app", "call") in shown
    assert ("celery", "-A", "workers.app", "flower") in shown
    assert any(c[:2] == ("scorefleet", "submit") for c in shown)


def test_every_documented_command_answers_a_stopped_stack_in_one_line(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SCOREFLEET_", "AWS_"))},
        **stack_env(dead, tmp_path / ".scorefleet"),
        "PYTHONPATH": str(REPO),
    }
    todo = documented_commands()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda c: run(c, env, REPO), todo))
    got = {" ".join(c): a for c, a in zip(todo, answers, strict=True)}
    # what prose names without its arguments (`scorefleet dlq`, `scorefleet dlq
    # redrive`) gets Click's usage answer before anything is reached: not about a stack
    got = {c: (rc, out) for c, (rc, out) in got.items() if not (rc == 2 and "Usage:" in out)}
    reached = {" ".join(c.split()[:4]) for c in got}
    assert {"celery -A workers.app call", "celery -A workers.app flower"} <= reached, reached
    assert {"scorefleet submit", "scorefleet status", "scorefleet runs --since"} <= {
        " ".join(c.split()[: 3 if "runs" in c else 2]) for c in got
    }, reached
    for command, (rc, out) in got.items():
        if command.startswith("scorefleet check examples/"):
            # a dry run of a local file needs no stack: it checks what it can and says
            # in a note what it could not read (a model's reported contract)
            assert rc == 0 and "Traceback" not in out, (command, rc, out)
            assert "could not read the contract its model reported" in out, out
            assert out.endswith("would be scored (as far as can be known without its model)")
            continue
        assert rc == 1, (command, rc, out)
        assert len(out.splitlines()) == 1 and "Traceback" not in out, (command, out)
        assert out.startswith("Error: cannot reach the local stack's emulator at " + dead), out
        assert "scorefleet up" in out, (command, out)


@pytest.mark.parametrize("skip", [False, True])
def test_a_shell_configured_for_nothing_gets_one_line_too(tmp_path, skip):
    """No stack.env sourced (a new shell): the celery app says what to source."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOREFLEET_", "AWS_"))}
    env["PYTHONPATH"] = str(REPO)
    args = ["celery", "-A", "workers.app", "call", "tasks.rescore"]
    rc, out = run([*args, "--skip-broker-check"] if skip else args, env, tmp_path)
    assert rc == 2 and len(out.splitlines()) == 1, out
    assert "no SCOREFLEET_* variable is set" in out and "source .scorefleet/stack.env" in out


def test_the_check_passes_a_reachable_broker_whose_queue_is_not_made_yet(
    moto_endpoint, bucket, monkeypatch
):
    """kombu makes the queue when it first uses it: a missing queue is no reason to
    stop a command (a worker on a new emulator, `celery call` before any worker)."""
    from scorefleet.settings import load
    from tests.helpers import base_env
    from workers.process.reach import broker_problem

    env = base_env(moto_endpoint, bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    assert broker_problem(load(env)) is None
    dead = base_env(f"http://127.0.0.1:{free_port()}", bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead["AWS_ENDPOINT_URL"])
    assert "cannot reach the local stack's emulator" in (broker_problem(load(dead)) or "")
