"""Benchmark 4: the Lambda's cold import time and its per-event latency against
the emulator (S3 tags read, the chain published to SQS).

Cold import: a fresh interpreter imports ``lambda_enqueue.handler`` (median of
N); the baseline is the same interpreter importing nothing (so the figure is the
module's own cost). Then the first invocation (it also builds the Celery app and
the AWS clients) and warm invocations of a one-record S3 event.

    python -m bench.lambda_cold [--runs 7] [--events 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from bench.common import machine
from tests.helpers import base_env
from workers.localstack.stack import emulator_client, free_port, start_moto, stop_process

IMPORT = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def fresh(stmt: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT.format(stmt=stmt)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def interpreter(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--events", type=int, default=50)
    args = ap.parse_args()
    port = free_port()
    moto = start_moto(port, Path(os.devnull))
    try:
        endpoint = f"http://127.0.0.1:{port}"
        bucket = "lambda-bench"
        emulator_client("s3", endpoint).create_bucket(Bucket=bucket)
        env = {**os.environ, **base_env(endpoint, bucket)}
        imports = [fresh("import lambda_enqueue.handler", env) for _ in range(args.runs)]
        bare = [interpreter(env) for _ in range(args.runs)]
        code = """
import json, sys, time
events = json.load(sys.stdin)
t = time.perf_counter()
import lambda_enqueue.handler as h
t_import = time.perf_counter() - t
times = []
for ev in events:
    t = time.perf_counter(); r = h.handler(ev, None); times.append(time.perf_counter() - t)
    assert r["enqueued"] == 1, r
print(json.dumps([t_import] + times))
"""
        s3 = emulator_client("s3", endpoint)
        events = []
        for i in range(args.events + 1):
            key = f"in/file {i}.csv"
            s3.put_object(
                Bucket=bucket, Key=key, Body=b"a\n1\n", Tagging="model_image=test%2Fok%3A1"
            )
            etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
            events.append(
                {
                    "Records": [
                        {
                            "eventSource": "aws:s3",
                            "eventName": "ObjectCreated:Put",
                            "s3": {
                                "bucket": {"name": bucket},
                                "object": {
                                    "key": urllib.parse.quote_plus(key),
                                    "size": 4,
                                    "eTag": etag,
                                    "sequencer": f"{i:016X}",
                                },
                            },
                        }
                    ]
                }
            )
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(events),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        timings = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        stop_process(moto, grace=5)
    cold = statistics.median(imports)
    first, warm = timings[1], timings[2:]
    print(f"machine: {machine()}")
    print(
        f"cold import of lambda_enqueue.handler, median of {args.runs}: {cold * 1000:.0f} ms "
        f"(target < 300 ms: {cold / 0.300:.2f}x of it); a bare interpreter starts in "
        f"{statistics.median(bare) * 1000:.0f} ms"
    )
    print(f"first invocation (builds the Celery app and AWS clients): {first * 1000:.0f} ms")
    p95 = sorted(warm)[int(len(warm) * 0.95)]
    print(
        f"warm invocation, one S3 record, median of {len(warm)}: "
        f"{statistics.median(warm) * 1000:.1f} ms (p95 {p95 * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
