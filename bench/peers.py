"""The peers of bench/cost.py, on a bare emulator with the same model: seed 003's
approach (SQS, the whole object, pandas, in process) and a one-process pyarrow script;
and the script's own S3 client and output polling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench.common import REPO
from workers.localstack.aws import start_moto
from workers.localstack.stack import BUCKET, free_port, stop_process

APPID_DRIVER = "sfdriver"
IRIS = REPO / "examples" / "iris"


def driver_s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(user_agent_appid=APPID_DRIVER, retries={"max_attempts": 10}),  # type: ignore[call-arg]
    )


def wait_outputs(s3: Any, prefix: str, n: int, timeout: float) -> dict[str, float]:
    """Poll the output prefix until ``n`` outcomes are there; key -> first seen."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        now = time.perf_counter()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for o in page.get("Contents", []):
                seen.setdefault(o["Key"], now)
        time.sleep(0.05)
    if len(seen) < n:
        raise TimeoutError(f"{len(seen)} of {n} outcomes under {prefix} after {timeout:.0f}s")
    return seen


SEED003_WORKER = r"""
import io, json, sys, time, resource
import boto3, pandas as pd
sys.path.insert(0, sys.argv[3])
from model import FEATURES, load_or_train
endpoint, queue_url = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
model = load_or_train(None)
print("ready", flush=True)
while True:
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    for m in got.get("Messages", []):
        job = json.loads(m["Body"])
        if job.get("stop"):
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, flush=True)
            sys.exit(0)
        data = s3.get_object(Bucket=job["bucket"], Key=job["key"])["Body"].read()
        frame = pd.read_csv(io.BytesIO(data))[FEATURES]
        proba = model.predict_proba(frame.to_numpy())
        out = pd.DataFrame({"label": model.classes_[proba.argmax(axis=1)],
                            "probability": proba.max(axis=1)})
        s3.put_object(Bucket=job["bucket"], Key=job["out"],
                      Body=out.to_csv(index=False, float_format="%.6f").encode())
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
"""

PYARROW_SCRIPT = r"""
import io, json, sys, time, resource
import boto3, pyarrow as pa, pyarrow.csv as pacsv
sys.path.insert(0, sys.argv[2])
from model import FEATURES, load_or_train
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
s3 = boto3.client("s3", **kw)
model = load_or_train(None)
jobs = json.loads(sys.stdin.read())
t0 = time.perf_counter()
for bucket, key, out in jobs:
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    table = pacsv.read_csv(pa.py_buffer(data))
    x = table.select(FEATURES).to_pandas().to_numpy()
    proba = model.predict_proba(x)
    result = pa.table({"label": model.classes_[proba.argmax(axis=1)],
                       "probability": proba.max(axis=1)})
    sink = io.BytesIO()
    pacsv.write_csv(result, sink)
    s3.put_object(Bucket=bucket, Key=out, Body=sink.getvalue())
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


class Emulator:
    """A bare emulator for the peers: one bucket, one queue, nothing of scorefleet."""

    def __init__(self, state: Path) -> None:
        self.port = free_port()
        self.proc = start_moto(self.port, state / "moto-peers.log")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.s3 = driver_s3(self.endpoint)
        self.s3.create_bucket(Bucket=BUCKET)
        self.sqs = boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.queue = self.sqs.create_queue(QueueName="peer-jobs")["QueueUrl"]

    def close(self) -> None:
        stop_process(self.proc)


def seed003(em: Emulator, jobs: list[tuple[str, str]], workers: int) -> tuple[float, int]:
    """Seed 003's approach: (seconds from the first send to the last output, peak RSS
    of the largest worker process)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SEED003_WORKER, em.endpoint, em.queue, str(IRIS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        for key, out in jobs:
            em.sqs.send_message(
                QueueUrl=em.queue,
                MessageBody=json.dumps({"bucket": BUCKET, "key": key, "out": out}),
            )
        prefix = jobs[0][1].rsplit("/", 1)[0] + "/"
        seen = wait_outputs(em.s3, prefix, len(jobs), 1800)
        seconds = max(seen.values()) - t0
        for _ in procs:
            em.sqs.send_message(QueueUrl=em.queue, MessageBody=json.dumps({"stop": True}))
        peaks = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            peaks.append(int(out.split()[-1]))
        return seconds, max(peaks)
    finally:
        for p in procs:
            if p.poll() is None:
                stop_process(p)  # type: ignore[arg-type]


def pyarrow_script(em: Emulator, jobs: list[tuple[str, str]]) -> tuple[float, float, int]:
    """The single-process pyarrow script: (seconds in all, of its loop, its peak RSS)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PYARROW_SCRIPT, em.endpoint, str(IRIS)],
        input=json.dumps([[BUCKET, k, o] for k, o in jobs]),
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout.split()
    return time.perf_counter() - t0, float(out[0]), int(out[1])
