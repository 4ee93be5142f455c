"""Seconds from drop to ``.error`` for a file missing a column, before and after the
model's contract is checked up front (issue 27), with the iris example and MLServer.

For each arm -- the code of a base commit (a git worktree of it, its own PYTHONPATH)
and this checkout's -- a local stack starts (moto, the Lambda bridge, one worker,
the local backend) with two models: the iris example (`scorefleet-examples/iris:1.0`,
examples/iris/serve.py) and the iris model served by MLServer 1.7.1 (v2; its own
virtualenv, `.venv/bin/python -m tests.helpers.servers.venvs mlserver`), each as that
checkout's catalog has them (after: the iris example declares its MLflow signature,
MLServer its input tensor in its model settings). A CSV file with three of the four
feature columns is dropped ``--runs`` times per model, one at a time, and the time
from its PutObject to its ``.error`` is measured. Retries as the defaults configure
them (SCOREFLEET_RETRY_MAX 5, backoff from 2 s).

    .venv/bin/python -m bench.contract_latency [--runs 3] [--base d9e4ab6] \
        [--base-dir /work/base-contract]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MISSING = b"sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n4.9,3.0,1.4\n"
MODELS = {
    "iris example": "scorefleet-examples/iris:1.0",
    "MLServer": "scorefleet-examples/iris-v2:1",
}


def measure(runs: int, checkout: Path) -> dict[str, Any]:
    """Drop-to-outcome seconds per model with the code on PYTHONPATH."""
    from scorefleet.storage.s3io import encode_tags
    from workers.localstack.models import iris_catalog
    from workers.localstack.stack import BUCKET, LocalStack, emulator_client

    examples = json.loads((checkout / "examples" / "catalog.json").read_text())
    catalog = {
        **iris_catalog(),
        MODELS["MLServer"]: {**examples[MODELS["MLServer"]], "cwd": str(checkout)},
    }
    stack = LocalStack(
        Path(tempfile.mkdtemp(prefix="sf-bench-contract-")),
        workers=1,
        concurrency=2,
        flower=False,
        catalog=catalog,
        extra_env={"SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/"},
    )
    stack.start()
    out: dict[str, Any] = {}
    try:
        stack.wait_worker_ready()
        s3 = emulator_client("s3", stack.endpoint)
        for label, image in MODELS.items():
            times, kinds = [], []
            for i in range(runs):
                key = f"bench/{image.split('/')[1].replace(':', '-')}-{i}.csv"
                tags = encode_tags({"model_image": image})
                s3.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=MISSING, Tagging=tags)
                dropped = time.perf_counter()
                kinds.append(wait(s3, BUCKET, key))
                times.append(time.perf_counter() - dropped)
            out[label] = {"seconds": times, "outcomes": kinds}
    finally:
        stack.stop()
    return out


def wait(s3: Any, bucket: str, key: str, timeout: float = 900) -> str:
    """The outcome of in/<key> (its suffix, and the first line of its error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for suffix in (".error", ".scoreout"):
            try:
                body = s3.get_object(Bucket=bucket, Key=f"out/{key}{suffix}")["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            error = next((ln for ln in body.decode().splitlines() if ln.startswith("error:")), "")
            step = next((ln for ln in body.decode().splitlines() if ln.startswith("failed")), "")
            return f"{suffix} {step.split(':', 1)[-1].strip()} {error[:110]}".strip()
        time.sleep(0.05)
    return "no outcome"


def run_arm(checkout: Path, runs: int) -> dict[str, Any]:
    from bench.common import measure_in  # here: the --measure child may run older code

    return measure_in(checkout, __file__, ["--measure", str(runs)], timeout=3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="files per model and arm")
    ap.add_argument("--base", default="d9e4ab6", help="the commit before issue 27")
    ap.add_argument("--base-dir", type=Path, default=Path("/work/base-contract"))
    ap.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, Path.cwd())))
        return
    from bench.common import machine
    from bench.provenance_requests import base_checkout

    print(machine())
    arms = {"before": base_checkout(args.base, args.base_dir), "after": REPO}
    got = {arm: run_arm(path, args.runs) for arm, path in arms.items()}
    print(f"\ndrop -> .error of a CSV missing a column, {args.runs} file(s) each, one at a time")
    for label in MODELS:
        med = {arm: statistics.median(got[arm][label]["seconds"]) for arm in arms}
        print(
            f"  {label:13} before {med['before']:6.2f} s   after {med['after']:6.2f} s   "
            f"ratio {med['before'] / med['after']:5.1f}x faster"
        )
        for arm in arms:
            shown = ", ".join(f"{t:.2f}" for t in got[arm][label]["seconds"])
            print(f"    {arm:6} [{shown}] s: {got[arm][label]['outcomes'][0]}")


if __name__ == "__main__":
    main()
