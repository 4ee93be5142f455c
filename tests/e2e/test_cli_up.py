"""`scorefleet up` as a new user meets it (issue 12): the README's main job, started
the way `make up` starts it, stopped by SIGINT or SIGTERM even as a background job,
one stack per directory, every part supervised, and one-line answers from every
command against a stack that is not running."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import REPO, docs
from workers.localstack import state as stackstate

pytestmark = pytest.mark.slow

UP_LINE = "Ctrl-C stops everything"
#: Where "A model of your own" is (it was the README's until issue 23).
OWN_MODEL_DOC = "docs/local-stack.md"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without scorefleet or AWS settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SCOREFLEET_", "AWS_", "FLOWER_"))
    }
    env.update(extra)
    return env


class BackgroundUp:
    """`scorefleet up ...` started as a background job of a non-interactive shell,
    as `make up &` or a script's `scorefleet up &` does: such a job starts with
    SIGINT ignored."""

    def __init__(self, cwd: Path, *args: str, **env: str) -> None:
        self.cwd = cwd
        self.out = cwd / "up.out"
        pidfile = cwd / "up.pid"
        command = shlex.join([sys.executable, "-m", "workers.cli", "up", *args])
        self.shell = subprocess.Popen(
            ["bash", "-c", f"{command} > {self.out} 2>&1 & echo $! > {pidfile}; wait $!"],
            cwd=cwd,
            env=clean_env(**env),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline, "the shell did not start scorefleet up"
            time.sleep(0.05)
        self.pid = int(pidfile.read_text())
        self.children: list[psutil.Process] = []

    def output(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def wait_for(self, needle: str, timeout: float = 150) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if needle in out:
                return out
            if self.shell.poll() is not None:
                pytest.fail(f"scorefleet up exited ({self.shell.returncode}):\n{out}")
            time.sleep(0.2)
        pytest.fail(f"{needle!r} not printed in {timeout}s:\n{self.output()}")

    def wait_up(self) -> str:
        out = self.wait_for(UP_LINE)
        self.children = psutil.Process(self.pid).children(recursive=True)
        return out

    def stop(self, sig: int, timeout: float = 90) -> int:
        os.kill(self.pid, sig)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 90) -> int:
        try:
            return self.shell.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scorefleet up did not stop in {timeout}s:\n{self.output()}")

    def alive_children(self) -> list[psutil.Process]:
        time.sleep(0.5)
        return [c for c in self.children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

    def workers(self) -> list[psutil.Process]:
        """Its Celery workers now (one it started again after another died included)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.children = list(
                {c.pid: c for c in self.children + psutil.Process(self.pid).children(True)}.values()
            )
        return [
            c
            for c in self.children
            if c.is_running()
            and c.status() != psutil.STATUS_ZOMBIE
            and " worker " in " ".join(c.cmdline())
        ]

    def kill_all(self) -> None:
        """Only when a test failed half way: what it started, by PID."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.workers()  # (the ones started since wait_up too)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        for c in self.children:
            if c.is_running():
                c.kill()
        if self.shell.poll() is None:
            self.shell.kill()
            self.shell.wait()


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=cwd,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def results(procs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int, str]]:
    return {name: (p.wait(timeout=90), p.stdout.read().strip()) for name, p in procs.items()}


def test_up_demo_scores_the_iris_file_and_stops(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "up",
            "--demo",
            "--exit-after-demo",
            "--no-flower",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scorefleet local stack is up." in proc.stdout
    assert "scored in" in proc.stdout and "label,probability" in proc.stdout
    assert "stopped every process the local stack started" in proc.stdout
    # issue 28: nothing of the emulator is kept across restarts, and it says so
    assert "stopping the stack loses them, outputs included" in proc.stdout
    assert "(the emulator's buckets and queues went with it)" in proc.stdout
    state = tmp_path / ".scorefleet"
    assert not (state / "stack.env").exists()  # the stack is gone: nothing points at it
    assert stackstate.holder(state) is None


def next_steps(out: str) -> list[str]:
    """The commands `scorefleet up` printed for the user to run."""
    block = out.split("In another shell", 1)[1].split(UP_LINE, 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.startswith("  ")]


def command_line(proc: psutil.Process) -> str:
    """A process's command line; empty for one that ended since it was listed (a
    zombie until its parent waits for it: seen once in CI, between the listing and
    this read)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.NoSuchProcess:  # ZombieProcess included
        return ""


