"""Benchmark 1: a 1,000,000-row iris-shaped CSV through the local stack, against
the in-process baseline measured in the same run.

Baseline: one fresh Python process that loads the same iris model, reads the
file with pandas, calls ``predict_proba`` and writes ``label,probability`` CSV
(what a data scientist's batch script does). Pipeline: drop the file into the
emulator's input prefix, wait for ``.scoreout`` (Lambda bridge → SQS → worker →
model over HTTP → emulator). Both include starting Python and the model.

    python -m bench.large_file [--rows 1000000] [--payload-mb 1] [--in-flight 4] [--runs 3]
                               [--against REV]

``--against REV``: the same pipeline runs with the workers of commit REV too (checked
out into a temporary git worktree), in the same run, the two stacks' drops taking
turns, and the ratio of the medians is printed (issue 26: what committing each
output part costs an undisturbed file).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Client, local_stack, machine, median

BASELINE = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[3])
import numpy as np, pandas as pd
from model import FEATURES, load_or_train
model = load_or_train(None)
t1 = time.perf_counter()
frame = pd.read_csv(sys.argv[1])[FEATURES]
proba = model.predict_proba(frame.to_numpy())
labels = model.classes_[proba.argmax(axis=1)]
out = pd.DataFrame({"label": labels, "probability": proba.max(axis=1)})
out.to_csv(sys.argv[2], index=False, float_format="%.6f")
print(t1 - t0, time.perf_counter() - t1)
"""


#: Bytes per generated row ("5.1,3.5,1.4,0.2\n"), to size files in MB.
BYTES_PER_ROW = 16


def write_rows(path: Path, rows: int, seed: int = 11) -> None:
    """An iris-shaped CSV of ``rows`` rows (one random block of up to 1M rows, repeated)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = min(rows, 1_000_000)
    data = np.column_stack(
        [
            rng.uniform(4, 8, n),
            rng.uniform(2, 4.5, n),
            rng.uniform(1, 7, n),
            rng.uniform(0.1, 2.5, n),
        ]
    )
    buf = io.StringIO()
    np.savetxt(buf, data, fmt="%.1f", delimiter=",")
    block = buf.getvalue().encode()
    with path.open("wb") as f:
        f.write(b"sepal_length,sepal_width,petal_length,petal_width\n")
        for _ in range(rows // n):
            f.write(block)
        rest = rows % n
        if rest:
            f.write(b"".join(block.splitlines(keepends=True)[:rest]))


def baseline(src: Path, dst: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", BASELINE, str(src), str(dst), str(REPO / "examples" / "iris")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return time.perf_counter() - t0, float(out[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--payload-mb", default="1")
    ap.add_argument("--in-flight", default="4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--against", help="also run the pipeline with this commit's workers")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-large-"))
    src = tmp / "large.csv"
    write_rows(src, args.rows)
    size_mb = src.stat().st_size / 1e6
    base = [baseline(src, tmp / "baseline.out") for _ in range(args.runs)]
    pipe, starts = [], []
    extra = {
        "SCOREFLEET_MAX_PAYLOAD_MB": args.payload_mb,
        "SCOREFLEET_MAX_IN_FLIGHT": args.in_flight,
    }
    against: list[float] = []
    #: the score step's own seconds (the .scoreout's score-ms): no model start, no queue
    scoring: dict[str, list[float]] = {"this": [], "against": []}
    with contextlib.ExitStack() as stacks:
        if args.against:
            # out of any checkout: each stack's PYTHONPATH decides its workers' code
            # (`python -m celery` puts its working directory first on sys.path)
            os.chdir(tmp)
            extra["PYTHONPATH"] = str(REPO)
        client = Client(stacks.enter_context(local_stack(extra_env=extra)))
        other = None
        if args.against:
            from bench.resume import revision, worktree

            tree = stacks.enter_context(worktree(revision(args.against)))
            other = Client(
                stacks.enter_context(local_stack(extra_env={**extra, "PYTHONPATH": str(tree)}))
            )
        for i in range(args.runs):
            for c, times, name in ((client, pipe, "this"), (other, against, "against")):
                if c is None:
                    continue
                t0 = c.drop(f"large-{i}.csv", src)
                suffix, t1, head = c.wait(f"large-{i}.csv")
                assert suffix == ".scoreout", suffix
                times.append(t1 - t0)
                scoring[name].append(int(head["Metadata"]["score-ms"]) / 1000)
                if c is client:
                    starts.append(int(head["Metadata"]["model-start-ms"]) / 1000)
                out = c.s3.get_object(Bucket="scorefleet-local", Key=f"out/large-{i}.csv.scoreout")
                lines = out["Body"].read().count(b"\n")
                assert lines == args.rows + 1, lines
    b, p = median([x[0] for x in base]), median(pipe)
    print(f"machine: {machine()}")
    print(
        f"input: {args.rows:,} rows, {size_mb:.1f} MB; mini-batches of {args.payload_mb} MB, "
        f"{args.in_flight} in flight; median of {args.runs}"
    )
    print(
        f"  baseline (pandas + predict_proba + to_csv, one process): {b:6.2f} s "
        f"(of which Python + model start {median([x[1] for x in base]):.2f} s)"
    )
    print(
        f"  pipeline (drop -> .scoreout on the local stack):          {p:6.2f} s "
        f"(of which model start {median(starts):.2f} s)"
    )
    print(
        f"  ratio pipeline / baseline: {p / b:.2f}x   "
        f"throughput {args.rows / p:,.0f} rows/s ({size_mb / p:.1f} MB/s)"
    )
    if against:
        a = median(against)
        print(f"  pipeline runs, this checkout: {', '.join(f'{x:.2f}' for x in pipe)} s")
        print(f"  pipeline runs, {args.against}:  {', '.join(f'{x:.2f}' for x in against)} s")
        print(f"  this checkout / {args.against} (medians): {p:.2f} / {a:.2f} s = {p / a:.3f}x")
        st, sa = median(scoring["this"]), median(scoring["against"])
        print(
            f"  the score step alone (score-ms), this checkout: "
            f"{', '.join(f'{x:.2f}' for x in scoring['this'])} s"
        )
        print(f"  ... {args.against}: {', '.join(f'{x:.2f}' for x in scoring['against'])} s")
        ratio = st / sa
        print(f"  score step this / {args.against} (medians): {st:.2f} / {sa:.2f} s = {ratio:.3f}x")


if __name__ == "__main__":
    main()
