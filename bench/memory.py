"""Worker peak RSS while scoring generated iris-shaped CSV files of several sizes.

The peak is the kernel's high-water mark of the worker process (VmHWM), reset
before each file (``/proc/<pid>/clear_refs``), so it is exact rather than sampled;
the model process is not counted. The baseline is the smallest file of the run:
the ratio shows whether memory grows with file size.

    python -m bench.memory [--sizes-mb 10,100,1000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", default="10,100,1000")
    ap.add_argument("--json", help="also write the figures to this file (for docs/benchmarks.md)")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-mem-"))
    results = []
    with local_stack(concurrency=1) as stack:
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


if __name__ == "__main__":
    main()
