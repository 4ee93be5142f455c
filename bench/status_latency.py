"""How long ``scorefleet status`` takes against the local stack.

    .venv/bin/python -m bench.status_latency [--runs 50] [--cli-runs 5]

A file is scored on the local stack; then its status is asked ``--runs`` times in
process (what the command does: a HEAD of the file, a GET of its run record) and
``--cli-runs`` times as the command a user types (a new Python process each time:
imports, settings, client). The baseline, in the same run: one HEAD of the file's
``.scoreout``, the cheapest "is it done?" a user could ask S3 by hand.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Client, local_stack, machine
from scorefleet.settings import load
from workers.cli.runs import status_view
from workers.localstack.stack import BUCKET, IRIS_IMAGE


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def describe(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--cli-runs", type=int, default=5)
    args = ap.parse_args()
    print(machine())
    with local_stack(concurrency=2) as stack:
        client = Client(stack)
        client.drop("iris.csv", REPO / "examples" / "iris.csv", IRIS_IMAGE)
        suffix, _, _ = client.wait("iris.csv", timeout=120)
        assert suffix == ".scoreout", suffix
        settings = load(stack.env)
        uri = f"s3://{BUCKET}/in/iris.csv"
        assert status_view(settings, client.s3, uri).state == "published"
        in_process = timed(lambda: status_view(settings, client.s3, uri), args.runs)
        head = timed(
            lambda: client.s3.head_object(Bucket=BUCKET, Key="out/iris.csv.scoreout"), args.runs
        )
        env = {**os.environ, **stack.env}
        cwd = tempfile.mkdtemp()

        def cli() -> None:
            proc = subprocess.run(
                [str(Path(sys.executable).parent / "scorefleet"), "status", uri],
                env=env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert "published" in proc.stdout, proc.stdout

        command = timed(cli, args.cli_runs)
    print("\nscorefleet status of a published file, local stack (moto on loopback):")
    print(f"  in process (HEAD + GET run record)  {describe(in_process)}")
    print(f"  the command, a new process each     {describe(command)}")
    print(f"  baseline: one HEAD of the .scoreout {describe(head)}")
    ratio = statistics.median(in_process) / statistics.median(head)
    print(f"  in process / baseline: {ratio:.1f}x")


if __name__ == "__main__":
    main()
