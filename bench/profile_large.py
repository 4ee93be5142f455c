"""Where a worker spends its time on benchmark 1 (a 1,000,000-row file): py-spy.

    python -m bench.profile_large [--rows 1000000] [--top 15] [--out DIR]

Runs the file through the local stack with py-spy sampling the worker process (all
threads, idle ones left out) and prints the functions with the most samples of their
own (leaf frames) and the pipeline's wall time. The raw folded stacks are kept in
``DIR/worker.folded`` for a flame graph (e.g. ``py-spy`` ``--format flamegraph``, or
any folded-stack viewer). Needs the bench extra (``pip install -e '.[bench]'``) and
permission to ptrace the worker (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Client, local_stack, machine
from bench.large_file import write_rows

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]+?):\d+\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def leaf_costs(folded: Path) -> tuple[collections.Counter[str], int]:
    """Samples per leaf frame ("function (file)"), and the total."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.rsplit(";", 1)[-1]
        m = _FRAME.match(leaf)
        own[f"{m['func']} ({Path(m['file']).name})" if m else leaf] += n
    return own, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rate", type=int, default=200, help="samples per second")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    spy_bin = py_spy()
    out = args.out or Path(tempfile.mkdtemp(prefix="scorefleet-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    src = out / f"large-{args.rows}.csv"
    if not src.exists():
        write_rows(src, args.rows)
    folded = out / "worker.folded"
    with local_stack(extra_env={"SCOREFLEET_MAX_PAYLOAD_MB": "1"}) as stack:
        client = Client(stack)
        worker = next(p for p in stack.procs if p.name == "worker0").popen.pid
        client.drop("warmup.csv", Path("examples/iris.csv"))
        client.wait("warmup.csv", timeout=120)
        spy = subprocess.Popen(
            [
                *(spy_bin, "record", "-p", str(worker), "-o", str(folded), "-f", "raw"),
                *("-r", str(args.rate), "--nonblocking", "--threads"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(1.0)  # py-spy attached
            started = client.drop(src.name, src)
            _, finished, _ = client.wait(src.name, timeout=600)
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=10)
    if not folded.exists():
        err = spy.stderr.read().decode() if spy.stderr else ""
        raise SystemExit(f"py-spy wrote no profile: {err.strip()}")
    own, total = leaf_costs(folded)
    print(machine())
    print(f"{args.rows:,} rows through the local stack in {finished - started:.2f} s")
    print(f"worker samples (all threads, idle excluded): {total:,}; top {args.top} by own time:")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / max(total, 1):5.1f}%  {name}")
    print(f"folded stacks: {folded}")


if __name__ == "__main__":
    main()
