"""Drop -> ``.error`` for a model that raises on every request, on this checkout and
on a baseline checkout (the commit before issue 28), measured in the same run.

    .venv/bin/python -m bench.model_bug --baseline /work/base-newuser [--runs 3]

The model is a Flask app (the ``local`` extra has Flask) whose ``/invocations`` raises
on every request and answers HTTP 500 with its traceback, as the issue's FastAPI model
did. Each checkout runs in a process of its own (its code first on PYTHONPATH, for the
local stack it starts too) with the production retry settings: a local stack, the
model in its catalog, ``examples/iris.csv`` dropped ``--runs`` times under new keys;
the clock runs from the upload to the ``.error``. It prints, per checkout, the median
and each run, the attempts the ``.error`` reports, and whether it carries the model's
traceback; then the ratio of the two medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
IMAGE = "bench/raises:1"
MODEL = """
import argparse, traceback
from flask import Flask, request

app = Flask(__name__)


@app.get("/ping")
def ping():
    return "ok"


@app.post("/invocations")
def invocations():
    try:
        rows = request.get_data(as_text=True).splitlines()[1:]
        return "".join(f"{float(r.split(',')[9]):.2f}\\n" for r in rows)  # a bug: no column 9
    except Exception:
        return traceback.format_exc(), 500, {"Content-Type": "text/plain"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    app.run(host="127.0.0.1", port=parser.parse_args().port)
"""


def child(runs: int) -> None:
    """In the checkout under test: the runs, as one JSON line on stdout."""
    from bench.common import REPO, Client, local_stack

    model = Path(tempfile.mkdtemp(prefix="scorefleet-bench-model-")) / "raises.py"
    model.write_text(MODEL)
    catalog = {IMAGE: {"command": f"{{python}} {model} --port {{port}}"}}
    from workers.localstack.stack import iris_catalog

    results = []
    with local_stack(
        catalog={**iris_catalog(), **catalog},
        extra_env={"SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,bench/"},
    ) as stack:
        client = Client(stack)
        for i in range(runs):
            key = f"raises-{i}.csv"
            t0 = client.drop(key, REPO / "examples" / "iris.csv", IMAGE)
            suffix, t1, _ = client.wait(key, timeout=900)
            body = client.s3.get_object(Bucket="scorefleet-local", Key=f"out/{key}{suffix}")
            text = body["Body"].read().decode()
            attempts = re.search(r"\(after (\d+) attempts\)", text)
            results.append(
                {
                    "seconds": t1 - t0,
                    "outcome": suffix,
                    "attempts": int(attempts.group(1)) if attempts else 1,
                    # whole, line by line (a one-line snippet of it, cut at 600
                    # characters, is not the traceback)
                    "traceback": {
                        "Traceback (most recent call last):",
                        "IndexError: list index out of range",
                    }
                    <= {line.strip() for line in text.splitlines()},
                }
            )
    print(json.dumps(results))


def measure(root: Path, runs: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", "--runs", str(runs)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{root}: failed\n{proc.stderr[-3000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def report(name: str, root: Path, results: list[dict]) -> float:
    secs = [r["seconds"] for r in results]
    med = statistics.median(secs)
    print(f"{name:9} {root}")
    print(
        f"          drop -> {results[0]['outcome']}: median {med:6.1f} s  "
        f"(runs: {', '.join(f'{s:.1f}' for s in secs)})"
    )
    print(
        f"          attempts in the .error: {sorted({r['attempts'] for r in results})}; "
        f"the model's traceback in it, line by line: {all(r['traceback'] for r in results)}"
    )
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=False, help="a checkout of the base commit")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.runs)
        return
    from bench.common import machine

    print(machine())
    print(f"a model that answers HTTP 500 with its traceback to every request; {args.runs} runs")
    started = time.monotonic()
    after = report("this", HERE.parents[1], measure(HERE.parents[1], args.runs))
    if args.baseline:
        before = report("baseline", args.baseline, measure(args.baseline.resolve(), args.runs))
        print(f"baseline / this: {before / after:.1f}x faster to the .error")
    print(f"(the whole benchmark: {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
