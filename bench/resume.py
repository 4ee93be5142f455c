"""Issue 26: a 1,000,000-row file whose worker is killed (``kill -9``) half-way, with
this checkout's workers (the file goes on from its last committed part) and with the
workers of a baseline commit (today's code: the file starts over), in the same run
and on the same local stack harness, which starts a dead worker again a second later
as a Deployment would. Also what committing costs in S3 requests, per output part.

    python -m bench.resume [--rows 1000000] [--base main] [--kill-at 0.5]

For each tree: one undisturbed run (its time T), then one run killed once about
``kill-at`` of the rows are written (the model has scored them and the 4 mini-batches
in flight behind them). Printed: rows the model scored more than once (the
'hash' test model logs every row it scores), seconds lost (killed run - T; the
local stack's 30 s visibility timeout, which SQS waits before it hands a dead
worker's message on, is in both), and the S3 requests of the undisturbed run by
kind, from the emulator's request log: run-record reads and writes, part uploads,
side objects. The baseline tree is checked out with ``git worktree add`` into a
temporary directory (removed after).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO, Client, machine
from bench.large_file import write_rows
from scorefleet.storage.multipart import PART_SIZE
from tests.helpers import FAKEMODEL
from workers.localstack.restarts import LOCAL_VISIBILITY_TIMEOUT, Restarts
from workers.localstack.stack import LocalStack

IMAGE = "test/hash:1"
VISIBILITY = LOCAL_VISIBILITY_TIMEOUT


@dataclass
class Run:
    seconds: float = 0.0
    rows_scored: int = 0
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    parts: int = 0
    output_bytes: int = 0


@dataclass
class Tree:
    name: str
    path: Path
    undisturbed: Run = field(default_factory=Run)
    killed: Run = field(default_factory=Run)
    log: str = ""


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="scorefleet-base-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), rev],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)],
            cwd=REPO,
            check=False,
            capture_output=True,
        )


@contextlib.contextmanager
def supervised(tree: Path, scored: Path) -> Iterator[LocalStack]:
    """A local stack whose workers run ``tree``'s code, started again when killed."""
    state = Path(tempfile.mkdtemp(prefix="scorefleet-resume-"))
    command = f"{{python}} {FAKEMODEL} --port {{port}} --mode hash --log {scored}"
    stack = LocalStack(
        state,
        workers=1,
        concurrency=2,
        flower=False,
        beat=False,
        catalog={IMAGE: {"command": command}},
        extra_env={"SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/", "PYTHONPATH": str(tree)},
        restarts=Restarts(limit=10),
    )
    stack.start()
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(0.2):
            with contextlib.suppress(Exception):
                stack.check()

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    try:
        yield stack
    finally:
        stop.set()
        thread.join(5)
        stack.stop()


#: S3 requests in the emulator's log, by kind
KINDS = {
    "run record GET": re.compile(r'"GET /[^ ]*/runs/sf-[0-9a-f]+\.json '),
    "run record PUT": re.compile(r'"PUT /[^ ]*/runs/sf-[0-9a-f]+\.json '),
    "part upload": re.compile(r'"PUT /[^ ]*staging/[^ ]*partNumber='),
    "side object PUT": re.compile(r'"PUT /[^ ]*staging/[^ ]*\.(side|held)-\d+\.part '),
}


def count_requests(log: Path, start: int) -> tuple[collections.Counter[str], int]:
    text = log.read_text(errors="replace")[start:]
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        for kind, pattern in KINDS.items():
            if pattern.search(line):
                counts[kind] += 1
    return counts, len(text)


def rows_logged(scored: Path, start: int) -> tuple[int, int]:
    lines = scored.read_text().splitlines() if scored.exists() else []
    return sum(int(line.split()[1]) for line in lines[start:]), len(lines)


