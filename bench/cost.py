"""What one file costs: the workers' own CPU and every AWS request, against peers.

On the local stack (moto, the Lambda bridge, 2 workers x 4 slots, the iris model):

1. **Small files** (``--files`` of ``--rows`` rows, dropped at once), in warm mode
   and with one model per file: the workers' own CPU-seconds per file, from their
   processes' CPU times (``user + system`` of each ``celery worker`` process and of
   ``celery beat``; the models' and moto's processes are not counted), less what the
   same processes burn idle over a window as long; and every request moto served,
   by origin (the workers, the Lambda, the benchmark's own drops and listings), by
   service and API, also less the idle rate.
2. **Peers** on the same emulator and model, in the same run:

   - *seed 003's approach*: worker processes (as many as the stack's) that take an
     SQS message naming the file, download the whole object into memory, read it
     with pandas, ``predict_proba`` in process, and upload the result;
   - *a single-process pyarrow script*: for each file, read it from the emulator
     with pyarrow, ``predict_proba``, write it back with pyarrow.

   For the storm and for one file of ``--large-rows`` rows: time and peak RSS
   (the kernel's high-water mark, VmHWM, of the processes doing the work).

Requests are attributed by the SDK's user-agent app id (``AWS_SDK_UA_APP_ID``):
``worker`` for the Celery workers and beat, ``lambda`` for the Lambda bridge,
``driver`` for this script. The bridge's own polling of the S3 events queue stands
for Lambda's event source mapping, which AWS does not bill per request.

    python -m bench.cost [--files 150] [--rows 50] [--large-rows 1000000] [--idle 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil

from bench.common import machine
from bench.flower_events import classify as classify_queue
from bench.flower_events import recorded_requests, recorder
from bench.large_file import write_rows
from bench.memory import vm_hwm
from bench.peers import APPID_DRIVER, Emulator, driver_s3, pyarrow_script, seed003, wait_outputs
from bench.storm import body
from scorefleet.storage.s3io import encode_tags
from workers.localstack.stack import BUCKET, IRIS_IMAGE, LocalStack

APPID_WORKER, APPID_LAMBDA = "sfworker", "sflambda"


# ------------------------------------------------------------------- requests
def s3_api(method: str, url: str, headers: dict[str, str]) -> str:
    """The S3 API of one REST request, from its method, path and query."""
    parts = urlsplit(url)
    q = parse_qs(parts.query, keep_blank_values=True)
    path = parts.path.strip("/")
    has_key = "/" in path
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if not has_key:
            return "ListObjectsV2" if q.get("list-type") == ["2"] else "ListObjects"
        if "tagging" in q:
            return "GetObjectTagging"
        if "uploadId" in q:
            return "ListParts"
        return "GetObject"
    if method == "PUT":
        if "tagging" in q:
            return "PutObjectTagging"
        if "partNumber" in q:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        if "x-amz-copy-source" in headers:
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        return "PostObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return method


def origin(headers: dict[str, str]) -> str:
    ua = headers.get("user-agent", "")
    for appid, name in (
        (APPID_WORKER, "workers"),
        (APPID_LAMBDA, "lambda"),
        (APPID_DRIVER, "driver"),
    ):
        if f"app/{appid}" in ua:
            return name
    return "other"


def requests_by(recording: bytes) -> Counter[tuple[str, str, str]]:
    """(origin, service + purpose, API) -> count."""
    counts: Counter[tuple[str, str, str]] = Counter()
    entries, unreadable = recorded_requests(recording)
    if unreadable:
        print(f"warning: {unreadable} unreadable fragment(s) in moto's recording")
    for e in entries:
        headers = {k.lower(): v for k, v in e.get("headers", {}).items()}
        who = origin(headers)
        auth = headers.get("authorization", "")
        if "/s3/aws4_request" in auth:
            counts[(who, "S3", s3_api(e.get("method", ""), e.get("url", ""), headers))] += 1
            continue
        kind = classify_queue(e)
        if kind is None:
            continue
        purpose, api = kind
        if who == "other" and purpose in ("pipeline", "control", "events"):
            # kombu long-polls with its own HTTP client, without the SDK's user agent;
            # only the workers receive from these queues
            who = "workers"
        service = "SNS" if api.startswith("SNS.") else "SQS"
        counts[(who, f"{service} {purpose}", api.removeprefix("SNS."))] += 1
    return counts


# -------------------------------------------------------------------- the CPU
def worker_pids(stack: LocalStack) -> list[int]:
    return [p.popen.pid for p in stack.procs if p.name.startswith(("worker", "beat"))]


def beat_pid(stack: LocalStack) -> int:
    return next((p.popen.pid for p in stack.procs if p.name == "beat"), -1)


def cpu_seconds(pids: list[int]) -> float:
    """user + system of these processes themselves (not their reaped children: the
    models a worker started are its children)."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


