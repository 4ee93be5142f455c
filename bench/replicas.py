"""Model replicas (issue 25): rows/s of one file scored by 1, 2, 4 and 8 replicas.

    python -m bench.replicas [--rows 100000] [--replicas 1,2,4,8] [--models fixed,lambda,sas]
                             [--slow-rows 100000] [--before /work/base-replicas]

One local stack (moto, the Lambda bridge, one worker, model processes); for each
model and replica count one file goes through the whole stack with the tag
``replicas=N`` (the catalog allows 8, ``min_mb_per_replica: 0``), and the figure is
its score step's rows/s (the worker's ``scored N rows ... in S s``). Ratios are to the
one-replica figure of the same run: the target is >= 0.8 x N.

Models:

* ``fixed``: bench/fixed_model.py, 20 ms per call and one call at a time (the shape
  of a Lambda or SAS container in front of a remote or GPU model), SageMaker contract,
  ``--rows`` rows of ~100 bytes in mini-batches of SCOREFLEET_MAX_PAYLOAD_MB=0.01
  (~100 rows: a 20 ms call per ~100 rows, so the model, not the worker, is the work);
* ``lambda``: the seed-style iris handler (examples/iris_lambda) under awslambdaric
  behind the emulator stand-in, one record per invocation, as it is;
* ``sas``: the SAS-contract iris server (examples/iris_sas), as it is.

The last two are CPU-bound: on this machine their replicas share 2 cores with the
worker and moto. ``--before DIR`` (a worktree of the commit before issue 25) adds
the Lambda handler behind that commit's stand-in (workers/localstack/lambda_rie.py,
which imports the handler and calls it) at one replica, beside awslambdaric's.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
from pathlib import Path
from typing import Any

from bench.common import REPO, Client, local_stack, machine
from tests.helpers.servers.catalog import example_catalog

FIXED = "bench/fixed20:1"
IRIS_LAMBDA = "scorefleet-examples/iris-lambda:1"
IRIS_SAS = "scorefleet-examples/iris-sas:1"
BEFORE_LAMBDA = "bench/iris-lambda-rie:1"
IMAGES = {"fixed": FIXED, "lambda": IRIS_LAMBDA, "sas": IRIS_SAS}
MOST = 8


def fixed_file(rows: int, path: Path) -> Path:
    """Rows of ~100 bytes: an id, eight numbers, a label."""
    rnd = random.Random(25)
    with path.open("w") as f:
        f.write("id," + ",".join(f"x{i}" for i in range(8)) + ",label\n")
        for n in range(rows):
            xs = ",".join(f"{rnd.uniform(-100, 100):.4f}" for _ in range(8))
            f.write(f"{n},{xs},customer-{rnd.randrange(10**8):08d}\n")
    return path


def iris_file(rows: int, path: Path) -> Path:
    rnd = random.Random(7)
    with path.open("w") as f:
        f.write("sepal_length,sepal_width,petal_length,petal_width\n")
        for _ in range(rows):
            f.write(
                f"{rnd.uniform(4.3, 7.9):.1f},{rnd.uniform(2, 4.4):.1f},"
                f"{rnd.uniform(1, 6.9):.1f},{rnd.uniform(0.1, 2.5):.1f}\n"
            )
    return path


def catalog(before: Path | None) -> dict[str, Any]:
    examples = example_catalog()
    many = {"replicas": MOST, "min_mb_per_replica": 0}
    entries: dict[str, Any] = {
        FIXED: {
            "command": f"{{python}} {REPO / 'bench' / 'fixed_model.py'} --host {{host}} "
            "--port {port} --seconds 0.02",
            **many,
        },
        IRIS_LAMBDA: {**examples[IRIS_LAMBDA], **many},
        IRIS_SAS: {**examples[IRIS_SAS], **many},
    }
    if before is not None:
        entries[BEFORE_LAMBDA] = {
            **examples[IRIS_LAMBDA],
            "command": "{python} -m workers.localstack.lambda_rie app.handler --path "
            f"{before / 'examples' / 'iris_lambda'} --host {{host}} --port {{port}}",
            "cwd": str(before),  # `python -m` finds that commit's workers package first
        }
    return entries


def scored(client: Client, key: str, path: Path, image: str, rows: int, n: int) -> float:
    """rows/s of the score step of one file, ``n`` replicas."""
    client.drop(key, path, image, tags={"replicas": str(n)})
    suffix, _, _ = client.wait(key, timeout=7200)
    if suffix != ".scoreout":
        raise RuntimeError(f"{key}: {suffix}")
    log = (client.stack.state_dir / "logs" / "worker0.log").read_text()
    pattern = rf"in/{re.escape(key)}\].*scored {rows} rows in \d+ mini-batches in ([\d.]+)s"
    return rows / float(re.findall(pattern, log)[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--slow-rows", type=int, default=100_000, help="rows for lambda and sas")
    p.add_argument("--replicas", default="1,2,4,8")
    p.add_argument("--models", default="fixed,lambda,sas")
    p.add_argument("--in-flight", type=int, default=2, help="SCOREFLEET_MAX_IN_FLIGHT")
    p.add_argument("--before", type=Path, default=None)
    a = p.parse_args()
    counts = [int(n) for n in a.replicas.split(",")]
    models = [m for m in a.models.split(",") if m]
    tmp = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    files = {
        "fixed": (fixed_file(a.rows, tmp / "fixed.csv"), a.rows),
        "lambda": (iris_file(a.slow_rows, tmp / "iris.csv"), a.slow_rows),
        "sas": (iris_file(a.slow_rows, tmp / "iris.csv"), a.slow_rows),
    }
    env = {
        "SCOREFLEET_MAX_PAYLOAD_MB": "0.01",
        "SCOREFLEET_MAX_IN_FLIGHT": str(a.in_flight),
        "SCOREFLEET_LAUNCH_TIMEOUT": "300",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,bench/",
        # every replica is a model process: the stack's default leaves room for 2
        "SCOREFLEET_MAX_LIVE_MODELS": str(2 * MOST),
    }
    print(f"# {machine()}")
    print(
        f"# mini-batches of <= 0.01 MB, {a.in_flight} in flight per replica; "
        f"fixed: {a.rows:,d} rows, lambda/sas: {a.slow_rows:,d} rows"
    )
    results: list[tuple[str, int, float, float]] = []
    with local_stack(workers=1, concurrency=2, catalog=catalog(a.before), extra_env=env) as stack:
        client = Client(stack)
        for model in models:
            path, rows = files[model]
            one = 0.0
            for n in counts:
                rps = scored(client, f"bench/{model}-{n}.csv", path, IMAGES[model], rows, n)
                one = one or rps
                ratio = rps / (one * n)
                results.append((model, n, rps, ratio))
                print(
                    f"{model:7s} {n} replica(s) {rps:10,.0f} rows/s   "
                    f"{rps / one:5.2f}x one replica   ({ratio:.2f} of N x one)",
                    flush=True,
                )
        if a.before is not None:
            path, rows = files["lambda"]
            now = scored(client, "bench/lambda-ric.csv", path, IRIS_LAMBDA, rows, 1)
            then = scored(client, "bench/lambda-rie.csv", path, BEFORE_LAMBDA, rows, 1)
            print(
                f"lambda, one replica: awslambdaric {now:,.0f} rows/s, the stand-in before "
                f"issue 25 {then:,.0f} rows/s: {now / then:.2f}x",
                flush=True,
            )
    print("\n| model | replicas | rows/s | × one replica | of N × one |")
    print("|---|---:|---:|---:|---:|")
    for model, n, rps, ratio in results:
        one = next(r for m, k, r, _ in results if m == model and k == counts[0])
        print(f"| {model} | {n} | {rps:,.0f} | {rps / one:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