def measure(tree: Tree, src: Path, rows: int, kill_at: float) -> None:
    scored = Path(tempfile.mkdtemp(prefix="scorefleet-scored-")) / "scored.log"
    with supervised(tree.path, scored) as stack:
        client = Client(stack)
        moto_log = stack.state_dir / "logs" / "moto.log"
        # undisturbed
        _, lines = rows_logged(scored, 0)
        logged = len(moto_log.read_text(errors="replace"))
        t0 = client.drop("undisturbed.csv", src, IMAGE)
        suffix, t1, head = client.wait("undisturbed.csv")
        assert suffix == ".scoreout", suffix
        tree.undisturbed.seconds = t1 - t0
        tree.undisturbed.output_bytes = int(head["ContentLength"])
        tree.undisturbed.rows_scored, lines = rows_logged(scored, lines)
        time.sleep(1)
        tree.undisturbed.requests, _ = count_requests(moto_log, logged)
        tree.undisturbed.parts = tree.undisturbed.requests["part upload"]
        # killed once about kill_at of the rows are written: the model has scored them
        # and the mini-batches in flight behind them (4 of 1 MB, the defaults)
        in_flight = 4 * 1_000_000 * rows / src.stat().st_size
        t0 = client.drop("killed.csv", src, IMAGE)
        while rows_logged(scored, lines)[0] < kill_at * rows + in_flight:
            time.sleep(0.01)
        worker = next(p for p in stack.procs if p.name == "worker0")
        os.killpg(worker.popen.pid, signal.SIGKILL)  # the worker we started, as a pod dies
        suffix, t1, _ = client.wait("killed.csv")
        assert suffix == ".scoreout", suffix
        tree.killed.seconds = t1 - t0
        tree.killed.rows_scored, _ = rows_logged(scored, lines)
        tree.log = (stack.state_dir / "logs" / "worker0.log").read_text(errors="replace")


def revision(rev: str) -> str:
    """``rev`` as a short commit id."""
    git = ["git", "rev-parse", "--short", rev]
    return subprocess.run(git, cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--base", default="main", help="the baseline commit (today's code)")
    ap.add_argument("--kill-at", type=float, default=0.5)
    args = ap.parse_args()
    src = Path(tempfile.mkdtemp(prefix="scorefleet-resume-in-")) / "large.csv"
    write_rows(src, args.rows)
    # the stacks' processes run `python -m celery` from this directory, whose first
    # sys.path entry is the directory itself: out of any checkout, so that each
    # tree's PYTHONPATH decides which code its workers run
    os.chdir(src.parent)
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with worktree(base_rev) as base_path:
        trees = [Tree("this checkout", REPO), Tree(f"baseline {base_rev}", base_path)]
        for tree in trees:
            measure(tree, src, args.rows, args.kill_at)
    print(f"machine: {machine()}")
    print(
        f"input: {args.rows:,} rows, {src.stat().st_size / 1e6:.1f} MB; the worker killed "
        f"(kill -9) once about {args.kill_at:.0%} of the rows were written; {VISIBILITY} s "
        "visibility timeout"
    )
    head, base = trees
    for t in trees:
        ran = "taking the file up" in t.log
        assert ran == (t is head), f"{t.name}: its workers did not run its code"
        u, k = t.undisturbed, t.killed
        lost = k.seconds - u.seconds
        print(
            f"  {t.name:22} undisturbed {u.seconds:6.2f} s | killed {k.seconds:6.2f} s: "
            f"{lost:6.2f} s lost ({lost - VISIBILITY:+.2f} s beyond the {VISIBILITY} s SQS "
            f"wait), {k.rows_scored - args.rows:,} rows scored twice"
        )
    lost = [t.killed.seconds - t.undisturbed.seconds for t in trees]
    twice = [t.killed.rows_scored - args.rows for t in trees]
    print(
        f"  ratio this/baseline: seconds lost {lost[0] / lost[1]:.2f}x, "
        f"rows scored twice {twice[0] / max(1, twice[1]):.2f}x"
    )
    parts = max(1, head.undisturbed.parts)
    print(f"  S3 requests of the undisturbed run ({parts} parts of output):")
    for kind in KINDS:
        h, b = head.undisturbed.requests[kind], base.undisturbed.requests[kind]
        print(f"    {kind:18} {h:4d} vs {b:4d} baseline: {(h - b) / parts:+.2f} per part")
    ratio = head.undisturbed.seconds / base.undisturbed.seconds
    print(
        f"  undisturbed time this/baseline: {head.undisturbed.seconds:.2f} / "
        f"{base.undisturbed.seconds:.2f} s = {ratio:.3f}x (one run each; "
        "bench.large_file --against gives the overhead over several)"
    )
    per_part = args.rows * PART_SIZE / max(1, head.undisturbed.output_bytes)
    print(f"  one part of output holds about {per_part:,.0f} rows")


if __name__ == "__main__":
    main()
