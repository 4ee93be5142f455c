"""Model processes of the local backend: their environment, their log's tail, how
they are stopped and how their exit is described."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import psutil

from scorefleet.settings.catalog import MODEL_AWS_KEYS

HOST = "127.0.0.1"
#: Environment variables a model process inherits (nothing secret; HOME and TMPDIR
#: are its own).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_BYTES = 64 * 1024


#: how long a port handed to a model stays reserved in this process: the model binds
#: it some time after it is chosen, and the kernel may hand the same free port out
#: again meanwhile (seen: twice in 0.4 s, to two launches of one worker)
PORT_RESERVED_SECONDS = 120.0
_reserved: dict[int, float] = {}
_reserved_lock = threading.Lock()


def _any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed to another
    model in the last :data:`PORT_RESERVED_SECONDS`. (Another process may still take
    it before the model binds it: :func:`listens_on` tells whose a listener is.)"""
    with _reserved_lock:
        now = time.monotonic()
        for port, at in list(_reserved.items()):
            if now - at > PORT_RESERVED_SECONDS:
                del _reserved[port]
        for _ in range(64):
            port = _any_free_port()
            if port not in _reserved:
                _reserved[port] = now
                return port
    raise OSError("no free port that was not handed to a model already")


def listens_on(proc: psutil.Process, port: int) -> bool:
    """Whether ``proc`` or one of its descendants holds the listening TCP socket of
    ``port``: an answer on the port is then the model's, not another process's that
    took the port first."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            return True
    return False


def tail(path: Path, lines: int) -> str:
    """The log's last ``lines`` lines; when it is longer, its first few lines come
    first (a model's start-up lines often say why it failed later)."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            start = f.read(min(size, LOG_TAIL_BYTES)).decode("utf-8", errors="replace")
            if size > LOG_TAIL_BYTES:
                f.seek(size - LOG_TAIL_BYTES)
                end = f.read().decode("utf-8", errors="replace").splitlines()[1:]  # whole lines
            else:
                end = start.splitlines()
    except FileNotFoundError:
        return ""
    if size <= LOG_TAIL_BYTES and len(end) <= lines:
        return "\n".join(end)
    first = start.splitlines()[: min(5, lines // 4)]
    return "\n".join([*first, "[...]", *end[-(lines - len(first)) :]])


def model_environment(
    environ: Mapping[str, str],
    catalog_env: Mapping[str, Any],
    home: Path,
    model_aws: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What a model process gets: a few harmless variables of the worker's, its own
    HOME and TMPDIR, and its catalog entry's env (settings refuse AWS_* and
    SCOREFLEET_* names there). ``model_aws``: the models' own AWS endpoint, region
    and credentials (SCOREFLEET_LOCAL_MODEL_AWS), for an entry that says
    ``local_aws``: as the AWS_* variables boto3 and the AWS CLI read, never the
    worker's (settings refuse the worker's key there)."""
    env = {k: environ[k] for k in PASSED_ENV if k in environ}
    env.update({"HOME": str(home), "TMPDIR": str(home / "tmp")})
    env.update({str(k): str(v) for k, v in catalog_env.items()})
    if model_aws:
        env.update({variable: model_aws[key] for key, variable in MODEL_AWS_KEYS.items()})
        env["AWS_DEFAULT_REGION"] = model_aws["region"]
    return env


def find_command(name: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The program a model command names, looked up as ``exec`` would (on the model's
    PATH, or relative to its working directory); FileNotFoundError if there is none."""
    if "/" in name:
        path = Path(cwd or ".") / name
        if path.is_file() and os.access(path, os.X_OK):
            return name
        raise FileNotFoundError(f"no executable file {str(path)!r}")
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(f"{name!r} is not on the model's PATH")
    return found


#: The model's first program: it waits for the worker's "go" on stdin, then becomes
#: the model command (same pid, same start time). At end of file (the worker died
#: before it said go) it exits without running anything.
_GATE = 'IFS= read -r go && [ "$go" = go ] && exec "$@" </dev/null'


@contextlib.contextmanager
def held_process(
    argv: list[str], *, env: Mapping[str, str], cwd: str | None, log: IO[bytes]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in a session of its own, held before it runs.

    The ``with`` block gets the process (its pid is the model's, before and after it
    runs) to record it; leaving the block releases it. An exception in the block,
    or the death of this process (the pipe's write end closes with it, kill -9
    included), leaves it unreleased: it exits without running ``argv``. So a model
    never runs without the record that lets teardown and the reaper find it."""
    read_end, write_end = os.pipe()  # both close-on-exec: no other child inherits them
    try:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", _GATE, "scorefleet-model", *argv],
            stdin=read_end,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            cwd=cwd,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    try:
        yield popen
        with contextlib.suppress(BrokenPipeError):  # it died held: the launch says so
            os.write(write_end, b"go\n")
    finally:
        os.close(write_end)


#: Deaths by these signals come from outside the model (kill, a stopping machine).
KILLED_FROM_OUTSIDE = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return ""
    return f" with code {rc}" if rc >= 0 else f" on signal {signal.Signals(-rc).name}"


def stop_tree(proc: psutil.Process, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM a process and all its descendants, SIGKILL what is left after ``grace``."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    alive = _wait_gone(procs, grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    _wait_gone(alive, grace)


def _running(p: psutil.Process) -> bool:
    """Running and not a zombie (a zombie has exited; only its parent can reap it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        _, still = psutil.wait_procs(alive, timeout=0.05)  # also reaps our own children
        alive = [p for p in still if _running(p)]
    return alive
