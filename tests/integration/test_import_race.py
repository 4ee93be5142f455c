"""Item 1 of issue 12: `make up` died at random with ``ImportError: cannot import
name 'Celery' from 'celery'``.

celery (and kombu) replace their own module object in ``sys.modules`` at the end
of their import. A thread that imports celery while another thread's import of it
is still running gets the original, half-built module object, waits for the other
import to finish, and then uses that stale object, which has no ``Celery``. In
``scorefleet up`` the bridge thread imported celery (through the Lambda handler)
while the main thread imported ``workers.monitoring.monitor`` (``wait_flower_ready``).

These tests make the race certain instead of rare: a trace function holds the
import of celery inside ``celery.local.recreate_module`` (just before the module
object is replaced) for a second, in whichever thread runs it. Each runs in a
fresh interpreter, where celery has not been imported yet.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO
from workers.localstack.stack import emulator_client

HOLD_CELERY_IMPORT = """
import os, sys, threading, time
entered = threading.Event()
def hold(frame, event, arg):
    code = frame.f_code
    if event == "call" and code.co_name == "recreate_module" and code.co_filename.endswith(
        os.path.join("celery", "local.py")
    ):
        entered.set()
        time.sleep(1.0)
    return None
sys.settrace(hold)
threading.settrace(hold)
errors = []
threading.excepthook = lambda args: errors.append(f"{args.thread.name}: {args.exc_value!r}")
"""


def run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HOLD_CELERY_IMPORT + textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
    )


def test_the_race_itself_is_real(tmp_path):
    """Without the fix's precaution, a second thread's `from celery import Celery`
    during the first import fails: what the fix must prevent (and proof that the
    hold above reproduces it)."""
    proc = run(
        """
        t = threading.Thread(target=lambda: __import__("celery"), name="first")
        t.start()
        entered.wait(10)
        try:
            from celery import Celery
            print("imported", Celery)
        except ImportError as exc:
            print("ImportError:", exc)
        t.join()
        """,
        tmp_path,
    )
    assert "ImportError: cannot import name 'Celery' from 'celery'" in proc.stdout, proc


def test_scorefleet_up_imports_celery_before_its_bridge_threads_start(moto_endpoint, tmp_path):
    """What `scorefleet up` does, in its order: import the local stack, start the
    S3 -> Lambda bridge (whose pollers call the Lambda handler, which uses celery),
    then, in the main thread, import workers.monitoring.monitor (Flower's readiness check). No
    ImportError in any thread, and every bridge poller polls."""
    queue_url = emulator_client("sqs", moto_endpoint).create_queue(QueueName="race-events")[
        "QueueUrl"
    ]
    proc = run(
        f"""
        from pathlib import Path
        from workers.localstack.stack import Bridge, stack_env   # what the CLI imports first
        env = stack_env({moto_endpoint!r}, Path({str(tmp_path)!r}))
        bridge = Bridge({moto_endpoint!r}, {queue_url!r}, env)
        bridge.start()
        entered.wait(3)   # a bridge thread importing celery now would hold it here
        try:
            from workers.monitoring.monitor import namespace   # what wait_flower_ready imports
        except ImportError as exc:
            errors.append(f"main: {{exc!r}}")
        deadline = time.monotonic() + 60
        while not getattr(bridge, "ready", False) and time.monotonic() < deadline:
            if getattr(bridge, "failure", None) or not bridge.is_alive():
                break
            time.sleep(0.1)
        print("ready:", getattr(bridge, "ready", None))
        print("failure:", getattr(bridge, "failure", None))
        print("errors:", errors)
        bridge.stopping.set()
        bridge.join(10)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "errors: []" in proc.stdout, proc.stdout + proc.stderr
    assert "failure: None" in proc.stdout and "ready: True" in proc.stdout, proc.stdout
