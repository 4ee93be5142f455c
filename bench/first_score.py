"""Fresh clone -> first scored file with the README's first command (`make up`),
for two commits of this repository, alternating, median of N each.

Each run: `git clone` into a new directory, check out the commit, `make up` with
an empty pip cache of its own (the same state for both commits: a fresh machine's)
and a fresh venv; the clock stops when `make up` prints the demo file's
"scored in", after which the stack is stopped with SIGTERM (both versions handle
it) and the clone removed.

    python -m bench.first_score [--before f460db9] [--after HEAD] [--runs 3] [--repo /work/main]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, median

REPO = Path(__file__).resolve().parents[1]


def resolve(ref: str, repo: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def clone(repo: Path, commit: str, into: Path) -> None:
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "-q", commit], check=True)


def make_up_env(pip_cache: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCOREFLEET_", "AWS_", "FLOWER_", "VIRTUAL_ENV"))
    }
    env["PIP_CACHE_DIR"] = str(pip_cache)
    return env


def run_make_up(
    workdir: Path, env: dict[str, str], timeout: float, log: Path
) -> tuple[float | None, str]:
    """Start `make up` in ``workdir``; seconds until the demo file is scored (None if
    it failed or timed out) and why; then stop it with SIGTERM (its whole group)."""
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "up"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    result: tuple[float | None, str] = (None, f"no scored file in {timeout:g}s")
    try:
        while time.monotonic() - started < timeout:
            text = log.read_text(errors="replace")
            if "scored in" in text:
                result = (time.monotonic() - started, "scored")
                break
            if "FAILED in" in text or "no outcome after" in text:
                result = (None, "the demo file failed")
                break
            if proc.poll() is not None:
                result = (None, f"make up exited with {proc.returncode}")
                break
            time.sleep(0.2)
    finally:
        stop_group(proc)
    return result


def stop_group(proc: subprocess.Popen[bytes], grace: float = 90) -> None:
    """SIGTERM the process group we started (make and `scorefleet up`), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def first_score(repo: Path, commit: str, timeout: float, keep: Path) -> tuple[float | None, str]:
    base = Path(tempfile.mkdtemp(prefix=f"sf-first-{commit}-"))
    try:
        started = time.monotonic()
        clone(repo, commit, base / "scorefleet")
        cloned = time.monotonic() - started
        seconds, why = run_make_up(
            base / "scorefleet", make_up_env(base / "pip-cache"), timeout, keep
        )
        return (None if seconds is None else cloned + seconds), why
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="repository to clone")
    ap.add_argument("--before", default="f460db9", help="baseline commit (main before issue 12)")
    ap.add_argument("--after", default="HEAD", help="commit measured against it")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    commits = {"before": resolve(args.before, args.repo), "after": resolve(args.after, args.repo)}
    print(f"machine: {machine()}")
    print(f"fresh clone -> first scored file with `make up`; {args.runs} run(s) each, alternating")
    logs = Path(tempfile.mkdtemp(prefix="sf-first-logs-"))
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.runs):
        for arm, commit in commits.items():
            log = logs / f"{arm}-{i}.log"
            seconds, why = first_score(args.repo, commit, args.timeout, log)
            shown = f"{seconds:.1f} s" if seconds is not None else f"FAILED ({why}; see {log})"
            print(f"  run {i + 1} {arm:6} {commit}: {shown}", flush=True)
            if seconds is not None:
                times[arm].append(seconds)
    for arm, commit in commits.items():
        got = times[arm]
        shown = f"median {median(got):.1f} s of {len(got)}" if got else "no run scored"
        print(f"{arm:6} {commit}: {shown}  ({', '.join(f'{t:.1f}' for t in got)})")
    if times["before"] and times["after"]:
        print(f"ratio after/before: {median(times['after']) / median(times['before']):.2f}x")
    sys.exit(0 if all(len(t) == args.runs for t in times.values()) else 1)


if __name__ == "__main__":
    main()
