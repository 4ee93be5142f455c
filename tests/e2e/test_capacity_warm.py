"""A burst of files with a live-model limit and warm mode (issue 7): one model
serves file after file. Since issue 17 a launch hands its ready model to the warm
pool at once and each score takes it from there: launches that find it parked start
nothing, and no model is held idle while a file's score waits in the queue."""

from __future__ import annotations

import re
import threading
import time

import psutil
import pytest

from tests.helpers import FAKEMODEL, Outcomes
from workers.localstack.stack import LocalStack

pytestmark = pytest.mark.slow


def test_burst_with_one_live_model_and_warm_reuse(tmp_path):
    catalog = {
        "test/ok:1": {"command": f"{{python}} {FAKEMODEL} --port {{port}} --mode slow --delay 0.2"}
    }
    stack = LocalStack(
        tmp_path,
        workers=1,
        concurrency=3,
        flower=False,
        beat=False,
        catalog=catalog,
        extra_env={
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
            "SCOREFLEET_MAX_LIVE_MODELS": "1",
            "SCOREFLEET_WARM_IDLE_SECONDS": "30",
        },
    )
    stack.start()
    peak = 0
    stop = threading.Event()

    workers = {p.popen.pid for p in stack.procs if p.name.startswith("worker")}

    def count_models() -> None:
        nonlocal peak
        while not stop.is_set():
            # this stack's models only (its workers' children): a model another test
            # left running on this machine is not one of them
            n = sum(
                1
                for p in psutil.process_iter(["cmdline", "ppid"])
                if str(FAKEMODEL) in " ".join(p.info["cmdline"] or []) and p.info["ppid"] in workers
            )
            peak = max(peak, n)
            time.sleep(0.05)

    watcher = threading.Thread(target=count_models, daemon=True)
    watcher.start()
    try:
        stack.wait_worker_ready()
        out = Outcomes(stack)
        for i in range(6):
            out.put(f"burst/f{i}.csv", b"a,b\n%d,%d\n" % (i, i), {"model_image": "test/ok:1"})
        for i in range(6):
            suffix, body, _ = out.wait(f"burst/f{i}.csv", timeout=120)
            assert suffix == ".scoreout", body.decode()
        log = (stack.state_dir / "logs" / "worker0.log").read_text()
        starts = len(re.findall(r"started model test/ok:1 as pid", log))
        reuses = len(re.findall(r"reusing the warm model process", log))
        # one start; each of the six scores took the model from the pool (a launch
        # that found it busy may have taken it too, and parked it again)
        assert starts == 1 and reuses >= 6, log[-3000:]
        # (a score that found it busy for 2 s waited its turn in the queue, and took it then)
        assert log.count("taking a warm model of test/ok:1") >= 6, log[-3000:]
        assert log.count("a warm model of test/ok:1 is parked: nothing to start") >= 1, log[-3000:]
        # each score parked the model: every chain ended at its upload, no teardown hop
        assert log.count("; model released after scoring;") == 6, log[-3000:]
        assert "tasks.teardown[" not in log, log[-3000:]
    finally:
        stop.set()
        watcher.join()
        stack.stop()
    assert peak == 1
