"""What Celery events and Flower cost on SQS/SNS, and how fresh Flower is.

On the local stack (moto, bridge, one worker, the real Flower), with moto's request
recorder on:

1. idle: the stack does nothing for --idle seconds (worker heartbeats, long polls);
2. load: --files files are dropped at once and scored (4 steps each); the window
   ends when Flower shows every step finished.

Every recorded SQS/SNS request is put in a bucket by what it serves: the task
pipeline itself (the task queue; "bridge" is the local stand-in for Lambda's
SQS trigger), events (SNS publishes to <ns>-events and the
event queues <ns>-ev-*), remote control (<ns>-pidbox, <ns>-reply-*) and the
session-queue upkeep (TagQueue/ListQueues/...). Extra requests per file = events
and control during the load window, less the idle rate over that window. Prices:
SQS standard $0.40 per million requests, SNS $0.50 per million publishes, SNS to
SQS deliveries free (free tiers ignored).

Freshness: while scoring, Flower's /api/tasks is polled every --poll seconds; the
delay of a step is when Flower first showed it finished minus the worker's
timestamp of its task-succeeded/failed event.

    python -m bench.flower_events [--files 20] [--idle 60]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from bench.common import REPO, machine
from scorefleet.storage.s3io import encode_tags
from workers.localstack.stack import (
    BUCKET,
    DLQ,
    EVENTS_QUEUE,
    QUEUE,
    LocalStack,
    emulator_client,
)
from workers.monitoring import monitor

USER, PASSWORD = "bench", "bench-flower-password"
MONTH = 30 * 86400
FILES_PER_MONTH = 100_000
SQS_PRICE = 0.40 / 1e6
SNS_PRICE = 0.50 / 1e6
NS = monitor.namespace(QUEUE)
STEPS = ("launch", "score", "upload", "teardown")


def catalog() -> dict[str, Any]:
    fake = REPO / "tests" / "helpers" / "fakemodel.py"
    return {"test/ok:1": {"command": f"{{python}} {fake} --port {{port}} --mode ok"}}


# ------------------------------------------------------------------ requests
def recorder(stack: LocalStack, action: str) -> bytes:
    method = "GET" if action == "download-recording" else "POST"
    req = urllib.request.Request(
        f"{stack.endpoint}/moto-api/recorder/{action}", method=method, data=None
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return bytes(resp.read())


def classify(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(bucket, action) of one recorded SQS/SNS request; None for S3 and others."""
    headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    target = headers.get("x-amz-target", "")
    if target.startswith("AmazonSQS."):
        action = target.split(".", 1)[1]
        params = json.loads(body or "{}")
        name = str(params.get("QueueUrl") or params.get("QueueName") or "").rsplit("/", 1)[-1]
        if name.startswith(f"{NS}-ev-"):
            return "events", action
        if name.startswith((f"{NS}-pidbox-", f"{NS}-reply-")):
            return "control", action
        if name == EVENTS_QUEUE:
            return "bridge", action  # the local stand-in for Lambda's event source mapping
        if name in (QUEUE, f"{QUEUE}-steps", DLQ):
            return "pipeline", action
        return "upkeep", action
    form = parse_qs(body)
    if "Action" in form and "sns" in headers.get("authorization", "").lower():
        action = form["Action"][0]
        topic = form.get("TopicArn", [""])[0].rsplit(":", 1)[-1]
        if action == "Publish":
            return ("events" if topic == f"{NS}-events" else "control"), "SNS.Publish"
        return "upkeep", f"SNS.{action}"
    return None


def recorded_requests(recording: bytes) -> tuple[list[dict[str, Any]], int]:
    """The requests in moto's recording, and how many fragments could not be read.

    moto's threaded server appends one JSON object per request, but two requests
    recorded at once can land on one line without a newline between them, so the
    file is read as a stream of JSON values rather than line by line."""
    text = recording.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    entries: list[dict[str, Any]] = []
    unreadable, i = 0, 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            unreadable += 1
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
            continue
        if isinstance(value, dict):
            entries.append(value)
    return entries, unreadable


def tally(recording: bytes) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    entries, unreadable = recorded_requests(recording)
    for entry in entries:
        kind = classify(entry)
        if kind:
            counts[kind] += 1
    if unreadable:
        print(f"warning: {unreadable} unreadable fragment(s) in moto's recording, not counted")
    return counts


def by_bucket(counts: Counter[tuple[str, str]]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for (bucket, action), n in counts.items():
        out.setdefault(bucket, Counter())[action] += n
    return out


# --------------------------------------------------------------------- flower
class Flower:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def tasks(self) -> dict[str, dict[str, Any]]:
        req = urllib.request.Request(self.base + "/api/tasks", headers=self.headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))


