"""The embedded local stack behind ``scorefleet up``: the whole system on one
machine, with the production code paths.

* moto in server mode on 127.0.0.1 stands in for S3, SQS and SNS;
* a bucket with ``in/``, ``out/`` and ``scorefleet-state/`` prefixes, the Celery
  queue with a dead-letter queue, and an S3 notification into an events queue;
* a bridge that long-polls that queue and calls the real Lambda handler with the
  SQS event Lambda's event source mapping would send (honouring batchItemFailures);
* a Celery worker on the ``local`` backend, and beat (the reaper, the sweeper);
* Flower (docs/flower.md), events and remote control over the emulator's SNS;
  without FLOWER_BASIC_AUTH it runs unauthenticated on 127.0.0.1 only.

:meth:`LocalStack.start` returns once every part works, and :meth:`LocalStack.check`
raises :class:`PartFailed` (with the part's last log lines) as soon as one has died:
a stack never reports "up" with a dead part. One stack per state directory (its
lock, :mod:`workers.localstack.state`); ``stack.env`` exists only while the stack runs.
The emulator side (moto, provisioning, the bridge) is :mod:`workers.localstack.aws`.

Everything it starts is stopped again by PID on exit; logs go to the state dir.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from workers.localstack.aws import (
    BUCKET,
    CREDENTIALS,
    DLQ,
    EVENTS_QUEUE,
    MAX_RECEIVE_COUNT,
    MODEL_CREDENTIALS,
    QUEUE,
    Bridge,
    emulator_client,
    provision,
    start_moto,
    wait_http,
)
from workers.localstack.models import EXAMPLES_PREFIX, IRIS_IMAGE, REPO, iris_catalog, local_models
from workers.localstack.restarts import LOCAL_VISIBILITY_TIMEOUT, Restarts
from workers.localstack.state import StateLock, remove_env_file, write_env_file

log = logging.getLogger("scorefleet.local")

__all__ = [
    "BUCKET",
    "CREDENTIALS",
    "DLQ",
    "EVENTS_QUEUE",
    "EXAMPLES_PREFIX",
    "IRIS_IMAGE",
    "MAX_RECEIVE_COUNT",
    "QUEUE",
    "REPO",
    "Bridge",
    "LocalStack",
    "PartFailed",
    "emulator_client",
    "iris_catalog",
    "local_models",
    "provision",
    "start_moto",
    "wait_http",
]

#: glibc malloc settings for workers: buffers of several MB are mmapped and
#: returned to the OS when freed (instead of the dynamic threshold letting them
#: pile up in per-thread arenas), so RSS stays flat whatever the file size.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_ARENA_MAX": "2"}


#: seconds the local stack's sweep leaves a new file to its notification
LOCAL_SWEEP_GRACE = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(
    endpoint: str,
    state_dir: Path,
    *,
    catalog: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for every process of the local stack (and for users' shells)."""
    port = endpoint.rsplit(":", 1)[1]
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "SCOREFLEET_BROKER_URL": f"sqs://testing:testing@127.0.0.1:{port}",
        "SCOREFLEET_BROKER_TLS": "false",
        "SCOREFLEET_QUEUE": QUEUE,
        "SCOREFLEET_INPUT_URI": f"s3://{BUCKET}/in/",
        "SCOREFLEET_OUTPUT_URI": f"s3://{BUCKET}/out/",
        "SCOREFLEET_STATE_URI": f"s3://{BUCKET}/scorefleet-state/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": EXAMPLES_PREFIX,
        "SCOREFLEET_DEFAULT_MODEL_IMAGE": IRIS_IMAGE,
        "SCOREFLEET_DEFAULT_K8S_CLUSTER": "local",
        "SCOREFLEET_DEFAULT_K8S_NAMESPACE": "scoring",
        "SCOREFLEET_LAUNCH_BACKEND": "local",
        "SCOREFLEET_STATE_DIR": str(state_dir),
        "SCOREFLEET_VISIBILITY_TIMEOUT": str(LOCAL_VISIBILITY_TIMEOUT),
        # a laptop's notifications arrive within a second or two: `scorefleet sweep` finds
        # a lost one after seconds, not the production default's quarter of an hour
        "SCOREFLEET_SWEEP_GRACE_SECONDS": str(LOCAL_SWEEP_GRACE),
        "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog if catalog is not None else iris_catalog()),
        # Flower listens on 127.0.0.1 here; anywhere else it needs FLOWER_BASIC_AUTH
        "SCOREFLEET_FLOWER_UNAUTHENTICATED": "true",
        # a worker gets a metrics port of its own (LocalStack.start_worker); the other
        # processes, and a shell that sources stack.env, serve none
        "SCOREFLEET_METRICS_PORT": "0",
        # what a model whose catalog entry says local_aws gets: the emulator, and a
        # credential of the models' own, never the worker's (docs/models.md)
        "SCOREFLEET_LOCAL_MODEL_AWS": json.dumps(
            {"endpoint_url": endpoint, "region": CREDENTIALS["AWS_REGION"], **MODEL_CREDENTIALS}
        ),
        **MALLOC_ENV,
    }
    env.update(extra or {})
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0  # where this process's lines start in its log


