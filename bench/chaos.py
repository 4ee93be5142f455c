"""Reliability under faults: files through the local stack while workers and model
processes are killed. Prints the reliability table of docs/reliability.md.

    python -m bench.chaos [--files 60] [--worker-kills 5] [--model-kills 2] [--sigterms 2]
                          [--s3-faults 2]

Faults: ``kill -9`` of a worker (its whole process group, as when a pod is
killed; model processes live in their own sessions, as pods would), ``kill -9``
of the model process of a file being scored, SIGTERM of a worker (KEDA
scale-in: a warm shutdown), and S3 answering every request of the workers with
503 SlowDown or 500 InternalError for 3 s (bench/faultproxy.py, in front of the
emulator). A killed worker is started again a second later, as its Deployment
would. Then it checks that every file has exactly one
``.scoreout``, byte-identical to what the model gives for the file (the 'hash'
test model answers row by row, so the output does not depend on batching), no
``.error``, no second version of any output, no staging object or unfinished
multipart upload, no model process once the reaper has run, and no message left
in the queues.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.faultproxy import FaultProxy
from tests.helpers.fakemodel import hash_row, records
from workers.localstack.stack import BUCKET, LocalStack, emulator_client, free_port

FAKEMODEL = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "fakemodel.py"
IMAGE = "test/hash:1"
S3_FAULT_SECONDS = 3.0


@dataclass
class Report:
    files: int
    faults: dict[str, int] = field(default_factory=dict)
    correct: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    steps_run_again: int = 0  # steps received more than once (redelivered or retried)
    copies_stopped: int = 0  # uploads of a second copy of a chain that published nothing
    s3_requests_failed: int = 0  # S3 requests the fault proxy answered with 503/500
    drain_seconds: float = 0.0
    total_seconds: float = 0.0

    def table(self) -> str:
        faults = ", ".join(f"{n} × {k}" for k, n in self.faults.items())
        rows = [
            ("files dropped", str(self.files)),
            ("faults injected", faults),
            ("S3 requests answered 503/500", str(self.s3_requests_failed)),
            ("steps that had to run again", str(self.steps_run_again)),
            ("chain copies stopped by the run record", str(self.copies_stopped)),
            ("outputs correct (byte-identical)", f"{self.correct} / {self.files}"),
            ("wrong outputs", str(len(self.wrong))),
            (".error instead of .scoreout", str(len(self.errors))),
            ("duplicates (second versions)", str(len(self.duplicates))),
            ("lost (no outcome)", str(len(self.lost))),
            ("orphans (model processes, staging, uploads)", str(len(self.orphans))),
            ("messages left in the queues", str(len(self.leftovers))),
            ("last fault → queues drained, nothing left", f"{self.drain_seconds:.1f} s"),
            ("whole run", f"{self.total_seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'':{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
        lines += [f"| {k:{width}} | {v} |" for k, v in rows]
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return self.correct == self.files and not (
            self.wrong
            or self.errors
            or self.duplicates
            or self.lost
            or self.orphans
            or self.leftovers
        )


def make_input(i: int, rows: int) -> bytes:
    rnd = random.Random(i)
    lines = [f"{rnd.randint(0, 10**6)},{rnd.random():.6f},{i}" for _ in range(rows)]
    return ("a,b,c\n" + "\n".join(lines) + "\n").encode()


def expected_output(body: bytes) -> bytes:
    """What the 'hash' model answers for the file's records (the same whatever the batching)."""
    return b"".join(hash_row(r) for r in records(body))


