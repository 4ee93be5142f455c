"""`scorefleet up`: the README's main job, and Ctrl-C stopping everything it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_up_demo_scores_the_iris_file_and_stops(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "up",
            "--demo",
            "--exit-after-demo",
            "--flower-port",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scorefleet local stack is up." in proc.stdout
    assert "scored in" in proc.stdout and "label,probability" in proc.stdout
    assert "stopped every process the local stack started." in proc.stdout
    assert (tmp_path / ".scorefleet" / "stack.env").exists()


def test_ctrl_c_stops_every_process(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "up", "--flower-port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        else:
            pytest.fail("stack did not come up:\n" + "".join(lines))
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "workers.emulator" in names and "worker" in names and "flower" in names
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        assert "stopped every process" in out
        time.sleep(0.5)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], [c.cmdline() for c in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for c in children:  # only if the test failed half way
            if c.is_running():
                c.kill()
