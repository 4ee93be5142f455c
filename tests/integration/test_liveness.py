"""The worker liveness probe (workers/process/liveness.py): no broker request per probe."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import base_env
from workers.localstack.stack import emulator_client, stop_process
from workers.process import liveness


class FakeChannel:
    def __init__(self) -> None:
        self.hub = object()
        self.calls = 0

    def _loop1(self, queue, messages_fetched=None):
        self.calls += 1
        return messages_fetched


def test_monitor_touches_while_the_poll_cycle_moves(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(liveness.time, "monotonic", lambda: clock[0])
    mon = liveness.Monitor(tmp_path / "alive", stale_after=90)
    ch = FakeChannel()
    assert mon.watch(ch) and mon.watching_polls
    assert mon.tick() and (tmp_path / "alive").exists()
    clock[0] += 60
    assert ch._loop1("q", 3) == 3 and ch.calls == 1  # the wrapper calls through
    clock[0] += 60
    assert mon.tick(), "a cycle 60 s ago is fresh"
    clock[0] += 31
    assert not mon.tick(), "no cycle for 91 s: a stuck receive"
    mon.unwatch()
    assert "_loop1" not in ch.__dict__, "the channel gets its own method back"


def test_monitor_without_a_poll_cycle_only_proves_the_loop(tmp_path):
    mon = liveness.Monitor(tmp_path / "alive")
    assert not mon.watch(None) and not mon.watching_polls
    ch = FakeChannel()
    ch.hub = None  # no event loop: no async poll cycle to watch
    assert not mon.watch(ch)
    assert mon.tick()


def test_probe_reads_the_age_of_the_file(tmp_path):
    path = tmp_path / liveness.FILENAME
    ok, msg = liveness.check(path, 120)
    assert not ok and "has not started" in msg
    path.touch()
    assert liveness.check(path, 120)[0]
    old = time.time() - 300
    os.utime(path, (old, old))
    ok, msg = liveness.check(path, 120)
    assert not ok and "stuck" in msg
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "workers.process.liveness", "--max-age", "120"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "stuck" in proc.stderr
    path.touch()
    proc = subprocess.run(
        [sys.executable, "-m", "workers.process.liveness"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0


def test_the_probe_imports_no_celery():
    """The probe is a fresh interpreter every 30 s: standard library only."""
    code = "import sys, runpy; sys.argv = ['x', '--max-age', '1']\ntry:\n" + (
        "    runpy.run_module('workers.process.liveness', run_name='__main__')\n"
        "except SystemExit:\n    pass\nprint('celery' in sys.modules, 'kombu' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_kombu_still_has_the_poll_cycle_the_step_watches():
    """Fails on a kombu upgrade that renames the hook; the step would then only prove
    that the event loop turns (and says so in the worker log)."""
    from kombu.transport.SQS import Channel

    assert callable(getattr(Channel, "_loop1", None))
    assert "self._loop1" in inspect.getsource(Channel._schedule_queue)


@pytest.mark.slow
def test_a_real_worker_touches_the_file_and_a_frozen_one_fails_the_probe(
    moto_endpoint, bucket, tmp_path
):
    queue = f"lv-{bucket[-8:]}"
    emulator_client("sqs", moto_endpoint).create_queue(QueueName=queue)
    env = {
        **os.environ,
        **base_env(moto_endpoint, bucket, SCOREFLEET_QUEUE=queue, SCOREFLEET_EVENTS="false"),
        "TMPDIR": str(tmp_path),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-P", "threads",
             "-c", "2", "-I", "workers.process.liveness", "-l", "INFO"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    alive = tmp_path / liveness.FILENAME
    probe = [sys.executable, "-m", "workers.process.liveness", "--max-age", "15"]
    try:
        deadline = time.monotonic() + 60
        while not alive.exists():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        first = alive.stat().st_mtime
        time.sleep(liveness.TICK + 2)
        assert alive.stat().st_mtime > first, "touched again one tick later"
        assert subprocess.run(probe, env=env, check=False).returncode == 0
        text = log.read_text()
        assert "no SQS poll cycle" not in text, "the step hooks the real SQS channel"
        worker.send_signal(signal.SIGSTOP)  # a wedged worker: nothing moves
        try:
            time.sleep(17)
            failed = subprocess.run(probe, env=env, capture_output=True, text=True, check=False)
            assert failed.returncode == 1 and "stuck" in failed.stderr
        finally:
            worker.send_signal(signal.SIGCONT)
    finally:
        stop_process(worker, grace=20)


def test_alive_file_follows_tmpdir(tmp_path, monkeypatch):
    monkeypatch.setattr(liveness.tempfile, "gettempdir", lambda: str(tmp_path))
    assert liveness.alive_file() == Path(tmp_path) / "scorefleet-worker.alive"