def test_make_up_in_the_background_printed_steps_run_and_ctrl_c_stops_it(tmp_path):
    """`scorefleet up --demo` (what `make up` runs) as a background job: the demo
    file is scored, the next steps it prints run as shown in a fresh shell (nothing
    on PATH but the system's), and SIGINT (Ctrl-C) stops every process it started."""
    up = BackgroundUp(tmp_path, "--demo", "--flower-port", "0")
    try:
        out = up.wait_for("label,probability")  # the demo file, scored after "up"
        up.children = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(command_line(c) for c in up.children)
        for part in ("workers.localstack.emulator", " worker ", " beat ", " flower "):
            assert part in names, names
        steps = next_steps(out)
        assert steps[0].startswith("source ") and any(s.startswith("aws ") for s in steps)
        fresh = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
        if os.environ.get("PYTHONPATH"):  # a worktree's code is the code the commands run
            fresh["PYTHONPATH"] = os.environ["PYTHONPATH"]
        shell = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + "\n".join(steps)],
            cwd=tmp_path,
            env=fresh,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert shell.returncode == 0, "\n".join(steps) + "\n" + shell.stdout + shell.stderr
        assert shell.stdout.count("scored in") == 3, shell.stdout  # submit twice, rerun --wait
        # issue 28: it says plainly that the emulator keeps nothing across restarts
        assert "stopping the stack loses them, outputs included" in out
        assert "label,probability" in shell.stdout
        assert re.search(r"^[0-9a-f-]{36}$", shell.stdout, re.M)  # celery call: the task id
        assert up.stop(signal.SIGINT) == 0
        assert "stopped every process" in up.output()
        assert up.alive_children() == []
        assert not (tmp_path / ".scorefleet" / "stack.env").exists()
    finally:
        up.kill_all()


def write_own_model(cwd: Path) -> str:
    """`my_model.py` and `my-models.json` exactly as docs/local-stack.md shows them;
    returns the commands it then runs in another shell."""
    (code,) = docs.blocks(OWN_MODEL_DOC, "python")
    (catalog,) = docs.blocks(OWN_MODEL_DOC, "json")
    (cwd / "my_model.py").write_text(code)
    (cwd / "my-models.json").write_text(catalog)
    block = docs.block_with(OWN_MODEL_DOC, "--catalog my-models.json")
    assert block.startswith(".venv/bin/scorefleet up --catalog my-models.json ")  # as started below
    return docs.another_shell(block)


COMMANDS = {
    "submit": ["submit", str(REPO / "examples" / "iris.csv"), "--wait", "5"],
    "rerun": ["rerun", "s3://scorefleet-local/in/iris.csv", "--wait", "5"],
    "dlq list": ["dlq", "list"],
    "dlq redrive": ["dlq", "redrive", "--all"],
    "config": ["config"],
}


def assert_one_line(got: dict[str, tuple[int, str]], needle: str) -> None:
    for name, (rc, out) in got.items():
        assert rc == 1, (name, out)
        assert "Traceback" not in out and len(out.splitlines()) == 1, (name, out)
        assert out.startswith("Error: ") and needle in out, (name, out)


