"""The local backend's reaper (``tasks.reap``, and the local stack's shutdown): what
dead workers, finished runs and idle parked models left on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable

from workers.backends.local.runrecords import read_record
from workers.backends.local.runs import EXPIRING, Runs, slot_run
from workers.backends.local.warm import WarmPool


def reap(
    runs: Runs, warm: WarmPool, max_age: float, is_finished: Callable[[str], bool]
) -> list[str]:
    """Stop the models of runs older than ``max_age`` seconds or finished
    (``is_finished(run_id)``), parked ones idle past the warm limit, and any a worker
    killed while it stopped it left behind; the run ids removed."""
    removed: list[str] = []
    if not runs.root.exists():
        return removed
    # parked models past the warm limit (all of them if warm mode was switched off)
    removed += warm.expire(idle=None if warm.enabled else 0)
    now = time.time()
    for run_dir in runs.root.iterdir():
        if run_dir.name.startswith(EXPIRING):
            # a worker killed while it stopped this parked model: stop it here
            runs.stop_doomed(run_dir, read_record(run_dir))
            removed.append(run_dir.name.removeprefix(EXPIRING))
            continue
        named = slot_run(run_dir.name)
        if run_dir.name.startswith("_") or named is None:
            continue  # the warm pool (expired above), or nothing this backend made
        run_id, replica = named  # each replica of a run has its own directory
        rec = runs.record(run_id, replica)
        started = float(rec.get("started", 0)) if rec else run_dir.stat().st_mtime
        if (now - started > max_age or is_finished(run_id)) and runs.remove(run_id, replica):
            removed.append(run_dir.name)
    return removed
