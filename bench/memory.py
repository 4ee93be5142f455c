"""Worker peak RSS while scoring generated iris-shaped CSV files of several sizes.

The peak is the kernel's high-water mark of the worker process (VmHWM), reset
before each file (``/proc/<pid>/clear_refs``), so it is exact rather than sampled;
the model process is not counted. The baseline is the smallest file of the run:
the ratio shows whether memory grows with file size.

    python bench/memory.py [--sizes-mb 2,200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import Client, iris_like_csv, local_stack, machine


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
    ap.add_argument("--sizes-mb", default="2,200")
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
            rows = iris_like_csv(path, int(mb * 1e6))
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
