"""Worker peak RSS while scoring generated iris-shaped CSV files of several sizes.

The peak is the kernel's high-water mark of the worker process (VmHWM), reset
before each file (``/proc/<pid>/clear_refs``), so it is exact rather than sampled;
the model process is not counted. The baseline is the smallest file of the run:
the ratio shows whether memory grows with file size.

``--compressed`` adds compressed inputs (issue 10): an ordinary gzip file, and
decompression bombs (gzip, bzip2, xz: about 1 MiB or less that expand to 1 GiB
of valid rows), which must be refused with an ``.error`` while RSS stays flat.

``--parquet-mb 1000`` adds Parquet inputs (issue 14): a file of that size with an id,
the four iris features (full-precision doubles, so it does not compress away) and a
160-character note the model never sees, scored with ``keep_columns=id``; once in
row groups of 250,000 rows, once as a single row group (refused from the footer,
SCOREFLEET_MAX_ROW_GROUP_MB).

    python -m bench.memory [--sizes-mb 10,100,1000] [--compressed] [--parquet-mb 1000]
                           [--json results.json]
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import tempfile
import time
import zlib
from pathlib import Path

from bench.common import Client, local_stack, machine
from bench.large_file import BYTES_PER_ROW, write_rows


def write_iris_rows(path: Path, rows: int) -> int:
    write_rows(path, rows)
    return rows


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


GiB = 1 << 30


def write_compressed(path: Path, kind: str, expanded: int) -> int:
    """A file of ``expanded`` bytes of rows "0,0,0,0", compressed as ``kind``."""
    block = b"0.5,0.5,0.5,0.5\n" * (1 << 16)  # 1 MiB
    comp: object
    if kind == "gzip":
        comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    elif kind == "bzip2":
        comp = bz2.BZ2Compressor(9)
    else:
        comp = lzma.LZMACompressor()
    with path.open("wb") as out:
        for _ in range(expanded // len(block)):
            out.write(comp.compress(block))  # type: ignore[attr-defined]
        out.write(comp.flush())  # type: ignore[attr-defined]
    return path.stat().st_size


def measure(client: Client, worker: int, key: str, path: Path) -> tuple[str, int, int, float]:
    time.sleep(0.5)
    if not reset_hwm(worker):
        raise SystemExit("cannot reset VmHWM (needs /proc/<pid>/clear_refs)")
    before = vm_hwm(worker)
    t0 = client.drop(key, path)
    suffix, t1, _ = client.wait(key)
    return suffix, vm_hwm(worker), before, t1 - t0


def compressed_runs(client: Client, worker: int, tmp: Path) -> list[tuple]:
    rows_path = tmp / "ordinary.csv"
    rows = write_iris_rows(rows_path, int(100e6 / BYTES_PER_ROW))
    ordinary = tmp / "ordinary-100mb.csv.gz"
    with rows_path.open("rb") as src, gzip.open(ordinary, "wb", compresslevel=6) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    rows_path.unlink()
    cases = [("gzip, 100 MB of iris rows", ordinary, f"{rows:,d} rows")]
    for kind in ("gzip", "bzip2", "xz"):
        path = tmp / f"bomb.csv.{kind}"
        size = write_compressed(path, kind, GiB)
        cases.append((f"{kind} bomb, 1 GiB of rows", path, f"{size / 1e6:.3f} MB"))
    results = []
    for label, path, what in cases:
        suffix, peak, before, secs = measure(client, worker, path.name, path)
        results.append((label, what, path.stat().st_size, suffix, peak, before, secs))
        path.unlink()
    return results


def write_parquet(path: Path, mb: float, row_group: int) -> int:
    """About ``mb`` MB of Parquet: id, the iris features, a note; returns its rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows, writer, chunk = 0, None, 250_000
    while not path.exists() or path.stat().st_size < mb * 1e6:
        cols = {"id": pa.array(np.arange(rows, rows + chunk, dtype=np.int64))}
        for name in names:
            cols[name] = pa.array(rng.uniform(0.1, 8, chunk))
        notes = rng.integers(0, 2**63, (chunk, 10), dtype=np.int64)
        cols["note"] = pa.array([r.tobytes().hex() for r in notes])
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=row_group)
        rows += chunk
    assert writer is not None
    writer.close()
    return rows


def parquet_runs(client: Client, worker: int, tmp: Path, mb: float) -> list[tuple]:
    results = []
    for label, row_group in (("row groups of 250,000 rows", 250_000), ("one row group", 0)):
        path = tmp / f"table-{row_group}.parquet"
        if row_group:
            rows = write_parquet(path, mb, row_group)
        else:  # one row group: the same rows, rewritten whole
            import pyarrow.parquet as pq

            src = tmp / "table-250000.parquet"
            table = pq.read_table(src)
            rows = table.num_rows
            pq.write_table(table, path, row_group_size=rows)
            del table
        suffix, peak, before, secs = measure_tagged(
            client, worker, path.name, path, {"keep_columns": "id", "drop_columns": "id note"}
        )
        results.append((label, rows, path.stat().st_size, suffix, peak, before, secs))
    for row_group in (250_000, 0):
        (tmp / f"table-{row_group}.parquet").unlink()
    return results


