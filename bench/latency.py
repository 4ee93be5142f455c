"""Drop-to-.scoreout latency of examples/iris.csv on the local stack.

Baseline, measured in the same run: the model alone — start the iris server
process, wait for /ping, POST the file once (what scoring the file costs with no
pipeline at all). Prints the median of N runs, split into model start and the
rest, and the ratio to the baseline.

    python bench/latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request

from bench.common import REPO, Client, local_stack, machine, median
from workers.localstack.stack import free_port, stop_process


def baseline_once() -> tuple[float, float]:
    """(model start, total) seconds for: start the model, ping, score iris.csv once."""
    port = free_port()
    body = (REPO / "examples" / "iris.csv").read_bytes()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "iris" / "serve.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
                break
            except OSError:
                time.sleep(0.02)
        started = time.perf_counter()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "text/csv"}
        )
        urllib.request.urlopen(req, timeout=30).read()
        done = time.perf_counter()
    finally:
        stop_process(proc, grace=5)
    return started - t0, done - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    iris = REPO / "examples" / "iris.csv"
    base = [baseline_once() for _ in range(args.runs)]
    totals, starts, waits, intake = [], [], [], []
    with local_stack() as stack:
        client = Client(stack)
        client.drop("warmup.csv", iris)
        client.wait("warmup.csv")
        for i in range(args.runs):
            t0 = client.drop(f"latency-{i}.csv", iris)
            w0 = time.time()
            suffix, t1, head = client.wait(f"latency-{i}.csv")
            assert suffix == ".scoreout", suffix
            totals.append(t1 - t0)
            starts.append(int(head["Metadata"]["model-start-ms"]) / 1000)
            waits.append(int(head["Metadata"].get("wait-ms", 0)) / 1000)
            intake.append(float(head["Metadata"].get("enqueued-at", w0)) - w0)
            time.sleep(0.5)
    total, start = median(totals), median(starts)
    b_start, b_total = median([b[0] for b in base]), median([b[1] for b in base])
    print(f"machine: {machine()}")
    print(f"drop-to-.scoreout, examples/iris.csv, median of {args.runs} (local stack):")
    runs = ", ".join(f"{t * 1000:.0f}" for t in totals)
    print(f"  total        {total * 1000:7.0f} ms   (runs: {runs})")
    print(f"  model start  {start * 1000:7.0f} ms")
    print(f"  the rest     {(total - start) * 1000:7.0f} ms   (queueing, S3, scoring, publishing)")
    print(f"baseline, the model alone (start + one POST), median of {args.runs}:")
    print(f"  total        {b_total * 1000:7.0f} ms   (model start {b_start * 1000:.0f} ms)")
    print(
        f"ratio pipeline / baseline: {total / b_total:.2f}x; "
        f"pipeline overhead beyond the model: {(total - b_total) * 1000:.0f} ms"
    )
    # the same, without the noise of two model starts: this run's own model start
    # (the .scoreout says it) and the model's answer as measured alone
    answer = b_total - b_start
    beyond = median([t - s - answer for t, s in zip(totals, starts, strict=True)])
    print(
        f"overhead beyond the model's own start and answer: {beyond * 1000:.0f} ms "
        f"(drop -> .scoreout - this run's model start - the model's answer alone, "
        f"{answer * 1000:.0f} ms); of it the notification to the Lambda's enqueue: "
        f"{median(intake) * 1000:.0f} ms, between steps (queue hops): "
        f"{median(waits) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
