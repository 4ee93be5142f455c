"""Regenerate examples/iris.csv from scikit-learn's bundled iris data.

Usage: python examples/iris/make_csv.py [OUT_PATH]   (default: examples/iris.csv)

150 rows, header ``sepal_length,sepal_width,petal_length,petal_width``; three
rows (one per species) get an empty field so the imputer path is exercised.
"""

from __future__ import annotations

import os
import sys

from sklearn.datasets import load_iris

HEADER = "sepal_length,sepal_width,petal_length,petal_width"
# (0-based row, 0-based column) cells left empty: one per species.
MISSING = {(10, 3), (60, 0), (120, 2)}


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "iris.csv")
    data = load_iris().data
    lines = [HEADER]
    for i, row in enumerate(data):
        cells = ["" if (i, j) in MISSING else f"{v:.1f}" for j, v in enumerate(row)]
        lines.append(",".join(cells))
    with open(out, "w", newline="\n", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} rows to {os.path.normpath(out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
