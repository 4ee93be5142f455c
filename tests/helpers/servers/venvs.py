"""Virtualenvs for the third-party model servers the protocol tests run against.

MLServer and KServe pin fastapi, uvicorn, protobuf and a kubernetes client apart
from each other (pip cannot install both in one environment) and apart from what
scorefleet's own environment holds; neither belongs in the worker image. Each gets
its own virtualenv under ``.venv-models/<name>/`` (git-ignored), created from
``tests/helpers/servers/requirements-<name>.txt`` the first time a test needs it and kept
while that file is unchanged. A lock file lets parallel test processes share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ROOT = REPO / ".venv-models"
NAMES = ("mlserver", "kserve")


def python_of(name: str) -> Path:
    return ROOT / name / "bin" / "python"


def ensure(name: str, *, timeout: float = 900) -> Path:
    """The interpreter of virtualenv ``name``, created (or re-created after its
    requirements changed) if need be. Raises RuntimeError with pip's output."""
    requirements = HERE / f"requirements-{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    target = ROOT / name
    stamp = target / ".requirements-sha256"
    ROOT.mkdir(exist_ok=True)
    with (ROOT / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == digest:
            return python_of(name)
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        steps = [
            [sys.executable, "-m", "venv", str(target)],
            [
                str(python_of(name)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
        ]
        for argv in steps:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
            if r.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise RuntimeError(
                    f"could not create the {name} virtualenv ({' '.join(argv[:4])} ...): "
                    f"{(r.stderr or r.stdout)[-3000:]}"
                )
        took = time.monotonic() - started
        (target / ".install-seconds").write_text(f"{took:.0f}\n")
        stamp.write_text(digest + "\n")
        print(f"created .venv-models/{name} in {took:.0f}s", file=sys.stderr)
        return python_of(name)


if __name__ == "__main__":  # python -m tests.helpers.servers.venvs [mlserver] [kserve]
    for venv in sys.argv[1:] or NAMES:
        print(ensure(venv))
