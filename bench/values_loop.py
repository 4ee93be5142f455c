"""The data path of bench.formats and bench.large_file in process, without the local
stack's noise: 1,000,000 iris rows as CSV (the fast path), JSON Lines and Parquet,
through the real reader, ``score_stream`` and writer (same format out) with a model
that answers ``label,probability`` CSV at once, against pyarrow reading the same file
(``read_csv`` / ``read_json`` / ``read_table``) in the same run.

Run it on two checkouts to compare them (issue 24: the value checks on the hot path):

    python -m bench.values_loop [--rows 1000000] [--reps 5]
    PYTHONPATH=/path/to/other/checkout python -m bench.values_loop   # its code
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

from bench.formats import iris_table
from bench.large_file import write_rows

ANSWER = b"setosa,0.9\n"


class _Null:
    def write(self, data: bytes) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    import workers.scoring.engine as sc
    from workers.scoring.batches import Scores
    from workers.scoring.formats import FORMATS, Columns, ReadLimits, ranged_reader, stream_reader

    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-values-"))
    csv_path = tmp / "rows.csv"
    write_rows(csv_path, args.rows)
    table = iris_table(args.rows, keep=False)
    files = {"csv": csv_path.read_bytes()}
    buf = io.BytesIO()
    pq.write_table(table, buf)
    files["parquet"] = buf.getvalue()
    files["jsonl"] = b"".join(json.dumps(r).encode() + b"\n" for r in table.to_pylist())

    def score(batch):
        batch.as_csv(header=True)
        return Scores(rows=batch.rows, csv=ANSWER * batch.rows, csv_header=b"label,probability\n")

    def loop(name: str) -> int:
        fmt, data = FORMATS[name], files[name]
        lim = ReadLimits(1 << 20, 1 << 30)
        if fmt.ranged is not None:
            reader = ranged_reader(fmt, io.BytesIO(data), Columns(), lim, size=len(data))
        else:
            chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
            reader = stream_reader(fmt, chunks, Columns(), lim)
        return sc.score_stream(reader, score, _Null(), fmt, max_in_flight=4).rows

    def pyarrow_alone(name: str) -> int:
        data = io.BytesIO(files[name])
        if name == "csv":
            return pacsv.read_csv(data).num_rows
        if name == "jsonl":
            return pajson.read_json(data).num_rows
        return pq.read_table(data).num_rows

    print(f"{args.rows:,} rows, {args.reps} repetitions, min of each ({sc.__file__})")
    for name in ("csv", "jsonl", "parquet"):
        mins = {}
        for what, fn in (("pyarrow read alone", pyarrow_alone), ("scoring loop", loop)):
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                assert fn(name) == args.rows
                times.append(time.perf_counter() - t0)
            mins[what] = min(times)
        base, mine = mins["pyarrow read alone"], mins["scoring loop"]
        print(
            f"  {name:8s} ({len(files[name]) / 1e6:5.1f} MB): pyarrow read alone "
            f"{base * 1000:7.1f} ms, scoring loop {mine * 1000:7.1f} ms, ratio {mine / base:.2f}x"
        )


if __name__ == "__main__":
    main()