def test_own_model_one_stack_per_directory_sigterm_and_a_stopped_stack(tmp_path):
    """A user's own model (docs/local-stack.md's) scores a file, with the commands the
    page shows run as written in a fresh shell; a second `up` in the same directory
    refuses, naming the running stack, and leaves it alone; SIGTERM stops the first
    cleanly; then every command answers in one line: after a clean stop, with a
    stack.env a killed stack left behind, and configured for a dead emulator."""
    commands = write_own_model(tmp_path)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    up = BackgroundUp(tmp_path, "--no-flower", "--catalog", "my-models.json")
    try:
        up.wait_up()
        scored = docs.run_in_a_fresh_shell(commands, tmp_path, tmp_path, 120)
        assert scored.returncode == 0, commands + scored.stdout + scored.stderr
        assert "scored in" in scored.stdout and "\n10.20\n" in scored.stdout  # 5.1+3.5+1.4+0.2

        env_file = tmp_path / ".scorefleet" / "stack.env"
        before = env_file.read_text()
        second = subprocess.run(
            [sys.executable, "-m", "workers.cli", "up", "--no-flower"],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert "already running" in second.stderr and f"pid {up.pid}" in second.stderr
        assert "emulator http://127.0.0.1:" in second.stderr
        assert env_file.read_text() == before
        assert "stopped every process" not in second.stdout
        assert results({"dlq": cli(tmp_path, "dlq", "list")})["dlq"] == (
            0,
            "the dead-letter queue is empty",
        )

        assert up.stop(signal.SIGTERM) == 0
        assert "stopped every process" in up.output()
        assert up.alive_children() == []
    finally:
        up.kill_all()
    assert not env_file.exists()
    got = results({name: cli(tmp_path, *args) for name, args in COMMANDS.items()})
    assert_one_line(got, "no local stack is running in .scorefleet/")
    # a stack killed with SIGKILL leaves its stack.env behind, pointing at a dead port
    env_file.write_text(before)
    got = results({name: cli(tmp_path, *args) for name, args in COMMANDS.items()})
    assert_one_line(got, "is not running (it did not stop cleanly")
    # configured by hand (source stack.env) for an emulator that is gone
    configured = clean_env(**stackstate.read_env_file(env_file))
    del COMMANDS["config"]
    got = results({n: cli(tmp_path, *a, env=configured) for n, a in COMMANDS.items()})
    assert_one_line(got, "cannot reach the local stack's emulator at http://127.0.0.1:")
    assert all("scorefleet up" in out for _, out in got.values())


def test_a_worker_that_keeps_dying_stops_the_stack_with_its_error(tmp_path):
    """A worker that dies is started again, as its Deployment would (issue 26); one
    that keeps dying stops the stack, with its last log lines."""
    up = BackgroundUp(tmp_path, "--no-flower")
    try:
        up.wait_up()
        killed = set()
        deadline = time.monotonic() + 90
        while up.shell.poll() is None and time.monotonic() < deadline:
            for worker in up.workers():
                if worker.pid not in killed:
                    worker.kill()
                    killed.add(worker.pid)
            time.sleep(0.2)
        assert up.wait_exit(60) == 1
        out = up.output()
        assert "worker0 exited on signal SIGKILL; starting it again in 1s" in out, out
        assert "scorefleet up: worker0 exited on signal SIGKILL; the end of" in out, out
        assert len(killed) == 4  # started again three times, then given up
        assert "worker0.log" in out and "stopped every process" in out
        assert up.alive_children() == []
    finally:
        up.kill_all()


BROKEN_BRIDGE = """
import sys
import workers.localstack.stack as localstack

def broken(self, *args):
    raise ImportError("cannot import name 'Celery' from 'celery'")

localstack.Bridge._poll_loop = broken
from workers.cli.commands import main
sys.exit(main(["up", "--no-flower"]))
"""


def test_up_is_never_printed_while_a_part_is_dead(tmp_path):
    """The S3 -> Lambda bridge dies at start (as it did with the import race): the
    stack must not say "up", but stop, with the bridge's error on the screen."""
    proc = subprocess.run(
        [sys.executable, "-c", BROKEN_BRIDGE],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is up" not in proc.stdout
    assert "bridge" in proc.stderr and "ImportError: cannot import name 'Celery'" in proc.stderr
    assert "stopped every process" in proc.stdout
