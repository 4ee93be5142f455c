"""Prefork: with PROMETHEUS_MULTIPROC_DIR set, what child processes count is what the
main process serves (workers/process/metrics.py: the client's multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_counts_of_forked_children_are_served_by_the_parent(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys, urllib.request
        from workers.process import metrics
        from workers.localstack.stack import free_port
        port = free_port()
        server = metrics.serve(port, "127.0.0.1")
        pids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                metrics.ROWS_SCORED.inc(10)
                metrics.FILES_FAILED.labels("score", "ModelError").inc()
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
            metrics.child_exited(pid)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        print(text)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "scorefleet_rows_scored_total 30.0" in out.stdout, out.stdout
    assert 'scorefleet_files_failed_total{reason="ModelError",step="score"} 3.0' in out.stdout
