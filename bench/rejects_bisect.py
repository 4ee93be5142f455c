"""Extra model calls the rejected-rows bisection spends on a 1,000,000-row file.

    .venv/bin/python -m bench.rejects_bisect [--rows 1000000] [--payload-mb 1]

The file is cut into mini-batches by the real CSV batcher (``SCOREFLEET_MAX_PAYLOAD_MB``,
default 1) and each mini-batch goes through the real bisection (workers/scoring/rejects.py) to
a model that refuses, as a 4xx, any request holding one of the bad rows. Counted: the
model calls. The baseline, in the same run: the same file with no bad row (one call per
mini-batch). Bad rows: 1 and 10, at random (seeded), and the worst placements (the
first row of a mini-batch; 10 in one mini-batch, or 10 in ten).
"""

from __future__ import annotations

import argparse
import random
import time

from scorefleet.errors import RowsRefused
from scorefleet.settings import RejectBudget
from workers.scoring.batches import Batch, Scores
from workers.scoring.formats.csvsplit import CsvBatcher
from workers.scoring.rejects import Bisector, bisect_calls_per_row, extra_call_bound


def make_file(rows: int) -> bytes:
    return ("a,b,c\n" + "".join(f"{i},{i % 7}.5,{i % 3}\n" for i in range(rows))).encode()


def batches(data: bytes, payload: int) -> list[Batch]:
    step = 1 << 20
    chunks = (data[i : i + step] for i in range(0, len(data), step))
    batcher = CsvBatcher(chunks, payload)
    out = []
    for raw in batcher:
        out.append(
            Batch(
                first_row=raw.first_row,
                rows=raw.rows,
                span=raw.span,
                columns=("a", "b", "c"),
                csv=raw.data,
                csv_header=batcher.header,
            )
        )
    return out


def run(all_batches: list[Batch], bad: set[int]) -> tuple[int, int]:
    """(model calls, rows refused)."""
    calls = 0

    def score(batch: Batch) -> Scores:
        nonlocal calls
        calls += 1
        last = batch.first_row + batch.rows - 1
        if any(batch.first_row <= r <= last for r in bad):
            raise RowsRefused("400: a value the model does not take")
        return Scores(rows=batch.rows, csv=b"0\n" * batch.rows)

    total = sum(b.rows for b in all_batches)
    bisect = Bisector(score, RejectBudget(count=max(1, len(bad))), lambda: total)
    refused = 0
    for b in all_batches:
        refused += len(bisect(b).refused)
    return calls, refused


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--payload-mb", type=float, default=1.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = make_file(args.rows)
    bs = batches(data, int(args.payload_mb * 1024 * 1024))
    rows_per_batch = max(b.rows for b in bs)
    print(
        f"{args.rows:,} rows ({len(data) / 1e6:.1f} MB) in {len(bs)} mini-batches of up to "
        f"{rows_per_batch:,} rows (MAX_PAYLOAD_MB={args.payload_mb:g}), "
        f"made in {time.perf_counter() - t0:.1f}s"
    )
    base, _ = run(bs, set())
    print(f"baseline, no bad row: {base} model calls\n")
    rng = random.Random(16)
    firsts = [b.first_row for b in bs]
    cases = {
        "1 bad row, random": {rng.randint(1, args.rows)},
        "1 bad row, first of its mini-batch (worst)": {firsts[len(firsts) // 2]},
        "10 bad rows, random": set(rng.sample(range(1, args.rows + 1), 10)),
        "10 bad rows, one per mini-batch, each first (worst)": set(firsts[:10]),
        "10 bad rows in one mini-batch": set(range(firsts[1], firsts[1] + 10 * 997, 997)),
    }
    per_row = bisect_calls_per_row(rows_per_batch)
    print(f"{'case':55} {'calls':>6} {'extra':>6} {'bound':>6} {'vs baseline':>11}")
    for name, bad in cases.items():
        calls, refused = run(bs, bad)
        assert refused == len(bad), (name, refused)
        extra = calls - base
        bound = len(bad) * per_row
        print(f"{name:55} {calls:6d} {extra:6d} {bound:6d} {calls / base:10.2f}x")
    print(
        f"\nbound: 2*ceil(log2 {rows_per_batch:,}) = {per_row} extra calls per bad row; a file "
        f"over its budget stops after at most (budget+1) x {per_row} "
        f"(budget 10: {extra_call_bound(10, rows_per_batch)})"
    )


if __name__ == "__main__":
    main()
