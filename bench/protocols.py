"""Each model protocol through the local stack, against its server called directly.

    python -m bench.protocols [--rows 100000] [--only v2,json] [--payload-mb 0.05] [--runs 3]
                              [--before DIR]

For each protocol, one iris file of ``--rows`` rows goes through the whole local
stack (S3 emulator, the Lambda bridge, a worker, a model process); its scoring step's
time (the worker's "scored N rows ... in S s") gives rows/s. In the same run the same
server, started by this script, is called directly by a minimal client (urllib3 and
threads) that sends the same mini-batches -- the same bytes, built before the clock
starts -- with the same concurrency (SCOREFLEET_MAX_IN_FLIGHT), and reads the answers
(after one untimed call, so the server's warm-up counts against the stack only).
The ratio stack / direct is what scorefleet costs on top of the model server. The
worker's CPU per 1,000 rows is its process's CPU time (user + system, psutil) from
the drop to the outcome, over the rows; a small file of the same image goes first and
leaves its model warm (SCOREFLEET_WARM_IDLE_SECONDS), so that the measured file's CPU is
not the launch's (the readiness probes of a server that takes seconds to start).

``--before DIR`` (a worktree of an earlier commit, e.g. the one before issue 25) runs
a second stack whose worker runs that commit's code (PYTHONPATH=DIR) and models (its
examples/catalog.json, from DIR), so before and after are measured in the same run,
alternating with the direct client.

Servers: sagemaker the iris example, v2 MLServer 1.7.1 (its own virtualenv,
tests/helpers/servers/venvs.py), json the Flask app and KServe's ModelServer, lambda the
handler under awslambdaric behind workers/localstack/lambda_emulator.py (before issue
25: behind workers/localstack/lambda_rie.py), sas-executions the executions server.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import urllib3

from bench.common import Client, local_stack, machine
from scorefleet.settings import ModelSpec, load
from tests.helpers.servers import venvs
from tests.helpers.servers.catalog import protocol_catalog
from workers.localstack.stack import LocalStack, free_port, iris_catalog
from workers.scoring.batches import Batch
from workers.scoring.formats.csvsplit import CsvBatcher
from workers.scoring.protocols import CallLimits, open_protocol, probe
from workers.scoring.protocols.aws_lambda import INVOKE_PATH, LambdaProtocol, wrap
from workers.scoring.protocols.json_http import JsonProtocol
from workers.scoring.protocols.v2 import V2Protocol

IN_FLIGHT = 4
CASES = {  # name -> image
    "sagemaker": "scorefleet-examples/iris-sagemaker:1",
    "v2": "scorefleet-examples/iris-v2:1",
    "json (Flask)": "scorefleet-examples/iris-flask:1",
    "json (KServe)": "scorefleet-examples/iris-kserve:1",
    "lambda": "scorefleet-examples/iris-lambda:1",
    "sas-executions": "scorefleet-examples/iris-sas:1",
}


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


def batches(data: bytes, max_bytes: int) -> list[Batch]:
    b = CsvBatcher([data], max_bytes, header_mode="auto", send_header=True)
    out: list[Batch] = []
    cols: tuple[str, ...] | None = None
    for raw in b:
        assert b.header is not None
        cols = cols or tuple(next(csv.reader(io.StringIO(b.header.decode()))))
        out.append(
            Batch(raw.first_row, raw.rows, raw.span, cols, csv=raw.data, csv_header=b.header)
        )
    return out


# ---------------------------------------------------------------- direct client
def requests_for(spec: ModelSpec, url: str, bs: list[Batch]) -> list[Callable[[Any], None]]:
    """One callable per request the protocol would make, bodies built now."""
    proto = open_protocol(url, spec, CallLimits())
    calls: list[Callable[[Any], None]] = []
    try:
        if spec.protocol in ("", "sagemaker"):
            for b in bs:
                body = b.as_csv(header=True)
                calls.append(lambda pool, body=body: _post(pool, "/invocations", body, "text/csv"))
        elif isinstance(proto, V2Protocol):
            path = f"{proto.options.model_path}/infer"
            for b in bs:
                body = json.dumps(proto.request(b)).encode()
                calls.append(lambda pool, body=body: _post(pool, path, body))
        elif isinstance(proto, JsonProtocol):
            for b in bs:
                body = json.dumps(proto.request_body(b)).encode()
                path = proto.options.path
                calls.append(lambda pool, body=body, path=path: _post(pool, path, body))
        elif isinstance(proto, LambdaProtocol):
            for b in bs:
                for rec in b.as_records():
                    body = json.dumps(wrap(rec, proto.options.event)).encode()
                    calls.append(lambda pool, body=body: _post(pool, INVOKE_PATH, body))
        else:  # sas-executions: submit, poll, fetch
            for b in bs:
                fields = {"file": ("batch.csv", b.as_csv(header=True), "text/csv")}
                body, ctype = urllib3.encode_multipart_formdata(fields)
                calls.append(lambda pool, body=body, ctype=ctype: _execution(pool, body, ctype))
    finally:
        proto.close()
    return calls


def _post(pool: Any, path: str, body: bytes, ctype: str = "application/json") -> None:
    r = pool.request("POST", path, body=body, headers={"Content-Type": ctype})
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}: {r.data[:200]!r}")
    if ctype == "application/json":
        json.loads(r.data)


def _execution(pool: Any, body: bytes, ctype: str) -> None:
    r = pool.request("POST", "/executions", body=body, headers={"Content-Type": ctype})
    token = json.loads(r.data)["id"]
    delay = 0.05
    while (q := pool.request("GET", f"/query/{token}")).status == 404:
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    if q.status != 200:
        raise RuntimeError(f"/query: HTTP {q.status}")


def direct(spec: ModelSpec, bs: list[Batch], rows: int) -> float:
    port = free_port()
    command = str(spec.extra["command"])
    argv = shlex.split(command.format(port=port, python=sys.executable, host="127.0.0.1"))
    # the environment and directory the local backend gives it (catalog env, cwd)
    env = {**os.environ, **{k: str(v) for k, v in (spec.extra.get("env") or {}).items()}}
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=spec.extra.get("cwd") or None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not probe(url, spec, 1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{spec.image}: the server did not start")
            time.sleep(0.2)
        calls = requests_for(spec, url, bs)
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=IN_FLIGHT, block=True)
        calls[0](pool)  # one untimed call first: the server's own warm-up is not counted
        with ThreadPoolExecutor(IN_FLIGHT) as ex:
            t0 = time.perf_counter()
            list(ex.map(lambda c: c(pool), calls))
            took = time.perf_counter() - t0
        pool.close()
        return rows / took
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ the stack
def worker_cpu(stack: LocalStack) -> float:
    """CPU seconds (user + system) of the stack's worker process so far."""
    proc = next(p for p in stack.procs if p.name == "worker0")
    times = psutil.Process(proc.popen.pid).cpu_times()
    return float(times.user + times.system)


