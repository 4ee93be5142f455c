"""How much CSV compresses, real and degenerate, with gzip, bzip2 and xz: the data
SCOREFLEET_MAX_EXPANSION_RATIO's default was chosen from (docs/benchmarks.md).

    python -m bench.ratios
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random


def csv(rows) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def cases() -> dict[str, bytes]:
    rnd = random.Random(1)
    return {
        "iris-like floats": csv(
            f"{rnd.uniform(4, 8):.1f},{rnd.uniform(2, 4.5):.1f},{rnd.uniform(1, 7):.1f},"
            f"{rnd.uniform(0, 2.5):.1f}"
            for _ in range(200000)
        ),
        "ascending integers": csv(f"{i},{i % 7}.5,{i % 3}" for i in range(200000)),
        "log-like CSV": csv(
            f"2026-01-{rnd.randint(1, 28):02d},{rnd.choice(['GET', 'POST'])},"
            f"/api/v1/{rnd.choice('abc')},{rnd.choice([200, 200, 200, 404, 500])},"
            f"{rnd.randint(1, 999)}"
            for _ in range(200000)
        ),
        "one-hot, 100 columns": csv(
            ",".join("1" if j == rnd.randrange(100) else "0" for j in range(100))
            for _ in range(20000)
        ),
        "50 columns of zeros": csv(",".join("0" for _ in range(50)) for _ in range(20000)),
        "one row repeated": csv("1.0,2.0,3.0,4.0,setosa" for _ in range(200000)),
        "NUL bytes": b"\0" * 50_000_000,
    }


def main() -> None:
    print(f"{'data':24s} {'MB':>6s} {'gzip':>9s} {'bzip2':>10s} {'xz':>9s}")
    for name, data in cases().items():
        g = len(data) / len(gzip.compress(data, 6))
        b = len(data) / len(bz2.compress(data))
        x = len(data) / len(lzma.compress(data))
        print(f"{name:24s} {len(data) / 1e6:6.1f} {g:8.1f}x {b:9.1f}x {x:8.1f}x")


if __name__ == "__main__":
    main()