class CpuGroups:
    """CPU-seconds of everything else on the two cores, to say where they went: the
    emulator (moto), the models (the workers' children, live and reaped) and this
    process (the Lambda bridge, and the script's own drops and polling)."""

    def __init__(self, stack: LocalStack, workers: list[int]) -> None:
        self.moto = next(p.popen.pid for p in stack.procs if p.name == "moto")
        self.workers = workers

    def _models(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for pid in self.workers:
            proc = psutil.Process(pid)
            t = proc.cpu_times()
            found[-pid] = t.children_user + t.children_system  # reaped models
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    found[child.pid] = c.user + c.system
        return found

    def sample(self) -> dict[str, Any]:
        me, moto = psutil.Process().cpu_times(), psutil.Process(self.moto).cpu_times()
        return {
            "moto": moto.user + moto.system,
            "models": self._models(),
            "bridge and driver": me.user + me.system,
        }

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        models = sum(v - before["models"].get(k, 0.0) for k, v in after["models"].items())
        return {
            "moto": after["moto"] - before["moto"],
            "models": models,
            "bridge and driver": after["bridge and driver"] - before["bridge and driver"],
        }


# --------------------------------------------------------------- the pipeline
@dataclass
class PipelineRun:
    mode: str
    files: int
    seconds: float
    cpu: float  # the workers' CPU-seconds during the run, less the idle rate
    cpu_idle_rate: float  # CPU-seconds per second while idle
    requests: Counter[tuple[str, str, str]]  # per run, less the idle rate
    errors: int = 0
    peak_rss: dict[str, int] = field(default_factory=dict)
    others: dict[str, float] = field(default_factory=dict)  # CPU-seconds, see CpuGroups


def pipeline_storm(files: int, rows: int, warm: bool, idle: float) -> PipelineRun:
    state = Path(tempfile.mkdtemp(prefix="scorefleet-bench-cost-"))
    os.environ["MOTO_RECORDER_FILEPATH"] = str(state / "moto-recording.jsonl")
    os.environ["AWS_SDK_UA_APP_ID"] = APPID_LAMBDA  # the bridge runs in this process
    extra = {
        "AWS_SDK_UA_APP_ID": APPID_WORKER,
        "SCOREFLEET_WARM_IDLE_SECONDS": "60" if warm else "0",
        "SCOREFLEET_WARM_MAX_PER_IMAGE": "8",
        "SCOREFLEET_MAX_LIVE_MODELS": "8",
    }
    stack = LocalStack(state, workers=2, concurrency=4, flower=False, extra_env=extra)
    stack.start()
    try:
        stack.wait_worker_ready()
        s3 = driver_s3(stack.endpoint)
        pids = worker_pids(stack)
        if warm:  # the models are started before the storm, as in a fleet already busy
            warmup = [f"cost/warmup/w{i}.csv" for i in range(8)]
            for key in warmup:
                s3.put_object(
                    Bucket=BUCKET,
                    Key=f"in/{key}",
                    Body=body(0, rows),
                    Tagging=encode_tags({"model_image": IRIS_IMAGE}),
                )
            wait_outputs(s3, "out/cost/warmup/", len(warmup), 300)
        time.sleep(3)  # the last steps' events and acknowledgements settle
        recorder(stack, "reset-recording")
        recorder(stack, "start-recording")
        c0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(idle)
        idle_cpu, idle_s = cpu_seconds(pids) - c0, time.monotonic() - t0
        recorder(stack, "stop-recording")
        idle_req = requests_by(recorder(stack, "download-recording"))

        recorder(stack, "reset-recording")
        recorder(stack, "start-recording")
        payloads = {f"cost/storm/f{i:04d}.csv": body(i, rows) for i in range(files)}
        tags = encode_tags({"model_image": IRIS_IMAGE})
        groups = CpuGroups(stack, [p for p in pids if p != beat_pid(stack)])
        g0 = groups.sample()
        c0, t0, p0 = cpu_seconds(pids), time.monotonic(), time.perf_counter()
        for key, data in payloads.items():
            s3.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=data, Tagging=tags)
        seen = wait_outputs(s3, "out/cost/storm/", files, 1800)
        seconds = max(seen.values()) - p0
        time.sleep(3)  # the teardowns after the last upload
        cpu, window = cpu_seconds(pids) - c0, time.monotonic() - t0
        others = CpuGroups.spent(g0, groups.sample())
        recorder(stack, "stop-recording")
        load_req = requests_by(recorder(stack, "download-recording"))
        errors = sum(k.endswith(".error") for k in seen)
    finally:
        stack.stop()
    rate = idle_cpu / idle_s
    net: Counter[tuple[str, str, str]] = Counter()
    for k in set(load_req) | set(idle_req):
        n = load_req[k] - idle_req[k] * window / idle_s
        if n > 0.5:
            net[k] = round(n)
    return PipelineRun(
        "warm" if warm else "pod per file",
        files,
        seconds,
        max(0.0, cpu - rate * window),
        rate,
        net,
        errors,
        others=others,
    )