class Chaos:
    def __init__(self, stack: LocalStack, seed: int) -> None:
        self.stack = stack
        self.rnd = random.Random(seed)
        self.faults: dict[str, int] = {}
        self.last_fault = time.monotonic()
        self.log: list[str] = []

    def _workers(self) -> list[Any]:
        return [
            p for p in self.stack.procs if p.name.startswith("worker") and p.popen.poll() is None
        ]

    def _note(self, kind: str, what: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.last_fault = time.monotonic()
        self.log.append(f"{time.strftime('%H:%M:%S')} {kind}: {what}")

    def _restart(self, proc: Any, delay: float) -> None:
        time.sleep(delay)
        index = int(proc.name.removeprefix("worker"))
        self.stack.procs.remove(proc)
        self.stack.start_worker(index)

    def kill_worker(self) -> None:
        proc = self.rnd.choice(self._workers())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)  # the worker, not its models (own sessions)
        proc.popen.wait(timeout=10)
        self._note("worker kill -9", proc.name)
        self._restart(proc, 1.0)

    def sigterm_worker(self) -> None:
        proc = self.rnd.choice(self._workers())
        proc.popen.send_signal(signal.SIGTERM)
        self._note("worker SIGTERM (scale-in)", proc.name)
        try:
            proc.popen.wait(timeout=120)  # warm shutdown: running steps finish first
        except Exception:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
        self._restart(proc, 0.5)

    def fail_s3(self, proxy: FaultProxy, status: int) -> None:
        proxy.fail_s3(status, S3_FAULT_SECONDS)
        name = "503 SlowDown" if status == 503 else "500 InternalError"
        self._note(f"S3 {name} for {S3_FAULT_SECONDS:g} s", f"{status} on every S3 request")
        time.sleep(S3_FAULT_SECONDS)

    def kill_model(self) -> bool:
        records = list((self.stack.state_dir / "local").glob("*/record.json"))
        self.rnd.shuffle(records)
        for rec in records:
            with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
                pid = int(json.loads(rec.read_text())["pid"])
                if psutil.Process(pid).is_running():
                    os.killpg(pid, signal.SIGKILL)
                    self._note("model process kill -9", rec.parent.name)
                    return True
        return False


def run(
    files: int = 60,
    worker_kills: int = 5,
    model_kills: int = 2,
    sigterms: int = 2,
    seed: int = 1,
    rows: int = 3000,
    timeout: float = 600,
    s3_faults: int = 2,
) -> Report:
    state = Path(tempfile.mkdtemp(prefix="scorefleet-chaos-"))
    moto_port = free_port()
    proxy = FaultProxy(moto_port).start()  # the workers' S3 goes through it
    catalog = {
        IMAGE: {
            "command": f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} "
            "--mode hash --delay 0.15"
        }
    }
    stack = LocalStack(
        state,
        workers=2,
        concurrency=3,
        flower=False,
        catalog=catalog,
        moto_port=moto_port,
        extra_env={
            "AWS_ENDPOINT_URL": proxy.url,
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
            "SCOREFLEET_VISIBILITY_TIMEOUT": "10",
            "SCOREFLEET_RETRY_BACKOFF": "1",
            "SCOREFLEET_RETRY_BACKOFF_MAX": "3",
            "SCOREFLEET_MAX_PAYLOAD_MB": "0.02",
            "SCOREFLEET_MAX_IN_FLIGHT": "2",
            "SCOREFLEET_REAP_INTERVAL": "10",
        },
    )
    report = Report(files=files)
    started = time.monotonic()
    stack.start()
    try:
        stack.wait_worker_ready()
        s3 = emulator_client("s3", stack.endpoint)
        sqs = emulator_client("sqs", stack.endpoint)
        bodies = {f"chaos/f{i:03d}.csv": make_input(i, rows) for i in range(files)}
        for key, body in bodies.items():
            s3.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=body, Tagging=f"model_image={IMAGE}")

        chaos = Chaos(stack, seed)
        plan = ["worker"] * worker_kills + ["model"] * model_kills + ["sigterm"] * sigterms
        plan += [("s3", 503 if i % 2 == 0 else 500) for i in range(s3_faults)]
        chaos.rnd.shuffle(plan)

        def inject() -> None:
            time.sleep(2.0)
            for kind in plan:
                if isinstance(kind, tuple):
                    chaos.fail_s3(proxy, kind[1])
                elif kind == "worker":
                    chaos.kill_worker()
                elif kind == "sigterm":
                    chaos.sigterm_worker()
                else:
                    for _ in range(40):  # wait for a model to be running
                        if chaos.kill_model():
                            break
                        time.sleep(0.1)
                time.sleep(chaos.rnd.uniform(1.0, 3.0))

        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
        outcome = wait_outcomes(s3, list(bodies), started + timeout)
        injector.join(timeout=300)
        report.faults = chaos.faults
        drained_at = wait_drained(stack, s3, sqs, started + timeout)
        report.drain_seconds = drained_at - chaos.last_fault
        check(report, s3, sqs, stack, bodies, outcome)
        report.steps_run_again = steps_run_again(stack.state_dir / "logs")
        report.copies_stopped = copies_stopped(stack.state_dir / "logs")
        report.total_seconds = time.monotonic() - started
        report.s3_requests_failed = proxy.failed
        (state / "chaos.log").write_text("\n".join(chaos.log) + "\n")
    finally:
        stack.stop()
        proxy.stop()
    return report