class PartFailed(RuntimeError):
    """A part of the local stack died or did not come up; says which and why."""

    def __init__(self, part: str, detail: str) -> None:
        super().__init__(f"{part} {detail}")
        self.part = part
        self.detail = detail


#: Last lines of a dead part's log shown with its error.
ERROR_LOG_LINES = 15


@dataclass
class LocalStack:
    """Start/stop the local stack; usable as a context manager (tests do)."""

    state_dir: Path
    workers: int = 1
    concurrency: int = 4
    flower: bool = True
    beat: bool = True
    moto_port: int = 0
    flower_port: int = 0
    catalog: Mapping[str, Any] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    bridge: Bridge | None = None
    #: for tests: the share of S3 notifications the bridge loses (Bridge.drop)
    bridge_drop: float = 0.0
    lock: StateLock | None = None
    #: a worker that dies is started again (workers.localstack.restarts)
    restarts: Restarts | None = field(default_factory=Restarts)
    #: what :meth:`check` did that the user should hear of (``scorefleet up`` prints it)
    notices: list[str] = field(default_factory=list)
    _started: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}" if self.flower else ""

    def start(self, timeout: float = 120) -> LocalStack:
        """Start every part and wait until each one works (:meth:`wait_ready`); if
        any part fails, stop what was started and raise (:class:`PartFailed`, or
        :class:`~workers.localstack.state.StackRunning` if the state directory is taken)."""
        self.lock = StateLock(self.state_dir)
        self.lock.acquire()  # before anything else: nothing of another stack is touched
        self._started = True
        try:
            self._start()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.lock.record(endpoint=self.endpoint, flower=self.flower_url)
        return self

    def _start(self) -> None:
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        # a new stack's emulator is empty: Flower must not show an earlier stack's tasks
        for old in self.state_dir.glob(f"{FLOWER_DB}*"):
            old.unlink()
        self.moto_port = self.moto_port or free_port()
        moto = start_moto(self.moto_port, self.state_dir / "logs" / "moto.log")
        self.procs.append(Proc("moto", moto, self.state_dir / "logs" / "moto.log"))
        self.urls = provision(
            self.endpoint,
            int(self.extra_env.get("SCOREFLEET_VISIBILITY_TIMEOUT", LOCAL_VISIBILITY_TIMEOUT)),
        )
        # one machine: at most one model (with its replicas) per file slot, so a burst
        # of files is scored a few at a time instead of starting every model at once
        replicas = [e.get("replicas") for e in (self.catalog or {}).values()]
        most = max([r for r in replicas if isinstance(r, int) and r > 1] or [1])
        limit = {"SCOREFLEET_MAX_LIVE_MODELS": str(self.workers * self.concurrency * most)}
        self.env = stack_env(
            self.endpoint,
            self.state_dir,
            catalog=self.catalog,
            extra={**limit, **self.extra_env},
        )
        self.write_env_file()
        for i in range(self.workers):
            self.start_worker(i)
        if self.beat:
            self.start_beat()
        if self.flower:
            self.start_flower()
        self.bridge = Bridge(
            self.endpoint,
            self.urls["events_url"],
            self.env,
            log_path=self.state_dir / "logs" / "bridge.log",
            drop=self.bridge_drop,
        )
        self.bridge.start()

    def start_worker(self, i: int) -> Proc:
        args = [
            "worker",
            "-P",
            "threads",
            "-c",
            str(self.concurrency),
            "-n",
            f"local{i}@%h",
            "-l",
            "INFO",
            "-E",
            # Flower marks a worker offline after two missed heartbeats (20 s);
            # each one is an SNS publish (Celery's default is every 2 s)
            "--heartbeat-interval",
            "10",
        ]
        # each worker serves its metrics on a port of its own, on loopback
        port = free_port()
        self.urls[f"metrics{i}"] = f"http://127.0.0.1:{port}/metrics"
        env = {"SCOREFLEET_METRICS_PORT": str(port), "SCOREFLEET_METRICS_ADDRESS": "127.0.0.1"}
        return self._spawn(f"worker{i}", args, env)

    def start_beat(self) -> Proc:
        """``celery beat`` (the reaper and the monitor-queue sweeper), a process of its
        own as in the Helm chart, so that it is supervised like every other part."""
        schedule = self.state_dir / "celerybeat-schedule"
        return self._spawn("beat", ["beat", "-l", "INFO", "-s", str(schedule)])

    def start_flower(self) -> Proc:
        """``celery -A workers.app flower`` on 127.0.0.1; its state is kept across
        restarts of Flower within this stack (and dropped when the stack starts)."""
        self.flower_port = self.flower_port or free_port()
        return self._spawn(
            "flower",
            [
                "flower",
                f"--port={self.flower_port}",
                "--address=127.0.0.1",
                "--persistent=True",
                f"--db={self.state_dir / FLOWER_DB}",
                "--state_save_interval=60000",
            ],
        )

    def restart_worker(self, i: int = 0, timeout: float = 60) -> Proc:
        """Stop worker ``i`` (warm shutdown) and start it again; wait until ready."""
        for p in [p for p in self.procs if p.name == f"worker{i}"]:
            stop_process(p.popen, grace=30)
            self.procs.remove(p)
        proc = self.start_worker(i)
        self._wait_for(proc.name, lambda: self._logged(proc, READY_LINE[proc.name[:6]]), timeout)
        return proc

    def stop_flower(self) -> None:
        for p in [p for p in self.procs if p.name == "flower"]:
            stop_process(p.popen, grace=10)
            self.procs.remove(p)

    # ---------------------------------------------------------------- health
    def wait_ready(self, timeout: float = 120) -> None:
        """Until every part works: workers and beat say so in their logs, Flower
        serves HTTP and has subscribed to events, each bridge poller has polled
        SQS once. Raises :class:`PartFailed` as soon as a part dies."""
        pending: dict[str, Any] = {}
        for p in self.procs:
            if p.name in ("moto",):
                continue  # start_moto waited for its HTTP API
            if p.name == "flower":
                pending["flower"] = self._flower_ready
            else:
                pending[p.name] = functools.partial(self._logged, p, READY_LINE[p.name[:6]])
        if self.bridge is not None:
            pending["bridge"] = lambda: self.bridge is not None and self.bridge.ready
        self._wait_for(", ".join(pending), lambda: _drain(pending), timeout)

    def wait_worker_ready(self, timeout: float = 60) -> None:
        self.wait_ready(timeout)

    def wait_flower_ready(self, timeout: float = 60) -> None:
        """Until Flower serves HTTP and its event queue is subscribed (events sent
        before that never reach it)."""
        self._wait_for("flower", self._flower_ready, timeout)

    def check(self) -> None:
        """Raise :class:`PartFailed` if a part of the stack has died (a worker that
        dies is started again, unless it keeps dying: :attr:`restarts`)."""
        for p in list(self.procs):
            rc = p.popen.poll()
            if rc is None:
                continue
            pause = None
            if p.name.startswith("worker") and self.restarts is not None:
                pause = self.restarts.died(p.name, rc, time.monotonic())
            if pause is None:
                lines = _log_tail(p.log_path, p.log_offset, ERROR_LOG_LINES)
                raise PartFailed(
                    p.name,
                    f"exited{_exit_text(rc)}; the end of {p.log_path}:\n{lines}",
                )
            self.procs.remove(p)
            self.notices.append(
                f"{p.name} exited{_exit_text(rc)}; starting it again in {pause:g}s (its "
                f"file goes on from its last committed part; see {p.log_path})"
            )
        for name in self.restarts.ready(time.monotonic()) if self.restarts else []:
            self.start_worker(int(name.removeprefix("worker")))
        if self.bridge is not None:
            if self.bridge.failure:
                raise PartFailed("the S3 -> Lambda bridge", self.bridge.failure)
            if not self.bridge.is_alive() and not self.bridge.stopping.is_set():
                raise PartFailed("the S3 -> Lambda bridge", "stopped")

    def _wait_for(self, what: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if ready():
                return
            if time.monotonic() > deadline:
                raise PartFailed(what, f"not ready after {timeout:g}s; see {self.state_dir}/logs")
            time.sleep(0.1)

    def _logged(self, proc: Proc, needle: bytes) -> bool:
        with proc.log_path.open("rb") as f:
            f.seek(proc.log_offset)
            return needle in f.read()

    def _flower_ready(self) -> bool:
        from workers.monitoring.monitor import namespace

        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback URL we built
                f"{self.flower_url}/healthcheck", timeout=1
            ):
                pass
        except OSError:
            return False
        sns = emulator_client("sns", self.endpoint)
        ns = namespace(QUEUE)
        topic = f"arn:aws:sns:{CREDENTIALS['AWS_REGION']}:123456789012:{ns}-events"
        try:
            subs = sns.list_subscriptions_by_topic(TopicArn=topic).get("Subscriptions", [])
        except sns.exceptions.NotFoundException:
            return False
        return any(f":{ns}-ev-" in s.get("Endpoint", "") for s in subs)

    def _spawn(
        self, name: str, celery_args: list[str], env: Mapping[str, str] | None = None
    ) -> Proc:
        path = self.state_dir / "logs" / f"{name}.log"
        with path.open("ab") as out:
            offset = out.tell()
            popen = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", *celery_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,
            )
        proc = Proc(name, popen, path, offset)
        self.procs.append(proc)
        return proc

    def write_env_file(self) -> Path:
        return write_env_file(self.state_dir, self.env, Path(sys.executable).parent)

    def stop(self) -> None:
        """Stop everything this stack started (nothing if it never started: the
        state directory may be another stack's)."""
        if not self._started:
            return
        if self.bridge is not None:
            self.bridge.close()
        # workers first (warm shutdown finishes running steps), moto last
        for p in sorted(self.procs, key=lambda p: p.name == "moto"):
            stop_process(p.popen, grace=10 if p.name in ("flower", "beat") else 30)
        self.procs.clear()
        from workers.backends.local.backend import LocalBackend

        LocalBackend(self.state_dir, 1).stop_all()
        remove_env_file(self.state_dir)
        if self.lock is not None:
            self.lock.release()
        self._started = False

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Flower's state file in the state directory (Flower's --db).
FLOWER_DB = "flower-state"
#: The log line that says a process is ready, by the start of its part's name.
READY_LINE = {"worker": b" ready.", "beat": b"beat: Starting..."}


def _drain(pending: dict[str, Any]) -> bool:
    """Drop the parts that are ready now; True when none is left."""
    for name, ready in list(pending.items()):
        if ready():
            del pending[name]
    return not pending


def _log_tail(path: Path, offset: int, lines: int) -> str:
    """The last ``lines`` lines a process wrote to its log (from ``offset`` on)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _exit_text(rc: int) -> str:
    if rc < 0:
        return f" on signal {signal.Signals(-rc).name}"
    return f" with code {rc}"


def stop_process(popen: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """Stop a process we started: SIGTERM (a worker finishes its running steps),
    SIGKILL after ``grace``; then whatever children it left behind."""
    if popen.poll() is not None:
        return
    try:
        kids = psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=5)
    from workers.backends.local.processes import stop_tree

    for kid in kids:
        if kid.is_running():
            stop_tree(kid, grace=5)