def pipeline_large(rows: int) -> tuple[float, float, dict[str, int]]:
    """(seconds drop -> .scoreout, workers' CPU-seconds, peak RSS by process)."""
    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-bench-cost-large-"))
    src = tmp / "large.csv"
    write_rows(src, rows)
    os.environ.pop("MOTO_RECORDER_FILEPATH", None)
    extra = {"AWS_SDK_UA_APP_ID": APPID_WORKER}
    stack = LocalStack(tmp / "state", workers=1, concurrency=4, flower=False, extra_env=extra)
    stack.start()
    try:
        stack.wait_worker_ready()
        s3 = driver_s3(stack.endpoint)
        pids = worker_pids(stack)
        worker = next(p.popen.pid for p in stack.procs if p.name == "worker0")
        Path(f"/proc/{worker}/clear_refs").write_text("5")
        c0, t0 = cpu_seconds(pids), time.perf_counter()
        s3.upload_file(
            str(src),
            BUCKET,
            "in/cost/large.csv",
            ExtraArgs={"Tagging": encode_tags({"model_image": IRIS_IMAGE})},
        )
        model_peak = 0
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            for child in psutil.Process(worker).children(recursive=True):
                with contextlib.suppress(OSError, RuntimeError, psutil.Error):
                    model_peak = max(model_peak, vm_hwm(child.pid))
            try:
                s3.head_object(Bucket=BUCKET, Key="out/cost/large.csv.scoreout")
                break
            except s3.exceptions.ClientError:
                time.sleep(0.05)
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - c0
        peaks = {"worker": vm_hwm(worker), "model": model_peak}
    finally:
        stack.stop()
    return seconds, cpu, peaks


# ----------------------------------------------------------------------- main


def run_figures(run: PipelineRun) -> dict[str, Any]:
    """One storm's figures per file: what the table prints and ``--json`` writes."""
    requests: dict[str, Counter[str]] = {}
    for (who, service, api), n in run.requests.items():
        requests.setdefault(who, Counter())[f"{service} {api}"] += n / run.files
    return {
        "files_per_minute": run.files / run.seconds * 60,
        "errors": run.errors,
        "cpu_ms_per_file": {
            "workers": run.cpu / run.files * 1000,
            **{k: v / run.files * 1000 for k, v in run.others.items()},
        },
        "requests_per_file": {who: dict(c) for who, c in requests.items()},
    }