def wait_outcomes(s3: Any, keys: list[str], deadline: float) -> dict[str, str]:
    pending, found = set(keys), {}
    while pending and time.monotonic() < deadline:
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/chaos/").get("Contents", [])
        names = {o["Key"] for o in listing}
        for key in list(pending):
            for suffix in (".scoreout", ".error"):
                if f"out/{key}{suffix}" in names:
                    found[key] = suffix
                    pending.discard(key)
        time.sleep(0.25)
    return found


def _queue_empty(sqs: Any, url: str) -> bool:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return all(
        int(attrs.get(a, 0)) == 0
        for a in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    )


def wait_drained(stack: LocalStack, s3: Any, sqs: Any, deadline: float) -> float:
    """Queues empty and no model process left (the reaper had its turn)."""
    while time.monotonic() < deadline:
        models = (
            list((stack.state_dir / "local").glob("*"))
            if (stack.state_dir / "local").exists()
            else []
        )
        if (
            _queue_empty(sqs, stack.urls["queue_url"])
            and _queue_empty(sqs, stack.urls["steps_url"])
            and _queue_empty(sqs, stack.urls["dlq_url"])
            and not models
        ):
            return time.monotonic()
        time.sleep(0.5)
    return time.monotonic()


def check(
    report: Report,
    s3: Any,
    sqs: Any,
    stack: LocalStack,
    bodies: dict[str, bytes],
    outcome: dict[str, str],
) -> None:
    for key, body in bodies.items():
        if key not in outcome:
            report.lost.append(key)
            continue
        if outcome[key] == ".error":
            report.errors.append(key)
            continue
        got = s3.get_object(Bucket=BUCKET, Key=f"out/{key}.scoreout")["Body"].read()
        if got == expected_output(body):
            report.correct += 1
        else:
            report.wrong.append(key)
        versions = s3.list_object_versions(Bucket=BUCKET, Prefix=f"out/{key}.scoreout").get(
            "Versions", []
        )
        if len([v for v in versions if v["Key"] == f"out/{key}.scoreout"]) != 1:
            report.duplicates.append(key)
    staging = s3.list_objects_v2(Bucket=BUCKET, Prefix="scorefleet-state/staging/").get(
        "Contents", []
    )
    report.orphans += [f"staging object {o['Key']}" for o in staging]
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    report.orphans += [f"multipart upload {u['Key']}" for u in uploads]
    local = stack.state_dir / "local"
    if local.exists():
        report.orphans += [f"model process of {p.name}" for p in local.iterdir()]
    for name in ("queue_url", "steps_url", "dlq_url"):
        if not _queue_empty(sqs, stack.urls[name]):
            report.leftovers.append(name)


def steps_run_again(logs: Path) -> int:
    """Task ids that workers received more than once (after a kill, or retried)."""
    seen: dict[str, int] = {}
    for path in logs.glob("worker*.log"):
        for m in re.finditer(r"Task (tasks\.\w+\[[^\]]+\]) received", path.read_text()):
            seen[m.group(1)] = seen.get(m.group(1), 0) + 1
    return sum(1 for n in seen.values() if n > 1)


def copies_stopped(logs: Path) -> int:
    """Uploads that found the outcome recorded by another attempt of their run (the
    copy of a chain a worker killed between sending a step and acking its own left)."""
    needle = "another attempt of this run published its outcome"
    return sum(p.read_text().count(needle) for p in logs.glob("worker*.log"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--worker-kills", type=int, default=5)
    ap.add_argument("--model-kills", type=int, default=2)
    ap.add_argument("--sigterms", type=int, default=2)
    ap.add_argument("--s3-faults", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    report = run(
        args.files,
        args.worker_kills,
        args.model_kills,
        args.sigterms,
        args.seed,
        s3_faults=args.s3_faults,
    )
    print(report.table())
    for name in ("wrong", "errors", "duplicates", "lost", "orphans", "leftovers"):
        items = getattr(report, name)
        if items:
            print(f"{name}: {items[:10]}")
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
