"""A new user's first hour, replayed: a fresh clone, the README followed literally.

    .venv/bin/python -m bench.readme_walk [--commit HEAD] [--repo .] [--shared-pip-cache]

In a new directory: `git clone`, `make up` (a fresh venv; a pip cache of its own
unless --shared-pip-cache), and, once it has scored its demo file, each command of
the README's "Try it" block, as written, in a fresh shell (nothing on PATH but the
system's; `source .scorefleet/stack.env` first, as the README says), plus the
failure the README suggests trying. Then Ctrl-C (SIGINT) to `make up`, and every
command again, in a shell still pointed at the stopped stack. It prints the time to
the first scored file, what `make up` printed while it installed, and for every
command its exit status, seconds, line count and first lines, beside the README's
line about it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import machine
from bench.first_score import clone, make_up_env, resolve, stop_group

REPO = Path(__file__).resolve().parents[1]
FRESH = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def readme_steps(readme: str) -> list[tuple[str, str]]:
    """(what the README says of it, the command) for each command of its "Try it"
    block, then the failure its prose suggests."""
    block = re.search(r"```sh\n(source \.scorefleet/stack\.env\n.*?)```", readme, re.S)
    assert block, "README.md has no block starting with source .scorefleet/stack.env"
    steps: list[tuple[str, str]] = []
    said: list[str] = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        if line.startswith("#"):
            said.append(line.lstrip("# "))
        elif line.strip():
            steps.append((" ".join(said), " ".join(line.split())))
            said = []
    prose = " ".join(readme.split())
    tried = re.search(r"\(try `(scorefleet submit [^`]+)`", prose)
    if tried:
        steps.append(("the failure the README suggests trying", tried.group(1)))
    return steps[1:]  # the first is `source`, which each shell below does


def run(command: str, cwd: Path, env: dict[str, str], source: bool) -> dict[str, object]:
    script = f"source .scorefleet/stack.env\n{command}" if source else command
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return {"rc": proc.returncode, "seconds": time.monotonic() - t0, "lines": out}


def show(said: str, command: str, got: dict[str, object], first: int) -> None:
    lines = list(got["lines"])  # type: ignore[call-overload]
    print(f"\n$ {command}")
    if said:
        print(f"  README: {said}")
    print(f"  exit {got['rc']}, {got['seconds']:.1f} s, {len(lines)} lines")
    for line in lines[:first]:
        print(f"  | {line[:160]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--shared-pip-cache", action="store_true")
    args = ap.parse_args()
    commit = resolve(args.commit, args.repo)
    base = Path(tempfile.mkdtemp(prefix=f"sf-walk-{commit}-"))
    work = base / "scorefleet"
    print(f"machine: {machine()}\ncommit {commit}, cloned into {work}")
    clone(args.repo, commit, work)
    env = make_up_env(base / "pip-cache")
    if args.shared_pip_cache:
        env.pop("PIP_CACHE_DIR")
    log = base / "make-up.log"
    started = time.monotonic()
    with log.open("w") as out:
        up = subprocess.Popen(
            ["make", "up"],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        first_line_at = None
        while time.monotonic() - started < args.timeout:
            text = log.read_text(errors="replace")
            if first_line_at is None and text.strip():
                first_line_at = time.monotonic() - started
            if "scored in" in text or up.poll() is not None:
                break
            time.sleep(0.2)
        scored_at = time.monotonic() - started
        text = log.read_text(errors="replace")
        print(
            f"\nmake up: first line after {first_line_at or 0:.1f} s; the demo file "
            f"{'scored' if 'scored in' in text else 'NOT scored'} after {scored_at:.1f} s "
            f"(clone excluded); {text.count('  collecting ')} packages named as collected"
        )
        print("  | " + "\n  | ".join(text.splitlines()[:3]))
        time.sleep(2)  # the demo's result printed, the steps after it
        stack_env = (work / ".scorefleet" / "stack.env").read_text()
        home = {**FRESH, "HOME": str(base)}
        for said, command in readme_steps((work / "README.md").read_text()):
            show(said, command, run(command, work, home, source=True), 4)
        # Ctrl-C, as the README says; then the same shell, still pointed at the stack
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=120)
        tail = log.read_text(errors="replace").strip().splitlines()[-2:]
        print(f"\nCtrl-C: make up exited {up.returncode}: " + " / ".join(tail))
        saved = base / "stack.env.sourced"  # what the shell sourced while the stack ran
        saved.write_text(stack_env)
        show("a new shell", "source .scorefleet/stack.env", run("true", work, home, source=True), 2)
        print("\nagainst the stopped stack (the shell that sourced stack.env):")
        for _said, command in readme_steps((work / "README.md").read_text()):
            got = run(f"source {saved}\n{command}", work, home, source=False)
            show("", command, got, 2)
    finally:
        stop_group(up)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