def through_stack(
    client: Client, key: str, path: Path, image: str, rows: int
) -> tuple[float, float, float]:
    """(rows/s of the scoring step, wall seconds from drop to outcome, the worker's CPU
    milliseconds per 1,000 rows). A small file of the image goes first: its model is
    then parked warm (SCOREFLEET_WARM_IDLE_SECONDS), so the measured file's CPU is its
    own, not the launch's readiness probes of a slow-starting server."""
    warmup = path.with_name("warmup.csv")
    if not warmup.exists():
        warmup.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:11]))
    client.drop(f"{key[:-4]}-warmup.csv", warmup, image)
    if client.wait(f"{key[:-4]}-warmup.csv", timeout=1800)[0] != ".scoreout":
        raise RuntimeError(f"{key}: the warm-up file was not scored")
    cpu = worker_cpu(client.stack)
    t0 = client.drop(key, path, image)
    suffix, t1, _ = client.wait(key, timeout=1800)
    if suffix != ".scoreout":
        raise RuntimeError(f"{key}: {suffix}")
    cpu_ms = (worker_cpu(client.stack) - cpu) * 1000 / rows * 1000
    log = (client.stack.state_dir / "logs" / "worker0.log").read_text()
    pattern = rf"in/{re.escape(key)}\].*scored {rows} rows in \d+ mini-batches in ([\d.]+)s"
    seconds = float(re.findall(pattern, log)[-1])
    return rows / seconds, t1 - t0, cpu_ms


