"""What one sweep costs in S3 requests, counted against moto, and the formula for a
prefix of 1,000,000 already-scored files.

    .venv/bin/python -m bench.sweep_cost [--files 10000] [--max-keys 2500]

N input files, each with its .scoreout (all scored: the sweep must queue nothing),
swept from the start until the listing wraps (ceil(N / max_keys) runs, each from the
checkpoint the last one left). Every request the sweep's client sends is counted by
operation. The baseline, measured in the same run: the naive sweep (list the input,
HEAD each file's .scoreout).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scorefleet.settings import load
from workers.localstack.stack import (
    CREDENTIALS,
    emulator_client,
    free_port,
    start_moto,
    stop_process,
)
from workers.ops.sweep import PAGE, Finding, Sweep, SweepLimits


def counted(client):
    calls: collections.Counter[str] = collections.Counter()
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    return calls


def formula(files: int, max_keys: int) -> dict[str, int]:
    """Requests of one whole pass over ``files`` scored files, one .scoreout each.

    A run lists up to ``max_keys`` inputs from the checkpoint (ceil(listed / 1000)
    LISTs; a run that finds nothing left still sends one) and the outcomes of its
    window (as many pages, plus one when the window ends on a page boundary and more
    outcomes follow), reads the checkpoint and writes it: one GET and one PUT. The
    pass ends with the first run that lists fewer than ``max_keys``."""
    runs = lists = done = 0
    while True:
        runs += 1
        listed = min(max_keys, files - done)
        lists += max(1, math.ceil(listed / PAGE))
        if listed:
            more = files - done - listed > 0
            lists += math.ceil(listed / PAGE) + (1 if listed % PAGE == 0 and more else 0)
        done += listed
        if listed < max_keys:
            break
    return {
        "runs": runs,
        "ListObjectsV2": lists,
        "GetObject": runs,
        "PutObject": runs,
        "HeadObject": 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--max-keys", type=int, default=2_500)
    args = ap.parse_args()
    n, cap = args.files, args.max_keys
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="sweep-cost-")) / "moto.log"
    moto = start_moto(port, log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        s3 = emulator_client("s3", endpoint)
        bucket = "sweep-cost"
        s3.create_bucket(Bucket=bucket)
        t0 = time.perf_counter()

        def put(i: int) -> None:
            key = f"{i // 1000:04d}/part-{i:07d}.csv"
            s3.put_object(Bucket=bucket, Key=f"in/{key}", Body=b"a\n1\n")

        def put_out(i: int) -> None:
            key = f"{i // 1000:04d}/part-{i:07d}.csv"
            s3.put_object(Bucket=bucket, Key=f"out/{key}.scoreout", Body=b"x\n")

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(n)))
            list(pool.map(put_out, range(n)))  # the outcomes are newer than their files
        print(f"{n} files and {n} .scoreout objects on moto in {time.perf_counter() - t0:.0f}s")
        settings = load(
            {
                **CREDENTIALS,
                "SCOREFLEET_INPUT_URI": f"s3://{bucket}/in/",
                "SCOREFLEET_OUTPUT_URI": f"s3://{bucket}/out/",
                "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
                "SCOREFLEET_DEFAULT_MODEL_IMAGE": "test/ok:1",
            }
        )
        client = emulator_client("s3", endpoint)
        calls = counted(client)
        sweep = Sweep(settings, client, None, SweepLimits(grace_seconds=0, max_keys=cap))
        findings: collections.Counter[Finding] = collections.Counter()
        t0 = time.perf_counter()
        runs = 0
        while True:
            report = sweep.run()
            runs += 1
            findings.update(report.findings)
            if report.complete:
                break
        secs = time.perf_counter() - t0
        assert findings == {Finding.SCORED: n}, findings
        measured = dict(calls)
        total = sum(measured.values())
        expect = formula(n, cap)
        print(f"\nsweep of {n} scored files, max_keys={cap}: {runs} runs in {secs:.1f}s")
        for op in ("ListObjectsV2", "GetObject", "PutObject", "HeadObject"):
            print(f"  {op:14} measured {measured.get(op, 0):6d}   formula {expect[op]:6d}")
        assert all(measured.get(op, 0) == expect[op] for op in expect if op != "runs"), (
            "the formula no longer matches what the sweep sends"
        )
        print(f"  total          measured {total:6d}")

        naive = emulator_client("s3", endpoint)
        naive_calls = counted(naive)
        t0 = time.perf_counter()
        for page in naive.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="in/"):
            for o in page.get("Contents", []):
                rel = o["Key"][len("in/") :]
                naive.head_object(Bucket=bucket, Key=f"out/{rel}.scoreout")
        naive_secs = time.perf_counter() - t0
        naive_total = sum(naive_calls.values())
        print(
            f"baseline (list + HEAD per file's .scoreout): {naive_total} requests in "
            f"{naive_secs:.1f}s; the sweep sends {total / naive_total:.3f} of them "
            f"({naive_total / total:.0f}x fewer)"
        )
        million = formula(1_000_000, 100_000)
        m_total = sum(v for k, v in million.items() if k != "runs")
        print(
            "\n1,000,000 scored files, SCOREFLEET_SWEEP_MAX_KEYS=100000 (the default): "
            f"{million['runs']} runs per pass, {million['ListObjectsV2']} LIST + "
            f"{million['GetObject']} GET + {million['PutObject']} PUT = {m_total} requests "
            f"per pass, 0 HEAD (baseline: {1_000_000 + 1000} requests, "
            f"{(1_000_000 + 1000) / m_total:.0f}x more); at S3 Standard "
            f"prices ($0.005 per 1,000 LIST/PUT, $0.0004 per 1,000 GET) about "
            f"${(million['ListObjectsV2'] + million['PutObject']) * 0.005 / 1000:.3f} a pass"
        )
    finally:
        stop_process(moto, grace=5)


if __name__ == "__main__":
    main()
