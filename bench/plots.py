"""Plots for docs/benchmarks.md from ``bench.memory --json`` results.

    python -m bench.memory --sizes-mb 2,10,100,200,1000 --json memory.json
    python -m bench.plots memory.json docs/

writes ``bench-throughput.png`` (scoring throughput vs file size) and ``bench-rss.png``
(worker peak RSS vs file size).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    mb = [r["mb"] for r in results]
    throughput = [r["mb"] / r["seconds"] for r in results]
    rows_per_s = [r["rows"] / r["seconds"] / 1e3 for r in results]
    peak = [r["peak_rss"] / 2**20 for r in results]
    idle = [r["idle_rss"] / 2**20 for r in results]

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(mb, throughput, marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("input file size (MB, log scale)")
    ax.set_ylabel("drop → .scoreout (MB/s)")
    ax.set_title("Throughput vs file size (iris model, local stack)")
    for x, y, r in zip(mb, throughput, rows_per_s, strict=True):
        ax.annotate(
            f"{r:.0f}k rows/s",
            (x, y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bench-throughput.png")

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(mb, peak, marker="o", label="peak RSS while scoring")
    ax.plot(mb, idle, marker=".", linestyle="--", label="RSS before the file")
    ax.axhline(200, color="grey", linewidth=0.8, linestyle=":", label="200 MB target")
    ax.set_xscale("log")
    ax.set_ylim(0, max(220, max(peak) * 1.15))
    ax.set_xlabel("input file size (MB, log scale)")
    ax.set_ylabel("worker RSS (MiB)")
    ax.set_title("Worker memory vs file size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bench-rss.png")


if __name__ == "__main__":
    main()
