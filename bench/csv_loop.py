"""The CSV fast path's scoring loop alone, in process: 1,000,000 iris rows through
``workers.scoring.engine.score_stream`` with a model that answers at once, against the CSV
batcher alone (reading the same bytes into the same mini-batches) in the same run.

Run it on two checkouts to compare them (it knows the loop's signature before and
after issue 14):

    python -m bench.csv_loop [--rows 1000000] [--reps 25]
    PYTHONPATH=/path/to/other/checkout python bench/csv_loop.py   # its code, this script
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.large_file import write_rows

ANSWER = b"setosa,0.9\n"


class _Null:
    def write(self, data: bytes) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=25)
    args = ap.parse_args()
    path = Path(tempfile.mkdtemp(prefix="scorefleet-loop-")) / "rows.csv"
    write_rows(path, args.rows)
    data = path.read_bytes()

    def chunks():
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    import workers.scoring.engine as sc
    from workers.scoring.batches import Scores
    from workers.scoring.formats.csvsplit import CsvBatcher

    def score(batch):
        batch.as_csv(header=True)
        return Scores(rows=batch.rows, csv=ANSWER * batch.rows, csv_header=b"label,probability\n")

    protocol = type("Protocol", (), {"score": staticmethod(score)})()

    def loop() -> int:
        if hasattr(sc, "reader_rows"):  # issue 14: a reader, a score function, a format
            from workers.scoring.formats import FORMATS, Columns, ReadLimits, stream_reader

            csv = FORMATS["csv"]
            reader = stream_reader(csv, chunks(), Columns(), ReadLimits(1 << 20, 1 << 30))
            return sc.score_stream(reader, score, _Null(), csv, max_in_flight=4).rows
        return sc.score_stream(
            chunks(),
            protocol,
            _Null(),
            max_bytes=1 << 20,
            max_in_flight=4,
            header_mode="auto",
            send_header=True,
        ).rows

    def batcher() -> int:
        return sum(b.rows for b in CsvBatcher(chunks(), 1 << 20))

    results = {}
    for name, fn in (("batcher alone", batcher), ("scoring loop", loop)):
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            assert fn() == args.rows
            times.append(time.perf_counter() - t0)
        times.sort()
        results[name] = (times[0], times[len(times) // 2])
    (b_min, b_med), (l_min, l_med) = results["batcher alone"], results["scoring loop"]
    print(f"{args.rows:,} rows, {len(data) / 1e6:.1f} MB, {args.reps} repetitions ({sc.__file__})")
    print(f"  batcher alone: min {b_min * 1000:.1f} ms, median {b_med * 1000:.1f} ms")
    print(f"  scoring loop:  min {l_min * 1000:.1f} ms, median {l_med * 1000:.1f} ms")
    print(f"  ratio loop / batcher (min): {l_min / b_min:.2f}x")


if __name__ == "__main__":
    main()
