"""The local backend's state directory and the model processes it knows of.

Layout, shared by every worker on the machine::

    STATE_DIR/local/<run id>/             a run's model: record.json, model.log
    STATE_DIR/local/<run id>.<n>/         the run's replica n (n >= 1; replica 0 is the above)
    STATE_DIR/local/_warm/<pool>/<run id>/  a parked model (warm mode, :mod:`.warm`)
    STATE_DIR/local/_expiring-<run id>/   a parked model being stopped
    STATE_DIR/local-homes/<run id>-<hex>/ a model process's private HOME (and TMPDIR)

:class:`Runs` finds a run's directory (only for a run id scorefleet makes), its record
(:mod:`.runrecords`) and its process (only while it is the same process), waits for
the model processes this worker started, and stops and removes a run's model.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import psutil

from scorefleet.errors import Untrusted
from scorefleet.job import run_pipeline
from scorefleet.vouch import check_run_id
from workers.backends.local.processes import stop_tree
from workers.backends.local.runrecords import read_record

log = logging.getLogger("workers.backends.local.backend")

WARM = "_warm"
#: A parked model being stopped (renamed first, so that no launch claims it).
EXPIRING = "_expiring-"
#: Beside the run directories: the model processes' private HOMEs.
HOMES = "local-homes"
#: Between a run id and a replica's number in its directory's name.
REPLICA_SEP = "."


def slot(run_id: str, replica: int = 0) -> str:
    """The directory name of a run's replica: the run id for replica 0 (a run's one
    model, as before replicas), ``<run id>.<n>`` for the others."""
    check_run_id(run_id)
    if isinstance(replica, bool) or not isinstance(replica, int) or replica < 0:
        raise Untrusted(f"{replica!r} is not a replica number")
    return run_id if replica == 0 else f"{run_id}{REPLICA_SEP}{replica}"


def slot_run(name: str) -> tuple[str, int] | None:
    """(run id, replica) of a directory name :func:`slot` makes; None otherwise."""
    run_id, sep, number = name.partition(REPLICA_SEP)
    if run_pipeline(run_id) is None:
        return None
    if not sep:
        return run_id, 0
    if not number.isdigit() or number.startswith("0"):
        return None
    return run_id, int(number)


class Runs:
    """The run directories under ``STATE_DIR/local`` and their model processes."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "local"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # exit codes of reaped children, until a launch reports one (bounded: most
        # are never asked for: models stopped at teardown)
        self._exit_codes: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- records
    def dir(self, run_id: str, replica: int = 0) -> Path:
        """The directory of a run's replica: only for a run id scorefleet makes, and
        only under the root (an absolute or dotted "run id" from a crafted message
        would replace or leave it)."""
        path = self.root / slot(run_id, replica)
        if path.resolve().parent != self.root.resolve():
            raise Untrusted(f"the directory of run {run_id} is not under {self.root}")
        return path

    def record(self, run_id: str, replica: int = 0) -> dict[str, Any] | None:
        return read_record(self.dir(run_id, replica))

    def replicas(self, run_id: str) -> list[int]:
        """The replicas of a run that have a directory here, in order."""
        check_run_id(run_id)
        if not self.root.exists():
            return []
        found = []
        for path in self.root.glob(f"{run_id}*"):
            named = slot_run(path.name)
            if named is not None and named[0] == run_id:
                found.append(named[1])
        return sorted(found)

    def new_home(self, run_id: str) -> Path:
        """A fresh, private HOME for one model process (outside its run directory,
        which moves in warm mode), with its TMPDIR inside."""
        homes = self.root.parent / HOMES
        homes.mkdir(parents=True, exist_ok=True)
        home = homes / f"{run_id}-{secrets.token_hex(4)}"
        home.mkdir(mode=0o700)
        (home / "tmp").mkdir(mode=0o700)
        return home

    def remove_home(self, rec: dict[str, Any] | None) -> None:
        """The model's HOME, by the name in its record (a name only: the record is
        the model's to overwrite, so no path from it is trusted)."""
        name = str((rec or {}).get("home") or "")
        if name and "/" not in name and name not in {".", ".."}:
            shutil.rmtree(self.root.parent / HOMES / name, ignore_errors=True)

    def live(self) -> list[Path]:
        """Directories of the model processes this machine runs now (warm ones too)."""
        runs = [p for p in self.root.iterdir() if not p.name.startswith("_")]
        warm = self.root / WARM
        parked = [p for pool in warm.iterdir() for p in pool.iterdir()] if warm.exists() else []
        return runs + parked

    def busy(self, image: str) -> bool:
        """Is a model of ``image`` scoring a file now?"""
        if not self.root.exists():
            return False
        runs = [p for p in self.root.iterdir() if slot_run(p.name) is not None]
        return any((read_record(p) or {}).get("image") == image for p in runs)

    # --------------------------------------------------------------- processes
    def process(self, rec: dict[str, Any] | None) -> psutil.Process | None:
        """The record's process if it is still the same one and running."""
        if not rec:
            return None
        try:
            p = psutil.Process(int(rec["pid"]))
            if abs(p.create_time() - float(rec["create_time"])) > 1.0:
                return None  # pid reused by something else
            if p.status() == psutil.STATUS_ZOMBIE:
                self.reap_children()
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return None
        return p

    def track(self, popen: subprocess.Popen[bytes]) -> None:
        """A model process this worker started: waited for once it exits."""
        with self._lock:
            self._children[popen.pid] = popen

    def reap_children(self) -> None:
        """Wait for model processes of ours that exited (no zombies), keeping their
        exit codes: another thread's launch may still want to report one."""
        with self._lock:
            for pid, popen in list(self._children.items()):
                if popen.poll() is not None:
                    self._exit_codes[pid] = popen.returncode
                    del self._children[pid]
            while len(self._exit_codes) > 256:
                self._exit_codes.popitem(last=False)

    def exit_code(self, pid: int) -> int | None:
        """The exit status of a model process of ours (negative: killed by that signal)."""
        self.reap_children()
        with self._lock:
            return self._exit_codes.pop(pid, None)

    # ---------------------------------------------------------------- stopping
    def remove(self, run_id: str, replica: int = 0) -> bool:
        """Stop the model of a run's replica and remove its directory; False if it
        had none."""
        run_dir = self.dir(run_id, replica)
        if not run_dir.exists():
            return False
        rec = self.record(run_id, replica)
        proc = self.process(rec)
        if proc is not None:
            stop_tree(proc)
            which = f" (replica {replica})" if replica else ""
            log.info("stopped model process %d of run %s%s", proc.pid, run_id, which)
        self.reap_children()
        self.remove_home(rec)
        shutil.rmtree(run_dir, ignore_errors=True)
        return True

    def stop_doomed(self, doomed: Path, rec: dict[str, Any] | None) -> None:
        """Stop the model of a directory moved out of every pool (:data:`EXPIRING`)."""
        proc = self.process(rec)
        if proc is not None:
            stop_tree(proc)
        self.remove_home(rec)
        shutil.rmtree(doomed, ignore_errors=True)
