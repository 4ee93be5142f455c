"""The ``local`` launch backend: a model "image" is a command run as a process.

The model catalog maps an image name to a command template with a ``{port}``
placeholder (``{python}`` is this interpreter, ``{host}`` the loopback
address)::

    {"scorefleet/iris:1": {"command": "{python} serve.py --host {host} --port {port}"}}

Each run gets its own process on a free loopback port, in its own session (so the
whole process group can be stopped), with a minimal environment (no AWS_* or
SCOREFLEET_* variable: the worker's credentials are not passed on) and a private,
fresh HOME and TMPDIR of its own (so ``~/.aws`` is not the worker's). The worker
itself is not dumpable (workers.process.hardening), so the model cannot read its
environment through ``/proc``. This is no security boundary: the model runs as the
worker's user (docs/security.md). A record per run under ``STATE_DIR/local/<run id>/``
(pid, start time, port, log file) lets any worker on the machine tear it down and
the reaper find what a killed worker left behind. The model runs only once its
record is written: it starts held (``processes.held_process``), and a worker killed
before it released the model leaves a process that exits without running it.

Warm mode (``SCOREFLEET_WARM_IDLE_SECONDS`` > 0): a healthy model is parked under
``STATE_DIR/local/_warm/<image>/`` whenever no file needs it: by the launch step
as soon as it is ready (:meth:`LocalBackend.park`: no model waits idle, held for a
file whose score is still in the queue), and again right after its file is scored.
The score step claims a parked model of its image by renaming its directory
(atomic: two claimants cannot get the same model) and skips the start; a launch
that finds one parked starts nothing. Any worker on the machine may claim any
parked model. Parked models idle longer than the limit are stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from scorefleet.errors import AtCapacity, ModelError, ModelUnavailable, Untrusted
from scorefleet.job import Job, run_pipeline
from scorefleet.settings import ModelSpec
from scorefleet.vouch import check_run_id
from workers.backends.base import Endpoint
from workers.backends.local.processes import (
    HOST,
    KILLED_FROM_OUTSIDE,
    describe_exit,
    find_command,
    free_port,
    held_process,
    model_environment,
    stop_tree,
    tail,
)
from workers.backends.local.runrecords import read_record as _read_record
from workers.backends.local.runrecords import spec_of as _spec_of
from workers.backends.local.runrecords import write_record as _write_record
from workers.scoring.protocols import probe, protocol_for

log = logging.getLogger(__name__)

WARM = "_warm"
#: How long a launch waits for a model of its image that is scoring to be parked,
#: when no model can start (SCOREFLEET_MAX_LIVE_MODELS), before it waits its turn in
#: the queue instead.
WARM_WAIT_SECONDS = 2.0
#: A parked model being stopped (renamed first, so that no launch claims it).
EXPIRING = "_expiring-"
#: Beside the run directories: the model processes' private HOMEs.
HOMES = "local-homes"


class LocalBackend:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        launch_timeout: float,
        log_lines: int = 40,
        *,
        warm_idle: float = 0.0,
        warm_max: int = 4,
        max_live: int = 0,
    ) -> None:
        self.root = state_dir / "local"
        self.launch_timeout = launch_timeout
        self.log_lines = log_lines
        self.warm_idle = warm_idle
        self.warm_max = warm_max
        self.max_live = max_live
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # exit codes of reaped children, until a launch reports one (bounded: most
        # are never asked for: models stopped at teardown)
        self._exit_codes: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity_lock = threading.Lock()

    # ----------------------------------------------------------------- records
    def _new_home(self, run_id: str) -> Path:
        """A fresh, private HOME for one model process (outside its run directory,
        which moves in warm mode), with its TMPDIR inside."""
        homes = self.root.parent / HOMES
        homes.mkdir(parents=True, exist_ok=True)
        home = homes / f"{run_id}-{secrets.token_hex(4)}"
        home.mkdir(mode=0o700)
        (home / "tmp").mkdir(mode=0o700)
        return home

    def _remove_home(self, rec: dict[str, Any] | None) -> None:
        """The model's HOME, by the name in its record (a name only: the record is
        the model's to overwrite, so no path from it is trusted)."""
        name = str((rec or {}).get("home") or "")
        if name and "/" not in name and name not in {".", ".."}:
            shutil.rmtree(self.root.parent / HOMES / name, ignore_errors=True)

    def _dir(self, run_id: str) -> Path:
        """The run's directory: only for a run id scorefleet makes, and only under the
        root (an absolute or dotted "run id" from a crafted message would replace or
        leave it)."""
        path = self.root / check_run_id(run_id)
        if path.resolve().parent != self.root.resolve():
            raise Untrusted(f"the directory of run {run_id} is not under {self.root}")
        return path

    def _record(self, run_id: str) -> dict[str, Any] | None:
        return _read_record(self._dir(run_id))

    def _process(self, rec: dict[str, Any] | None) -> psutil.Process | None:
        """The record's process if it is still the same one and running."""
        if not rec:
            return None
        try:
            p = psutil.Process(int(rec["pid"]))
            if abs(p.create_time() - float(rec["create_time"])) > 1.0:
                return None  # pid reused by something else
            if p.status() == psutil.STATUS_ZOMBIE:
                self._reap_children()
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return None
        return p

    def _reap_children(self) -> None:
        """Wait for model processes of ours that exited (no zombies), keeping their
        exit codes: another thread's launch may still want to report one."""
        with self._lock:
            for pid, popen in list(self._children.items()):
                if popen.poll() is not None:
                    self._exit_codes[pid] = popen.returncode
                    del self._children[pid]
            while len(self._exit_codes) > 256:
                self._exit_codes.popitem(last=False)

    # ------------------------------------------------------------------ launch
    def launch(self, job: Job, spec: ModelSpec) -> Endpoint:
        self._reap_children()
        earlier = self._record(job.run_id)
        running = self._process(earlier)
        if earlier and running:
            log.info("adopting the model process %s of this run", earlier["pid"])
            return self._wait_ready(job, earlier, running)
        if earlier:
            self._remove(job.run_id)  # a dead one from an earlier attempt
        if not spec.command:
            raise ModelError(
                f"no model command for image {spec.image!r} on this machine: the model "
                "catalog (SCOREFLEET_MODEL_CATALOG; `scorefleet up --catalog FILE` on the local "
                f'stack) has no entry for it. Add one, e.g. {{"{spec.image}": {{"command": '
                '"<command that serves the model> --port {port}"}}, or tag the file with an '
                "image the catalog lists"
            )
        if self.warm_idle > 0:
            self._expire_warm()
            warm = self._claim_warm_or_wait(job, spec)
            if warm is not None:
                return warm
        run_dir = self._dir(job.run_id)
        with self._capacity():  # count and reserve a slot in one go
            if not self._make_room(spec.image):
                # a model of this image parked since the look above: take it
                warm = self._claim_warm(job, spec)
                if warm is not None:
                    return warm
                raise self._full()
            run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = shlex.split(spec.command.format(port=port, python=sys.executable, host=HOST))
        home = self._new_home(job.run_id)
        env = model_environment(os.environ, spec.extra.get("env") or {}, home)
        cwd = spec.extra.get("cwd") or None
        rec = {
            "port": port,
            "image": spec.image,
            # readiness is the model's protocol's: kept for the warm pool's checks
            "protocol": spec.protocol,
            "protocol_options": dict(spec.protocol_options),
            "started": time.time(),
            "source": str(job.source),
            "launch_timeout": float(spec.extra.get("launch_timeout", self.launch_timeout)),
            "home": home.name,
        }
        _write_record(run_dir, rec)  # a worker killed from here on leaves its HOME found
        try:
            argv[0] = find_command(argv[0], env, cwd)
            with (
                (run_dir / "model.log").open("ab") as out,
                held_process(argv, env=env, cwd=cwd, log=out) as popen,
            ):
                with self._lock:
                    self._children[popen.pid] = popen
                proc = psutil.Process(popen.pid)
                rec.update(pid=popen.pid, create_time=proc.create_time())
                # the model runs only once its record (pid, start time) is written
                _write_record(run_dir, rec)
        except OSError as exc:
            self._remove_home(rec)
            raise ModelError(f"could not start the model command {argv[0]!r}: {exc}") from exc
        log.info("started model %s as pid %d on port %d", spec.image, popen.pid, port)
        return self._wait_ready(job, rec, proc)

    def _wait_ready(self, job: Job, rec: dict[str, Any], proc: psutil.Process) -> Endpoint:
        url = f"http://{HOST}:{rec['port']}"
        spec = _spec_of(rec)
        readiness = protocol_for(spec.protocol).describe_readiness(spec)
        limit = float(rec.get("launch_timeout", self.launch_timeout))
        deadline = time.monotonic() + limit
        delay = 0.02
        while True:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                rc = self._exit_code(int(rec["pid"]))
                message = f"the model exited{describe_exit(rc)} before it answered {readiness}"
                logs = self.logs(job, self.log_lines)
                if rc is not None and -rc in KILLED_FROM_OUTSIDE:
                    # killed by someone else (an operator, a node going away): a new
                    # launch may well work; retried, and an .error after the last try
                    raise ModelUnavailable(message, model_logs=logs)
                raise ModelError(message, model_logs=logs)
            if probe(url, spec, timeout=1.0):
                return Endpoint(url=url, handle={"pid": rec["pid"], "port": rec["port"]})
            if time.monotonic() > deadline:
                raise ModelError(
                    f"the model did not answer {readiness} within {limit:g}s",
                    model_logs=self.logs(job, self.log_lines),
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def _exit_code(self, pid: int) -> int | None:
        """The exit status of a model process of ours (negative: killed by that signal)."""
        self._reap_children()
        with self._lock:
            return self._exit_codes.pop(pid, None)

    # --------------------------------------------------------------- queries
    def endpoint(self, job: Job) -> str | None:
        """From the run's own record (the port this backend picked), if its process runs."""
        rec = self._record(job.run_id)
        if rec is None or self._process(rec) is None:
            return None
        return f"http://{HOST}:{int(rec['port'])}"

    def is_alive(self, job: Job) -> bool:
        return self._process(self._record(job.run_id)) is not None

    def logs(self, job: Job, lines: int) -> str:
        return tail(self._dir(job.run_id) / "model.log", lines)

    def _live(self) -> list[Path]:
        """Directories of the model processes this machine runs now (warm ones too)."""
        runs = [p for p in self.root.iterdir() if not p.name.startswith("_")]
        warm = self.root / WARM
        parked = [p for pool in warm.iterdir() for p in pool.iterdir()] if warm.exists() else []
        return runs + parked

    @contextlib.contextmanager
    def _capacity(self) -> Iterator[None]:
        """Serialise capacity decisions between the threads of this worker and the
        other workers on the machine (an flock on the state directory)."""
        if not self.max_live:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with self._capacity_lock, (self.root.parent / "local-capacity.lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def has_room(self, spec: ModelSpec) -> bool:
        """Could a launch of this image go ahead now (a free slot, or a warm model of
        it)? A cheap look, no lock: the launch itself decides for sure."""
        if not self.max_live or not self.root.exists():
            return True
        if self.has_parked(spec):
            return True
        live = self._live()
        return len(live) < self.max_live or (
            self.warm_idle > 0 and any(p.parent.parent.name == WARM for p in live)
        )

    def _make_room(self, image: str) -> bool:
        """Enforce MAX_LIVE_MODELS: True if a model of ``image`` may start, after
        stopping the idle warm model of another image parked the longest if need be.
        False in warm mode when only models of ``image`` itself are parked (the
        caller takes one of those); otherwise, with no room, AtCapacity."""
        if not self.max_live or not self.root.exists():
            return True
        if len(self._live()) < self.max_live:
            return True
        if self._expire_warm(idle=-1, oldest_only=True, keep_image=image):
            return True
        if self._parked(image):
            return False
        raise self._full()

    def _full(self) -> AtCapacity:
        return AtCapacity(
            f"{self.max_live} model processes are running (SCOREFLEET_MAX_LIVE_MODELS)"
        )

    # -------------------------------------------------------------------- warm
    def _pool(self, image: str) -> Path:
        return self.root / WARM / hashlib.sha256(image.encode()).hexdigest()[:16]

    def _claim_warm(self, job: Job, spec: ModelSpec) -> Endpoint | None:
        """Take over a parked model of this image, if a healthy one is there."""
        pool = self._pool(spec.image)
        try:
            parked = sorted(pool.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        except FileNotFoundError:
            return None
        target = self._dir(job.run_id)
        for candidate in parked:
            try:
                candidate.rename(target)  # atomic: one launch wins each parked model
            except OSError:
                continue
            rec = self._record(job.run_id)
            proc = self._process(rec)
            url = f"http://{HOST}:{rec['port']}" if rec else ""
            if rec is None or proc is None or not probe(url, _spec_of(rec)):
                self._remove(job.run_id)
                continue
            rec.update(started=time.time(), source=str(job.source), serves=rec.get("serves", 1) + 1)
            rec.pop("parked_at", None)
            _write_record(target, rec)
            with (target / "model.log").open("a") as f:
                f.write(f"---- scorefleet: this model now scores {job.source} ----\n")
            log.info(
                "reusing the warm model process %d (file %d it scores)", proc.pid, rec["serves"]
            )
            return Endpoint(url=url, handle={"pid": rec["pid"], "port": rec["port"]}, warm=True)
        return None

    def _claim_warm_or_wait(self, job: Job, spec: ModelSpec) -> Endpoint | None:
        """A parked model of this image; with none, no room to start one, and one of
        this image scoring (parked once its file is scored), wait up to
        :data:`WARM_WAIT_SECONDS` for it: a launch that lost it to another after its
        claim, cheaper here than through the queue (issue 17)."""
        deadline = time.monotonic() + WARM_WAIT_SECONDS
        while True:
            # looked at before the claim: a model parked since is in the pool for it
            # (else _make_room could stop the model just parked and start another)
            busy = self._busy(spec.image)
            warm = self._claim_warm(job, spec)
            if warm is not None:
                return warm
            if self._room() or time.monotonic() > deadline or not busy:
                return None
            time.sleep(0.02)

    def _room(self) -> bool:
        return not self.max_live or not self.root.exists() or len(self._live()) < self.max_live

    def _busy(self, image: str) -> bool:
        """Is a model of ``image`` scoring a file now?"""
        if not self.root.exists():
            return False
        runs = [p for p in self.root.iterdir() if run_pipeline(p.name) is not None]
        return any((_read_record(p) or {}).get("image") == image for p in runs)

    def has_parked(self, spec: ModelSpec) -> bool:
        """Warm mode: a model of this image is parked (any worker on this machine
        may claim it; whether it still answers is checked when it is claimed)."""
        return self._parked(spec.image)

    def _parked(self, image: str) -> bool:
        return self.warm_idle > 0 and any(self._pool(image).glob("*"))

    def park(self, job: Job) -> bool:
        """Warm mode: the run's ready model into the pool now (the launch step's
        hand-over; the score step claims a model of the image from the pool)."""
        if self.warm_idle <= 0:
            return False
        return self._park(job)

    def _park(self, job: Job) -> bool:
        """Keep this run's healthy model for the next file of its image."""
        rec = self._record(job.run_id)
        if (
            rec is None
            or self._process(rec) is None
            or not probe(f"http://{HOST}:{rec['port']}", _spec_of(rec))
        ):
            return False
        pool = self._pool(str(rec["image"]))
        pool.mkdir(parents=True, exist_ok=True)
        if sum(1 for _ in pool.iterdir()) >= self.warm_max:
            return False
        rec["parked_at"] = time.time()
        _write_record(self._dir(job.run_id), rec)
        try:
            self._dir(job.run_id).rename(pool / job.run_id)
        except OSError:
            return False
        log.info("parked model process %s warm for %gs", rec["pid"], self.warm_idle)
        return True

    def _expire_warm(
        self,
        idle: float | None = None,
        *,
        oldest_only: bool = False,
        keep_image: str | None = None,
    ) -> list[str]:
        """Stop parked models idle for longer than ``idle`` (default: the warm limit);
        with ``oldest_only``, just the one idle the longest; never one of
        ``keep_image`` (the image a launch is making room for)."""
        limit = self.warm_idle if idle is None else idle
        removed: list[str] = []
        warm = self.root / WARM
        if not warm.exists():
            return removed
        now = time.time()
        kept = self._pool(keep_image).name if keep_image is not None else None
        candidates = sorted(
            (
                (_read_record(p), p)
                for pool in warm.iterdir()
                if pool.name != kept
                for p in pool.iterdir()
            ),
            key=lambda rp: float((rp[0] or {}).get("parked_at", 0)),
        )
        for rec, parked in candidates:
            if oldest_only and removed:
                break
            if rec is not None and now - float(rec.get("parked_at", 0)) <= limit:
                continue
            doomed = self.root / f"{EXPIRING}{parked.name}"
            try:
                parked.rename(doomed)  # fails if a launch claimed it first
            except OSError:
                continue
            self._stop_doomed(doomed, rec)
            removed.append(parked.name)
        return removed

    def _stop_doomed(self, doomed: Path, rec: dict[str, Any] | None) -> None:
        proc = self._process(rec)
        if proc is not None:
            stop_tree(proc)
        self._remove_home(rec)
        shutil.rmtree(doomed, ignore_errors=True)

    # -------------------------------------------------------------- teardown
    def release(self, job: Job) -> bool:
        """Warm mode: park the run's model for the next file of its image now (or
        stop it if it cannot be kept), rather than at teardown."""
        if self.warm_idle <= 0:
            return False
        self.teardown(job)
        return True

    def teardown(self, job: Job) -> bool:
        """Stop the run's model, or park it (warm mode, after a success)."""
        if self.warm_idle > 0 and job.failure is None and not job.skipped and self._park(job):
            self._expire_warm()
            return True
        return self._remove(job.run_id)

    def _remove(self, run_id: str) -> bool:
        run_dir = self._dir(run_id)
        if not run_dir.exists():
            return False
        rec = self._record(run_id)
        proc = self._process(rec)
        if proc is not None:
            stop_tree(proc)
            log.info("stopped model process %d of run %s", proc.pid, run_id)
        self._reap_children()
        self._remove_home(rec)
        shutil.rmtree(run_dir, ignore_errors=True)
        return True

    def reap(self, max_age: float, is_finished: Callable[[str], bool]) -> list[str]:
        removed: list[str] = []
        if not self.root.exists():
            return removed
        # parked models past the warm limit (all of them if warm mode was switched off)
        removed += self._expire_warm(idle=None if self.warm_idle > 0 else 0)
        now = time.time()
        for run_dir in self.root.iterdir():
            if run_dir.name.startswith(EXPIRING):
                # a worker killed while it stopped this parked model: stop it here
                self._stop_doomed(run_dir, _read_record(run_dir))
                removed.append(run_dir.name.removeprefix(EXPIRING))
                continue
            if run_dir.name.startswith("_") or run_pipeline(run_dir.name) is None:
                continue  # the warm pool (expired above), or nothing this backend made
            rec = self._record(run_dir.name)
            started = float(rec.get("started", 0)) if rec else run_dir.stat().st_mtime
            if (now - started > max_age or is_finished(run_dir.name)) and self._remove(
                run_dir.name
            ):
                removed.append(run_dir.name)
        return removed

    def stop_all(self) -> list[str]:
        """Stop every model process this state directory knows (local stack shutdown)."""
        return self._expire_warm(idle=-1) + self.reap(0, lambda _run: True)