def rss_split(pid: int) -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of ``pid`` now."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    anon, file = (int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile"))
    return anon, file


#: key -> (anonymous, file-backed) bytes at the largest sampled resident set
SPLITS: dict[str, tuple[int, int]] = {}


def measure_tagged(
    client: Client, worker: int, key: str, path: Path, tags: dict
) -> tuple[str, int, int, float]:
    """Like :func:`measure`, with tags; also samples the anonymous and file-backed
    parts of the resident set (shared libraries' pages are file-backed)."""
    import threading

    time.sleep(0.5)
    if not reset_hwm(worker):
        raise SystemExit("cannot reset VmHWM (needs /proc/<pid>/clear_refs)")
    before = vm_hwm(worker)
    most = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            anon, file = rss_split(worker)
            if anon + file > sum(most):
                most[:] = [anon, file]

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = client.drop(key, path, tags=tags)
    suffix, t1, _ = client.wait(key)
    done.set()
    watcher.join()
    SPLITS[key] = (most[0], most[1])
    return suffix, vm_hwm(worker), before, t1 - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", default="10,100,1000")
    ap.add_argument("--json", help="also write the figures to this file (for docs/benchmarks.md)")
    ap.add_argument("--compressed", action="store_true", help="also compressed inputs and bombs")
    ap.add_argument("--parquet-mb", type=float, default=0, help="also Parquet of this size")
    ap.add_argument(
        "--worker-env", action="append", default=[], help="NAME=VALUE for the worker (repeatable)"
    )
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-mem-"))
    results = []
    extra = dict(kv.split("=", 1) for kv in args.worker_env)
    with local_stack(concurrency=1, extra_env=extra) as stack:
        client = Client(stack)
        worker = next(p for p in stack.procs if p.name == "worker0").popen.pid
        client.drop("warmup.csv", Path(__file__).resolve().parents[1] / "examples" / "iris.csv")
        client.wait("warmup.csv")
        for mb in sizes:
            path = tmp / f"iris-{mb:g}mb.csv"
            rows = write_iris_rows(path, int(mb * 1e6 / BYTES_PER_ROW))
            key = path.name
            time.sleep(0.5)
            if not reset_hwm(worker):
                raise SystemExit("cannot reset VmHWM (needs /proc/<pid>/clear_refs)")
            before = vm_hwm(worker)
            t0 = client.drop(key, path)
            suffix, t1, _ = client.wait(key)
            assert suffix == ".scoreout", suffix
            peak = vm_hwm(worker)
            results.append((mb, rows, peak, before, t1 - t0))
            path.unlink()
        compressed = compressed_runs(client, worker, tmp) if args.compressed else []
        parquet = parquet_runs(client, worker, tmp, args.parquet_mb) if args.parquet_mb else []
    base = results[0][2]
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {"mb": mb, "rows": rows, "peak_rss": peak, "idle_rss": before, "seconds": secs}
                    for mb, rows, peak, before, secs in results
                ],
                indent=1,
            )
        )
    print(f"machine: {machine()}")
    print("worker peak RSS while scoring (iris model, local stack, 1 file at a time):")
    print(f"  {'input':>9} {'rows':>11} {'peak RSS':>10} {'idle RSS':>10} {'wall':>8}  vs smallest")
    for mb, rows, peak, before, secs in results:
        print(
            f"  {mb:7g} MB {rows:11,d} {peak / 2**20:7.1f} MiB {before / 2**20:7.1f} MiB "
            f"{secs:7.1f}s  {peak / base:.2f}x"
        )
    if compressed:
        print(f"compressed input (vs the {results[0][0]:g} MB file's peak):")
        for label, _what, size, suffix, peak, before, secs in compressed:
            print(
                f"  {label:28s} {size / 1e6:9.3f} MB -> {suffix:9s} peak {peak / 2**20:7.1f} MiB "
                f"(idle {before / 2**20:6.1f}) {secs:6.1f}s  {peak / base:.2f}x"
            )
    if parquet:
        print(f"Parquet, keep_columns=id (vs the {results[0][0]:g} MB CSV file's peak):")
        for (label, rows, size, suffix, peak, before, secs), split in zip(
            parquet, SPLITS.values(), strict=True
        ):
            print(
                f"  {label:28s} {size / 1e6:7.0f} MB {rows:11,d} rows -> {suffix:9s} "
                f"peak {peak / 2**20:7.1f} MiB (idle {before / 2**20:6.1f}) {secs:6.1f}s  "
                f"{peak / base:.2f}x; largest sample: {split[0] / 2**20:.1f} MiB anonymous "
                f"+ {split[1] / 2**20:.1f} MiB file-backed (libraries)"
            )


if __name__ == "__main__":
    main()
