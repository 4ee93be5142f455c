"""The plot of docs/benchmarks.md's "Cost per file" from two ``bench.cost --json`` runs.

    python -m bench.cost --files 150 --only storm --json before.json   # the old code
    python -m bench.cost --files 150 --only storm --json after.json
    python -m bench.plot_cost before.json after.json docs/bench-cost.png

(docs/bench-cost-before.json and -after.json are the runs of docs/benchmarks.md.)

Left: files per minute in the storm of small files, scorefleet (warm, and a model per
file) beside its peers measured in the same run. Right: where the two cores went per
warm small file (the workers, moto, the models, the bridge and the script).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PARTS = ("workers", "moto", "models", "bridge and driver")


def rates(fig: dict[str, Any]) -> dict[str, float]:
    storm, peers = fig["storm"], fig["storm_peers"]
    out = {f"scorefleet {mode}": v["files_per_minute"] for mode, v in storm.items()}
    out.update({name: v["files_per_minute"] for name, v in peers.items()})
    return out


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: python -m bench.plot_cost BEFORE.json AFTER.json OUT.png")
    before, after = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    out = Path(sys.argv[3])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)

    b, a = rates(before), rates(after)
    names = [n for n in a if n in b]
    xs = range(len(names))
    width = 0.38
    left.bar([x - width / 2 for x in xs], [b[n] for n in names], width, label="before")
    left.bar([x + width / 2 for x in xs], [a[n] for n in names], width, label="after")
    for x, n in zip(xs, names, strict=True):
        left.annotate(f"{a[n]:.0f}", (x + width / 2, a[n]), ha="center", va="bottom", fontsize=7)
        left.annotate(f"{b[n]:.0f}", (x - width / 2, b[n]), ha="center", va="bottom", fontsize=7)
    left.set_yscale("log")
    left.set_xticks(list(xs), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    left.set_ylabel("files per minute (log scale)")
    left.set_title(f"{after['files']} files of {after['rows']} rows at once", fontsize=10)
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)

    runs = [("before", before["storm"]["warm"]), ("after", after["storm"]["warm"])]
    bottom = [0.0] * len(runs)
    for part in PARTS:
        ms = [r["cpu_ms_per_file"].get(part, 0.0) for _, r in runs]
        right.bar([name for name, _ in runs], ms, 0.5, bottom=bottom, label=part)
        bottom = [x + y for x, y in zip(bottom, ms, strict=True)]
    for i, total in enumerate(bottom):
        right.annotate(f"{total:.0f} ms", (i, total), ha="center", va="bottom", fontsize=8)
    right.set_ylabel("CPU ms per warm small file (2 cores)")
    right.set_title("Where the two cores went, warm mode", fontsize=10)
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)

    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