def per_file_table(run: PipelineRun, fig: dict[str, Any]) -> None:
    """``fig``: :func:`run_figures` of ``run``."""
    print(
        f"\n{run.mode}: {run.files} files in {run.seconds:.1f} s = "
        f"{fig['files_per_minute']:.0f} files/minute; {run.errors} errors"
    )
    cpu = dict(fig["cpu_ms_per_file"])
    print(
        f"  workers' own CPU: {cpu.pop('workers'):.0f} ms per file "
        f"(idle burn of {run.cpu_idle_rate * 1000:.1f} ms per second subtracted)"
    )
    if cpu:
        spent = ", ".join(f"{k} {v:.0f} ms" for k, v in cpu.items())
        print(f"  the rest of the 2 cores per file (not idle-corrected): {spent}")
    for who in ("workers", "lambda", "driver", "other"):
        c = fig["requests_per_file"].get(who)
        if not c:
            continue
        print(f"  {who}: {sum(c.values()):.1f} requests per file")
        for name, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"    {n:6.2f}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=150)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--large-rows", type=int, default=1_000_000)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--only", choices=("storm", "large", "both"), default="both")
    ap.add_argument(
        "--json", type=Path, help="also write the figures to this file (for bench.plot_cost)"
    )
    ap.add_argument(
        "--modes",
        default="warm,pod",
        help="the storm's modes, comma-separated: warm, pod (pod per file); default both",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")
    state = Path(tempfile.mkdtemp(prefix="scorefleet-bench-peers-"))
    figures: dict[str, Any] = {"machine": machine(), "files": args.files, "rows": args.rows}

    if args.only in ("storm", "both"):
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes or set(modes) - {"warm", "pod"}:
            ap.error(f"--modes: warm, pod or both, not {args.modes!r}")
        runs = [
            pipeline_storm(args.files, args.rows, warm=mode == "warm", idle=args.idle)
            for mode in modes
        ]
        em = Emulator(state)
        try:
            jobs = []
            for i in range(args.files):
                key = f"in/storm/f{i:04d}.csv"
                em.s3.put_object(Bucket=BUCKET, Key=key, Body=body(i, args.rows))
                jobs.append((key, f"out/storm-a/f{i:04d}.csv"))
            a_s, a_rss = seed003(em, jobs, workers=2)
            _, b_s, b_rss = pyarrow_script(
                em, [(k, o.replace("storm-a", "storm-b")) for k, o in jobs]
            )
        finally:
            em.close()
        figures["storm"] = {run.mode: run_figures(run) for run in runs}
        peers = figures["storm_peers"] = {
            "seed 003": {"files_per_minute": args.files / a_s * 60, "peak_rss_mib": a_rss / 2**20},
            "pyarrow script": {
                "files_per_minute": args.files / b_s * 60,
                "peak_rss_mib": b_rss / 2**20,
            },
        }
        a_rate, b_rate = (peers[p]["files_per_minute"] for p in ("seed 003", "pyarrow script"))
        print(f"\nstorm: {args.files} files x {args.rows} rows dropped at once, iris model")
        for run in runs:
            per_file_table(run, figures["storm"][run.mode])
        print("\npeers, same emulator and model, same run:")
        print(
            f"  seed 003 (2 workers: SQS, whole object, pandas, in process): "
            f"{a_s:.1f} s = {a_rate:.0f} files/minute, peak RSS "
            f"{a_rss / 2**20:.0f} MiB per worker"
        )
        print(
            f"  pyarrow script (one process, a file at a time): {b_s:.1f} s = "
            f"{b_rate:.0f} files/minute, peak RSS {b_rss / 2**20:.0f} MiB"
        )
        for mode, fig in figures["storm"].items():
            r = fig["files_per_minute"]
            print(
                f"  scorefleet {mode}: {r:.0f} files/minute = {r / a_rate:.2f}x "
                f"seed 003, {r / b_rate:.2f}x the pyarrow script"
            )

    if args.only in ("large", "both"):
        p_s, p_cpu, peaks = pipeline_large(args.large_rows)
        src = state / "large.csv"
        write_rows(src, args.large_rows)
        em = Emulator(state)
        try:
            em.s3.upload_file(str(src), BUCKET, "in/large.csv")
            a_s, a_rss = seed003(em, [("in/large.csv", "out/large-a.csv")], workers=1)
            b_s, b_loop, b_rss = pyarrow_script(em, [("in/large.csv", "out/large-b.csv")])
        finally:
            em.close()
        print(f"\none file of {args.large_rows:,} rows ({src.stat().st_size / 1e6:.1f} MB):")
        print(
            f"  scorefleet: {p_s:.2f} s drop -> .scoreout (model start included), workers' CPU "
            f"{p_cpu:.2f} s, peak RSS worker {peaks['worker'] / 2**20:.0f} MiB + model "
            f"{peaks['model'] / 2**20:.0f} MiB"
        )
        print(f"  seed 003: {a_s:.2f} s, peak RSS {a_rss / 2**20:.0f} MiB")
        print(
            f"  pyarrow script: {b_s:.2f} s with Python and the model's start "
            f"({b_loop:.2f} s without), peak RSS {b_rss / 2**20:.0f} MiB"
        )
        print(
            f"  ratio scorefleet / pyarrow script: {p_s / b_s:.2f}x; "
            f"/ seed 003: {p_s / a_s:.2f}x (seed 003's worker was started before the file)"
        )
        figures["large"] = {
            "rows": args.large_rows,
            "seconds": {"scorefleet": p_s, "seed 003": a_s, "pyarrow script": b_s},
            "workers_cpu_s": p_cpu,
            "peak_rss_mib": {k: v / 2**20 for k, v in peaks.items()},
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
