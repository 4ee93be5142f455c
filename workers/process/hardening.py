"""Process hardening of every process that loads the worker app (workers, beat,
Flower, ``celery call``): not dumpable.

On Linux a process of the same user can read ``/proc/<pid>/environ`` (the worker's
AWS credentials, broker URL and settings), ``/proc/<pid>/mem`` and attach a debugger,
as long as the process is *dumpable*. ``prctl(PR_SET_DUMPABLE, 0)`` turns that off:
``/proc/<pid>/*`` then belongs to root, so a model process started by the local
backend (same user) can no longer read the worker's environment or memory, and no
core dump is written. It does not stop what the user can do anyway: signal the
worker, read the files the user can read (docs/security.md). A profiler such as
py-spy then needs root or CAP_SYS_PTRACE to attach.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def make_non_dumpable() -> bool:
    """True if this process is now non-dumpable (Linux only; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("could not make the process non-dumpable (prctl): %s", exc)
        return False
    return True


def is_dumpable() -> bool | None:
    """This process's dumpable flag (None where prctl is not available)."""
    if not sys.platform.startswith("linux"):
        return None
    return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