def before_catalog(before: Path) -> dict[str, Any]:
    """The earlier commit's example catalog, its commands run from its checkout."""
    entries = json.loads((before / "examples" / "catalog.json").read_text())
    return {image: {**entry, "cwd": str(before)} for image, entry in entries.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--only", default="")
    p.add_argument("--payload-mb", type=float, default=0.05)
    p.add_argument("--runs", type=int, default=1, help="median of this many, each way")
    p.add_argument("--before", type=Path, default=None, help="a worktree of an earlier commit")
    a = p.parse_args()
    names = [n for n in CASES if not a.only or any(o in n for o in a.only.split(","))]
    if any("v2" in n or "KServe" in n for n in names):
        for name in venvs.NAMES:
            venvs.ensure(name)
    catalog = {**iris_catalog(), **protocol_catalog()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-protocols-"))
    path = iris_file(a.rows, tmp / "iris.csv")
    data = path.read_bytes()
    max_bytes = int(a.payload_mb * 1024 * 1024)
    bs = batches(data, max_bytes)
    settings = load(
        {
            "SCOREFLEET_INPUT_URI": "s3://bench/in/",
            "SCOREFLEET_OUTPUT_URI": "s3://bench/out/",
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "*",
            "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog),
        }
    )
    print(f"# {machine()}")
    print(
        f"# {a.rows:,d} iris rows, {len(bs)} mini-batches of <= {a.payload_mb:g} MB, "
        f"{IN_FLIGHT} in flight, median of {a.runs}"
    )
    env = {
        "SCOREFLEET_MAX_PAYLOAD_MB": str(a.payload_mb),
        "SCOREFLEET_MAX_IN_FLIGHT": str(IN_FLIGHT),
        "SCOREFLEET_LAUNCH_TIMEOUT": "300",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,test/",
        # the model of the warm-up file waits for the measured one (through_stack)
        "SCOREFLEET_WARM_IDLE_SECONDS": "300",
    }
    results = []
    with contextlib.ExitStack() as stacks:
        now = stacks.enter_context(
            local_stack(workers=1, concurrency=2, catalog=catalog, extra_env=env)
        )
        clients = {"after": Client(now)}
        if a.before is not None:
            then = stacks.enter_context(
                local_stack(
                    workers=1,
                    concurrency=2,
                    catalog={**before_catalog(a.before), **iris_catalog()},
                    extra_env={**env, "PYTHONPATH": str(a.before)},
                )
            )
            clients = {"before": Client(then), **clients}
        for name in names:
            image = CASES[name]
            spec = settings.models.spec(image)
            key = f"bench/{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"
            runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in clients}
            direct_runs = []
            for run in range(a.runs):  # alternating, so a busy moment hits all
                for which, client in clients.items():
                    got = through_stack(client, f"{key}-{which}-{run}.csv", path, image, a.rows)
                    runs[which].append(got)
                direct_runs.append(direct(spec, bs, a.rows))
            direct_rps = statistics.median(direct_runs)
            for which, got in runs.items():
                rps = statistics.median(r for r, _, _ in got)
                wall = statistics.median(w for _, w, _ in got)
                cpu = statistics.median(c for _, _, c in got)
                results.append((name, which, rps, direct_rps, cpu))
                print(
                    f"{name:16s} {which:6s} stack {rps:10,.0f} rows/s   direct "
                    f"{direct_rps:10,.0f} rows/s   ratio {rps / direct_rps:5.2f}   worker CPU "
                    f"{cpu:6.1f} ms/1000 rows   (drop to outcome {wall:.1f}s)",
                    flush=True,
                )
    print(
        "\n| protocol (server) | code | through the stack | direct client | ratio "
        "| worker CPU per 1,000 rows |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, which, s_, d, cpu in results:
        print(
            f"| {name} | {which} | {s_:,.0f} rows/s | {d:,.0f} rows/s | {s_ / d:.2f} "
            f"| {cpu:.1f} ms |"
        )


if __name__ == "__main__":
    main()
