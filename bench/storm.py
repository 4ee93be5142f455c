"""Benchmark 3: a small-file storm. N files of 50 rows dropped at once on the local
stack with 2 workers, scored with the iris model, without and with warm mode.

Per file: drop-to-output latency (the output first seen in a listing polled every
50 ms), split into the S3 notification and the Lambda (drop -> chain enqueued),
the time between steps (waiting for a free worker slot in the busy fleet, plus
the queue hops), the model's start, and the steps' own work (claim, scoring,
publishing). "Everything else" in the issue's sense is all but the model start.
The baseline for the warm run is the cold run of the same storm, measured just
before it.

    python -m bench.storm [--files 300] [--rows 50] [--concurrency 4] [--warm-idle 60]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass

from bench.common import local_stack, machine
from scorefleet.storage.s3io import encode_tags
from workers.localstack.stack import BUCKET, IRIS_IMAGE, emulator_client


@dataclass
class Storm:
    files: int
    seconds: float
    latency: list[float]
    notify: list[float]
    queue: list[float]
    model_start: list[float]
    rest: list[float]
    model_starts: int

    def per_minute(self) -> float:
        return self.files / self.seconds * 60


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def body(i: int, rows: int) -> bytes:
    lines = [
        f"{4 + (i + r) % 40 / 10:.1f},{2 + r % 25 / 10:.1f},{1 + r % 60 / 10:.1f},"
        f"{0.1 + r % 24 / 10:.1f}"
        for r in range(rows)
    ]
    return (
        "sepal_length,sepal_width,petal_length,petal_width\n" + "\n".join(lines) + "\n"
    ).encode()


def run(files: int, rows: int, concurrency: int, warm_idle: float) -> Storm:
    extra = {
        "SCOREFLEET_WARM_IDLE_SECONDS": str(warm_idle),
        "SCOREFLEET_WARM_MAX_PER_IMAGE": str(2 * concurrency),
        # one model per slot: files already running finish before new ones start
        "SCOREFLEET_MAX_LIVE_MODELS": str(2 * concurrency),
    }
    with local_stack(workers=2, concurrency=concurrency, extra_env=extra) as stack:
        s3 = emulator_client("s3", stack.endpoint)
        payloads = {f"storm/f{i:04d}.csv": body(i, rows) for i in range(files)}
        seen: dict[str, float] = {}
        dropped: dict[str, float] = {}
        dropped_wall: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                pages = s3.get_paginator("list_objects_v2").paginate(
                    Bucket=BUCKET, Prefix="out/storm/"
                )
                now = time.perf_counter()
                for page in pages:
                    for o in page.get("Contents", []):
                        key = (
                            o["Key"][len("out/") :].removesuffix(".scoreout").removesuffix(".error")
                        )
                        seen.setdefault(key, now)
                if len(seen) >= files:
                    return
                stop.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        tags = encode_tags({"model_image": IRIS_IMAGE})
        t0 = time.perf_counter()
        for key, data in payloads.items():
            s3.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=data, Tagging=tags)
            dropped[key] = time.perf_counter()
            dropped_wall[key] = time.time()
        watcher.join(timeout=1800)
        stop.set()
        elapsed = max(seen.values()) - t0
        lat, queue, start, rest, notify, starts = [], [], [], [], [], 0
        for key in payloads:
            head = s3.head_object(Bucket=BUCKET, Key=f"out/{key}.scoreout")
            meta = head["Metadata"]
            latency = seen[key] - dropped[key]
            q = int(meta.get("wait-ms", 0)) / 1000
            notify.append(float(meta["enqueued-at"]) - dropped_wall[key])
            m = int(meta.get("model-start-ms", 0)) / 1000
            starts += m > 0.3  # a real start, not a warm reuse
            lat.append(latency)
            queue.append(q)
            start.append(m)
            rest.append(max(0.0, latency - q - m - notify[-1]))
    return Storm(files, elapsed, lat, notify, queue, start, rest, starts)


def report(name: str, s: Storm) -> None:
    print(
        f"{name}: {s.files} files in {s.seconds:.1f} s = {s.per_minute():.0f} files/minute; "
        f"{s.model_starts} model starts"
    )
    for label, xs in (
        ("drop -> output", s.latency),
        ("  drop -> Lambda enqueued", s.notify),
        ("  between steps", s.queue),
        ("  model start", s.model_start),
        ("  the steps' own work", s.rest),
    ):
        p50, p95 = statistics.median(xs) * 1000, pct(xs, 95) * 1000
        print(f"  {label:24} p50 {p50:7.0f} ms   p95 {p95:7.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=4, help="files in parallel per worker")
    ap.add_argument("--warm-idle", type=float, default=60)
    ap.add_argument("--only", choices=("cold", "warm", "both"), default="both")
    args = ap.parse_args()
    cold = run(args.files, args.rows, args.concurrency, 0) if args.only != "warm" else None
    warm = (
        run(args.files, args.rows, args.concurrency, args.warm_idle)
        if args.only != "cold"
        else None
    )
    print(f"machine: {machine()}")
    print(
        f"storm: {args.files} files of {args.rows} rows dropped at once, 2 workers x "
        f"{args.concurrency} slots, iris model"
    )
    if cold:
        report("pod per file (default)", cold)
    if warm:
        report(f"warm mode ({args.warm_idle:g} s idle)", warm)
    if not (cold and warm):
        return
    print(
        f"warm / cold: throughput {warm.per_minute() / cold.per_minute():.1f}x, "
        f"p50 latency {statistics.median(warm.latency) / statistics.median(cold.latency):.2f}x"
    )


if __name__ == "__main__":
    main()
