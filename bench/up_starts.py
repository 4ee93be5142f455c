"""How many `make up` starts out of N reach a scored demo file, for two commits.

For each commit: one clone with `make up`'s installation done once (not counted),
then N starts of `make up` in it, alternating between the commits; a start counts
when the demo file is scored within the timeout. Each start is stopped with
SIGTERM and its `.scorefleet/` removed before the next.

    python -m bench.up_starts [--before f460db9] [--after HEAD] [-n 20] [--repo /work/main]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine
from bench.first_score import REPO, clone, make_up_env, resolve, run_make_up


def prepare(repo: Path, commit: str, base: Path) -> Path:
    """A clone of ``commit`` with what `make up` installs already installed."""
    workdir = base / commit
    clone(repo, commit, workdir)
    env = make_up_env(base / "pip-cache")
    stamp = "up"  # the target's own prerequisites: the venv and its stamp
    out = subprocess.run(
        ["make", "-n", stamp], cwd=workdir, capture_output=True, text=True, check=True
    ).stdout
    install = [line for line in out.splitlines() if "scorefleet up" not in line]
    with (base / f"install-{commit}.log").open("w") as log:
        subprocess.run(
            ["bash", "-ec", "\n".join(install)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return workdir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="repository to clone")
    ap.add_argument("--before", default="f460db9", help="baseline commit (main before issue 12)")
    ap.add_argument("--after", default="HEAD", help="commit measured against it")
    ap.add_argument("-n", type=int, default=20, help="starts per commit")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per start")
    args = ap.parse_args()
    commits = {"before": resolve(args.before, args.repo), "after": resolve(args.after, args.repo)}
    print(f"machine: {machine()}")
    base = Path(tempfile.mkdtemp(prefix="sf-starts-"))
    logs = Path(tempfile.mkdtemp(prefix="sf-starts-logs-"))
    try:
        dirs = {arm: prepare(args.repo, c, base) for arm, c in commits.items()}
        good = {arm: 0 for arm in commits}
        times: dict[str, list[float]] = {arm: [] for arm in commits}
        for i in range(args.n):
            for arm, workdir in dirs.items():
                shutil.rmtree(workdir / ".scorefleet", ignore_errors=True)
                log = logs / f"{arm}-{i}.log"
                env = make_up_env(base / "pip-cache")
                seconds, why = run_make_up(workdir, env, args.timeout, log)
                if seconds is not None:
                    good[arm] += 1
                    times[arm].append(seconds)
                shown = f"scored after {seconds:.1f} s" if seconds is not None else f"FAILED: {why}"
                print(f"  start {i + 1:2} {arm:6} {commits[arm]}: {shown} ({log})", flush=True)
                time.sleep(1)
        for arm, commit in commits.items():
            ts = sorted(times[arm])
            spread = f"; {ts[0]:.1f}-{ts[-1]:.1f} s to the scored file" if ts else ""
            reached = f"{good[arm]}/{args.n} starts reached a scored demo file"
            print(f"{arm:6} {commit}: {reached}{spread}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
