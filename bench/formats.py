"""Benchmark: 1,000,000 iris rows as Parquet and as JSON Lines through the local
stack, each against a single-process pyarrow baseline measured in the same run.

Baseline: one fresh Python process that loads the same iris model, reads the file
with pyarrow (``pq.read_table`` / ``pyarrow.json.read_json``), calls
``predict_proba`` and writes ``label,probability`` in the same format (Parquet with
pyarrow, JSON Lines with pandas' ``to_json(lines=True)``: pyarrow has no JSON
writer). Pipeline: drop the file into the emulator's input prefix, wait for its
``.scoreout`` (Lambda bridge -> SQS -> worker -> model over HTTP -> emulator), same
format out. Both include starting Python and the model.

    python -m bench.formats [--rows 1000000] [--runs 3] [--formats parquet,jsonl]
                            [--keep]   # also keep an id column beside the scores
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Client, local_stack, machine, median

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

BASELINE = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[4])
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, pyarrow.json as pajson
from model import FEATURES, load_or_train
model = load_or_train(None)
t1 = time.perf_counter()
fmt, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
table = pq.read_table(src) if fmt == "parquet" else pajson.read_json(src)
X = np.column_stack([table.column(c).to_numpy() for c in FEATURES])
proba = model.predict_proba(X)
out = pa.table({"label": model.classes_[proba.argmax(axis=1)], "probability": proba.max(axis=1)})
if fmt == "parquet":
    pq.write_table(out, dst)
else:
    out.to_pandas().to_json(dst, orient="records", lines=True)
print(t1 - t0, time.perf_counter() - t1)
"""


def iris_table(rows: int, keep: bool, seed: int = 11):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cols = {}
    if keep:
        cols["id"] = pa.array(np.arange(rows, dtype=np.int64))
    lows, highs = (4, 2, 1, 0.1), (8, 4.5, 7, 2.5)
    for name, lo, hi in zip(FEATURES, lows, highs, strict=True):
        cols[name] = pa.array(np.round(rng.uniform(lo, hi, rows), 1))
    return pa.table(cols)


def write_file(path: Path, fmt: str, rows: int, keep: bool) -> None:
    import pyarrow.parquet as pq

    table = iris_table(rows, keep)
    if fmt == "parquet":
        pq.write_table(table, path)
        return
    with path.open("wb") as f:
        step = 100_000
        for start in range(0, rows, step):
            part = table.slice(start, step).to_pylist()
            f.write(b"".join(json.dumps(r).encode() + b"\n" for r in part))


def baseline(fmt: str, src: Path, dst: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", BASELINE, fmt, str(src), str(dst), str(REPO / "examples" / "iris")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return time.perf_counter() - t0, float(out[0])


def count_rows(fmt: str, body: bytes) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(io.BytesIO(body)).num_rows)
    return body.count(b"\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--formats", default="parquet,jsonl")
    ap.add_argument("--keep", action="store_true", help="keep an id column beside the scores")
    ap.add_argument("--in-flight", default="4")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-formats-"))
    formats = args.formats.split(",")
    files = {}
    for fmt in formats:
        files[fmt] = tmp / f"large.{fmt}"
        write_file(files[fmt], fmt, args.rows, args.keep)
    results = {}
    with local_stack(extra_env={"SCOREFLEET_MAX_IN_FLIGHT": args.in_flight}) as stack:
        client = Client(stack)
        for fmt in formats:
            base, pipe = [], []
            for i in range(args.runs):
                base.append(baseline(fmt, files[fmt], tmp / f"baseline-{i}.{fmt}"))
                key = f"formats-{i}.{fmt}"
                tags = {"keep_columns": "id", "drop_columns": "id"} if args.keep else None
                t0 = client.drop(key, files[fmt], tags=tags)
                suffix, t1, _ = client.wait(key)
                assert suffix == ".scoreout", suffix
                pipe.append(t1 - t0)
                body = client.s3.get_object(Bucket="scorefleet-local", Key=f"out/{key}.scoreout")
                got = count_rows(fmt, body["Body"].read())
                assert got == args.rows, (fmt, got)
            results[fmt] = (base, pipe, files[fmt].stat().st_size)
    print(f"machine: {machine()}")
    print(
        f"input: {args.rows:,} iris rows; {args.in_flight} mini-batches in flight; "
        f"median of {args.runs}"
    )
    for fmt, (base, pipe, size) in results.items():
        b, p = median([x[0] for x in base]), median(pipe)
        print(f"  {fmt} ({size / 1e6:.1f} MB):")
        print(
            f"    baseline (pyarrow read + predict_proba + write, one process): {b:6.2f} s "
            f"(of which Python + model start {median([x[1] for x in base]):.2f} s)"
        )
        print(f"    pipeline (drop -> .scoreout on the local stack):               {p:6.2f} s")
        print(
            f"    ratio pipeline / baseline: {p / b:.2f}x   throughput {args.rows / p:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
