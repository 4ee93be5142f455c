"""S3 requests per file, step by step, before and after the outcomes' provenance
(issue 27): the target is none added beyond the outcome's own write.

One small CSV file runs its chain (launch, score, upload, teardown: the real steps,
``.apply()`` in one process) against a moto server on 127.0.0.1 with the local
backend and the fake model, as tests/integration/test_requests_per_file.py does;
botocore's event hooks count every S3 call of the worker's client. The same script
runs once with the code of a base commit (a git worktree of it, its own PYTHONPATH)
and once with this checkout's, and prints both and the difference.

    .venv/bin/python -m bench.provenance_requests [--base d9e4ab6] \
        [--base-dir /work/base-contract]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEPS = ("launch", "score", "upload", "teardown")
SOURCE = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(50))


def base_checkout(commit: str, where: Path) -> Path:
    """A worktree of ``commit`` at ``where`` (made once; kept for later runs)."""
    if not (where / "scorefleet").exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), commit],
            check=True,
            capture_output=True,
        )
    models = where / ".venv-models"
    if not models.exists() and (REPO / ".venv-models").exists():
        models.symlink_to((REPO / ".venv-models").resolve())
    return where


def measure() -> dict[str, Any]:
    """One file's chain with the code on PYTHONPATH: S3 calls per step, and the
    outcome's metadata keys."""
    from tests.helpers import base_env, fake, queued_job
    from workers.localstack.stack import emulator_client, free_port, start_moto, stop_process

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-prov-"))
    moto = start_moto(port, tmp / "moto.log")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        bucket = "bench-provenance"
        emulator_client("s3", endpoint).create_bucket(Bucket=bucket)
        os.environ.update(
            base_env(
                endpoint,
                bucket,
                SCOREFLEET_STATE_DIR=str(tmp / "state"),
                SCOREFLEET_MODEL_CATALOG=json.dumps({"test/ok:1": fake("ok")}),
                SCOREFLEET_WARM_IDLE_SECONDS="60",
            )
        )
        import tasks.score
        from tasks.launch import launch
        from tasks.score import score
        from tasks.teardown import teardown
        from tasks.upload import upload
        from workers import runtime

        runtime.reset()
        tasks.score.first_delivery = lambda task: True  # a first delivery of each message
        rt = runtime.current()
        counts: Counter[str] = Counter()
        rt.s3.meta.events.register(
            "before-call.s3.*", lambda model, **_: counts.update([model.name])
        )
        job = queued_job(rt, bucket, "in/a.csv", SOURCE)
        per_step: dict[str, dict[str, int]] = {}
        for name, step in zip(STEPS, (launch, score, upload, teardown), strict=True):
            counts.clear()
            result = step.apply(args=[job])
            assert result.successful(), result.traceback
            job = result.result
            per_step[name] = dict(counts)
        meta = rt.s3.head_object(Bucket=bucket, Key="out/a.csv.scoreout")["Metadata"]
        stop_all = getattr(rt.backend, "stop_all", None)
        if stop_all is not None:
            stop_all()
        return {"steps": per_step, "metadata": sorted(meta)}
    finally:
        stop_process(moto, grace=5)


def run_arm(checkout: Path) -> dict[str, Any]:
    from bench.common import measure_in  # here: the --measure child may run older code

    return measure_in(checkout, __file__, ["--measure"], timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="d9e4ab6", help="the commit before issue 27")
    ap.add_argument("--base-dir", type=Path, default=Path("/work/base-contract"))
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return
    arms = {"before": base_checkout(args.base, args.base_dir), "after": REPO}
    got = {arm: run_arm(path) for arm, path in arms.items()}
    print(f"S3 requests of one small file's chain (local backend, warm mode), {args.base} vs HEAD:")
    print(f"  {'step':9} {'before':>7} {'after':>7}   requests (after)")
    totals = {arm: 0 for arm in arms}
    for step in STEPS:
        n = {arm: sum(got[arm]["steps"][step].values()) for arm in arms}
        for arm in arms:
            totals[arm] += n[arm]
        detail = ", ".join(f"{k} {v}" for k, v in sorted(got["after"]["steps"][step].items()))
        print(f"  {step:9} {n['before']:7d} {n['after']:7d}   {detail}")
    print(f"  {'total':9} {totals['before']:7d} {totals['after']:7d}")
    print(f"added by provenance: {totals['after'] - totals['before']} request(s) per file")
    added = sorted(set(got["after"]["metadata"]) - set(got["before"]["metadata"]))
    print(f".scoreout metadata fields added: {', '.join(added)}")


if __name__ == "__main__":
    main()
