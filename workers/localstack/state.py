"""The local stack's state directory (``.scorefleet/`` by default): who owns it,
and the ``stack.env`` file that points shells and CLI commands at the stack.

* ``stack.lock`` is held with ``flock`` by the process running the stack, for its
  whole life; it holds that process's pid, start time and addresses as JSON. A
  second ``scorefleet up`` on the same directory cannot take it and says which
  stack is running instead of starting another one beside it. The kernel drops the
  lock when its holder dies, however it dies, so a stale lock never blocks.
* ``stack.env`` exists only while the stack runs: written once it is provisioned,
  removed when it stops (a killed stack leaves it behind, but then nobody holds
  the lock, and the CLI says the stack is not running).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOCK_NAME = "stack.lock"
ENV_NAME = "stack.env"


class StackRunning(RuntimeError):
    """Another process runs a local stack on this state directory."""

    def __init__(self, state_dir: Path, holder: Mapping[str, Any]) -> None:
        self.state_dir = state_dir
        self.holder = dict(holder)
        super().__init__(
            f"a local stack is already running from {state_dir} ({describe(holder)}); "
            "use that one, stop it first (Ctrl-C in its shell, or kill "
            f"{holder.get('pid', '<pid>')}), or give this one its own --state-dir"
        )


def describe(holder: Mapping[str, Any]) -> str:
    """One line about a running stack, from its lock record."""
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("started"):
        parts.append("started " + time.strftime("%H:%M:%S", time.localtime(holder["started"])))
    if holder.get("endpoint"):
        parts.append(f"emulator {holder['endpoint']}")
    if holder.get("flower"):
        parts.append(f"Flower {holder['flower']}")
    return ", ".join(parts)


class StateLock:
    """The ``flock`` on ``<state dir>/stack.lock`` of the process running the stack."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StackRunning` naming the holder."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackRunning(self.state_dir, _read(self.path)) from None
        self._fd = fd
        self.record(started=time.time())

    def record(self, **info: Any) -> None:
        """Add to what the lock file says about this stack (pid, addresses)."""
        if self._fd is None:
            return
        data = {**_read(self.path), "pid": os.getpid(), **info}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(data).encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # nothing stale for the next reader
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def holder(state_dir: Path) -> dict[str, Any] | None:
    """The record of the process running a stack on ``state_dir``, or None if no
    process holds its lock (no stack, or one that died)."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path) or {"pid": "?"}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------ stack.env
def write_env_file(state_dir: Path, env: Mapping[str, str], bin_dir: Path) -> Path:
    """``stack.env``: ``export`` lines for a shell (``source .scorefleet/stack.env``),
    which also put ``bin_dir`` (this installation's scorefleet, celery and aws) first
    on PATH, so the commands ``scorefleet up`` prints run as shown."""
    path = state_dir / ENV_NAME
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an ``export K=V`` file as written above (PATH, which refers
    to the shell's own, is left out)."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line.startswith("export "):
            continue
        name, _, value = line[len("export ") :].partition("=")
        if name == "PATH":
            continue
        words = shlex.split(value) if value else []
        env[name] = words[0] if words else ""
    return env


def remove_env_file(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / ENV_NAME).unlink()
