"""Kubernetes API calls per file, by verb: a scored file and each failure class.

Runs the kubernetes backend against the emulated API server with the fake kubelet
(tests/helpers/k8s.py) and makes, per file, the backend calls the chain makes:
``tasks.launch`` (retried while the failure is transient, up to RETRY_MAX times),
the model is scored over HTTP, ``tasks.upload`` reads the model's logs when the
failure carries none, and ``tasks.teardown`` deletes the pod. The counts come from
the backend's own counter (every request of its kubernetes ApiClient) and are
checked against the requests the API server saw.

    python -m bench.k8s_calls [--retry-max 2]

tests/e2e/test_e2e_kubernetes.py checks the same figures through the whole chain
(Lambda -> Celery worker -> pod) for a scored file, an API 503 and an
unschedulable pod.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.common import machine
from scorefleet.errors import describe, is_transient
from scorefleet.settings import ModelSpec, load
from tests.helpers import make_job
from tests.helpers.k8s import FakeApiServer, Recorded, calls_for, fake_cluster, k8s_catalog
from workers.backends.kubernetes import KubernetesBackend, pod_name
from workers.localstack.stack import free_port
from workers.scoring.batches import Batch
from workers.scoring.protocols.calls import CallLimits
from workers.scoring.protocols.sagemaker import SageMakerProtocol

VERBS = ("create pods", "watch pods", "get pods/log", "delete pods", "list pods", "get pods")
CSV = b"a,b,c\n" + b"".join(b"%d,2,3\n" % i for i in range(100))

# (file, image, fault injected into the API server, cluster)
Scenario = tuple[str, str, Callable[[FakeApiServer, str], None] | None, str]


def create_503(api: FakeApiServer, pod: str) -> None:
    api.fail(503, lambda r: r.method == "POST" and _named(r) == pod)


def watch_429(api: FakeApiServer, pod: str) -> None:
    api.fail(429, lambda r: r.query.get("fieldSelector") == f"metadata.name={pod}")


def _named(rec: Recorded) -> str | None:
    return ((rec.body or {}).get("metadata") or {}).get("name")


SCENARIOS: list[Scenario] = [
    ("scored", "test/ok:1", None, "emu"),
    ("ErrImagePull", "test/pull-error:1", None, "emu"),
    ("ImagePullBackOff", "test/pull-backoff:1", None, "emu"),
    ("InvalidImageName", "test/bad-name:1", None, "emu"),
    ("exit before ready", "test/crash:1", None, "emu"),
    ("CrashLoopBackOff", "test/crashloop:1", None, "emu"),
    ("OOMKilled", "test/oom:1", None, "emu"),
    ("never ready (launch timeout)", "test/never-ready:1", None, "emu"),
    ("unschedulable (retried)", "test/unschedulable:1", None, "emu"),
    ("API 503 on create, then scored", "test/ok:1", create_503, "emu"),
    ("API 429 on watch, then scored", "test/ok:1", watch_429, "emu"),
    ("unknown cluster", "test/ok:1", None, "nowhere"),
]


def one_file(
    backend: KubernetesBackend, api: FakeApiServer, scenario: Scenario, retry_max: int
) -> tuple[str, dict[str, int], float]:
    label, image, fault, cluster = scenario
    job = make_job(
        "sf-" + uuid.uuid4().hex[:20],
        model_image=image,
        k8s_cluster=cluster,
        k8s_namespace="scoring",
    )
    spec = backend.settings.models.spec(image)
    if fault is not None:
        fault(api, pod_name(job.run_id))
    before = backend.calls.snapshot()
    t0 = time.perf_counter()
    failure: Exception | None = None
    for attempt in range(retry_max + 1):  # tasks.launch and its retries (delays skipped)
        try:
            endpoint = backend.launch(job, spec)
            failure = None
            break
        except Exception as exc:
            failure = exc
            if not (is_transient(exc) and attempt < retry_max):
                break
    if failure is None:  # tasks.score: HTTP to the pod only
        spec = ModelSpec(image="bench/k8s:1")
        client = SageMakerProtocol(endpoint.url, spec, CallLimits(timeout=10, pool_size=1))
        rows = client.score(Batch(1, 100, "data rows 1-100", ("a", "b", "c"), csv=CSV)).rows
        client.close()
        outcome = f".scoreout ({rows} rows)"
    else:  # tasks.upload reads the logs when the failure has none
        if not getattr(failure, "model_logs", ""):
            backend.logs(job, backend.settings.models.log_lines)
        kind, _ = describe(failure)
        outcome = f".error ({kind}, {attempt + 1} attempt{'s' if attempt else ''})"
    backend.teardown(job)  # tasks.teardown
    seconds = time.perf_counter() - t0
    calls = backend.calls.since(before)
    seen = calls_for(api, pod_name(job.run_id))
    assert seen == calls, f"{label}: the API server saw {seen}, the backend counted {calls}"
    return outcome, calls, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--retry-max", type=int, default=2, help="SCOREFLEET_RETRY_MAX to replay")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="scorefleet-k8s-calls-"))
    env = {
        "SCOREFLEET_INPUT_URI": "s3://bench-in/in/",
        "SCOREFLEET_OUTPUT_URI": "s3://bench-in/out/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        "SCOREFLEET_LAUNCH_BACKEND": "kubernetes",
        "SCOREFLEET_MODEL_CATALOG": json.dumps(k8s_catalog(free_port())),
        "SCOREFLEET_LAUNCH_TIMEOUT": "3",
        "SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT": "1",
        "SCOREFLEET_DEFAULT_K8S_CLUSTER": "emu",
        "SCOREFLEET_DEFAULT_K8S_NAMESPACE": "scoring",
    }
    with fake_cluster(tmp / "logs", load(env)) as (api, node):
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        env["SCOREFLEET_K8S_CLUSTERS"] = json.dumps({"emu": {"kubeconfig": str(kubeconfig)}})
        backend = KubernetesBackend(load(env))
        print(f"Kubernetes API calls per file (kmock emulator + fake kubelet; {machine()})")
        print(f"retries of a transient launch failure: {args.retry_max} (SCOREFLEET_RETRY_MAX)\n")
        print("| file | outcome | " + " | ".join(VERBS) + " | total | seconds |")
        print("|---|---|" + "---:|" * (len(VERBS) + 2))
        for scenario in SCENARIOS:
            outcome, calls, seconds = one_file(backend, api, scenario, args.retry_max)
            cells = " | ".join(str(calls.get(v, 0)) for v in VERBS)
            extra = set(calls) - set(VERBS)
            assert not extra, extra
            print(
                f"| {scenario[0]} | {outcome} | {cells} | {sum(calls.values())} | {seconds:.2f} |"
            )
        # the reaper: pods a killed worker left behind
        leftovers = []
        for _ in range(5):
            job = make_job(
                "sf-" + uuid.uuid4().hex[:20],
                model_image="test/ok:1",
                k8s_cluster="emu",
                k8s_namespace="scoring",
            )
            backend.launch(job, backend.settings.models.spec("test/ok:1"))
            leftovers.append(job.run_id)
        reaper = KubernetesBackend(load(env), worker="beat")
        removed = reaper.reap(0, lambda _run: False)
        assert sorted(removed) == sorted(leftovers), removed
        calls = reaper.calls.snapshot()
        print(
            f"\nreaper run (1 cluster x 1 namespace, {len(leftovers)} pods left behind): "
            + ", ".join(f"{v}={n}" for v, n in sorted(calls.items()))
        )
        print("an idle reaper run: list pods=1 per configured cluster and namespace")
        for run in leftovers:
            node.wait_gone(run)


if __name__ == "__main__":
    main()