def run(files: int, idle: float, poll: float) -> None:
    state = Path(tempfile.mkdtemp(prefix="scorefleet-bench-flower-"))
    # moto (started by the stack, inheriting this environment) records requests here
    os.environ["MOTO_RECORDER_FILEPATH"] = str(state / "moto-recording.jsonl")
    stack = LocalStack(
        state,
        flower=True,
        concurrency=4,
        catalog=catalog(),
        extra_env={
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
            "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
        },
    )
    stack.start()
    try:
        stack.wait_worker_ready()
        stack.wait_flower_ready()
        flower = Flower(stack.flower_port)
        time.sleep(5)  # Flower's start-up inspection settles

        recorder(stack, "reset-recording")
        recorder(stack, "start-recording")
        time.sleep(idle)
        recorder(stack, "stop-recording")
        idle_counts = tally(recorder(stack, "download-recording"))

        s3 = emulator_client("s3", stack.endpoint)
        recorder(stack, "reset-recording")
        recorder(stack, "start-recording")
        t0 = time.monotonic()
        keys = [f"bench/f{i:04d}.csv" for i in range(files)]
        for key in keys:
            s3.put_object(
                Bucket=BUCKET,
                Key=f"in/{key}",
                Body=b"a,b\n1,2\n3,4\n",
                Tagging=encode_tags({"model_image": "test/ok:1"}),
            )
        seen: dict[str, float] = {}
        finished: dict[str, float] = {}
        deadline = time.monotonic() + 60 + files * 5
        want = files * len(STEPS)
        while len(seen) < want and time.monotonic() < deadline:
            now = time.time()
            for tid, task in flower.tasks().items():
                if tid in seen or task.get("state") not in ("SUCCESS", "FAILURE"):
                    continue
                if str(task.get("args", "")).startswith(f"s3://{BUCKET}/in/bench/"):
                    seen[tid] = now
                    finished[tid] = float(task.get("succeeded") or task.get("failed") or now)
            time.sleep(poll)
        window = time.monotonic() - t0
        recorder(stack, "stop-recording")
        load_counts = tally(recorder(stack, "download-recording"))
    finally:
        stack.stop()

    idle_b, load_b = by_bucket(idle_counts), by_bucket(load_counts)
    print(f"machine: {machine()}")
    print(f"stack: 1 worker (concurrency 4, heartbeat every 10 s), 1 Flower; ns={NS}")
    print(f"\nidle {idle:.0f} s (requests):")
    for bucket in sorted(idle_b):
        print(f"  {bucket:9} {dict(sorted(idle_b[bucket].items()))}")
    print(f"\nload: {files} files, {window:.1f} s until Flower showed all {want} steps")
    for bucket in sorted(load_b):
        print(f"  {bucket:9} {dict(sorted(load_b[bucket].items()))}")

    def extra(bucket: str, sns: bool) -> float:
        def n(counts: dict[str, Counter[str]]) -> int:
            c = counts.get(bucket, Counter())
            return sum(v for k, v in c.items() if k.startswith("SNS.") == sns)

        return max(0.0, n(load_b) - n(idle_b) * window / idle) / files

    sns_per_file = extra("events", True) + extra("control", True)
    sqs_per_file = extra("events", False) + extra("control", False)
    print("\nextra requests per scored file caused by events (load minus idle rate):")
    print(f"  SNS publishes   {sns_per_file:6.2f}")
    print(f"  SQS requests    {sqs_per_file:6.2f}   (Flower's ReceiveMessage + DeleteMessageBatch)")
    cost = FILES_PER_MONTH * (sns_per_file * SNS_PRICE + sqs_per_file * SQS_PRICE)
    print(f"  at {FILES_PER_MONTH:,} files/month: ${cost:.3f}/month")

    def monthly(bucket: str) -> tuple[float, float]:
        c = idle_b.get(bucket, Counter())
        sns = sum(v for k, v in c.items() if k.startswith("SNS."))
        sqs = sum(v for k, v in c.items() if not k.startswith("SNS."))
        return sns / idle * MONTH, sqs / idle * MONTH

    sns_idle = sum(monthly(b)[0] for b in ("events", "control", "upkeep"))
    sqs_idle = sum(monthly(b)[1] for b in ("events", "control", "upkeep"))
    print("\nstanding cost while idle (1 worker, 1 Flower, extrapolated to a 30-day month):")
    print(f"  SNS publishes   {sns_idle:10,.0f}  ${sns_idle * SNS_PRICE:.2f}")
    print(f"  SQS requests    {sqs_idle:10,.0f}  ${sqs_idle * SQS_PRICE:.2f}")

    delays = sorted(seen[t] - finished[t] for t in seen)
    if delays:
        p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
        med = statistics.median(delays)
        print(
            f"\nFlower shows a finished step after: median {med * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms "
            f"({len(delays)} steps; includes up to {poll * 1000:.0f} ms of polling)"
        )
    if len(seen) < want:
        print(f"\nWARNING: Flower showed only {len(seen)} of {want} steps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--poll", type=float, default=0.05)
    args = ap.parse_args()
    run(args.files, args.idle, args.poll)


if __name__ == "__main__":
    main()
