"""The kubernetes launch backend against kmock's KubernetesEmulator (real HTTP) with
the real kubernetes client, and a fake kubelet that runs the test models as local
processes, each on a loopback IP of its own (tests/helpers/k8s.py)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest
from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

from scorefleet.errors import ModelError, Rejected, is_transient
from scorefleet.job import Failure
from scorefleet.settings import ModelSpec, load
from tests.helpers import REPO, launched, make_job
from tests.helpers.k8s import FakeApiServer, FakeKubelet, fake_cluster, image_id_of, k8s_catalog
from tests.helpers.protocols import invoke, sagemaker
from workers.backends import make_backend
from workers.backends.kubernetes import (
    FLEET_LABEL,
    RUN_LABEL,
    ClusterConfigError,
    ImagePullError,
    KubernetesApiError,
    KubernetesBackend,
    PodUnschedulable,
    api_verb,
    label_value,
    pod_manifest,
    pod_name,
    pod_state,
)
from workers.localstack.stack import free_port

PORT = free_port()  # the container port of every test model (each pod has its own IP)
BASE = {
    "SCOREFLEET_INPUT_URI": "s3://bucket-in/in/",
    "SCOREFLEET_OUTPUT_URI": "s3://bucket-in/out/",
    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/,scorefleet-examples/",
    "SCOREFLEET_LAUNCH_BACKEND": "kubernetes",
    "SCOREFLEET_MODEL_CATALOG": json.dumps(k8s_catalog(PORT)),
    "SCOREFLEET_LAUNCH_TIMEOUT": "2",
    "SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT": "1",
    "SCOREFLEET_MODEL_LOG_LINES": "10",
    "SCOREFLEET_DEFAULT_K8S_CLUSTER": "emu",
    "SCOREFLEET_DEFAULT_K8S_NAMESPACE": "scoring",
}


@dataclass
class Cluster:
    api: FakeApiServer
    node: FakeKubelet
    kubeconfig: Path

    def env(self, clusters: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
        clusters = clusters or {"emu": {"kubeconfig": str(self.kubeconfig)}}
        return {**BASE, "SCOREFLEET_K8S_CLUSTERS": json.dumps(clusters), **extra}

    def backend(self, clusters: dict[str, Any] | None = None, **extra: str) -> KubernetesBackend:
        backend = make_backend(load(self.env(clusters, **extra)))
        assert isinstance(backend, KubernetesBackend)
        return backend


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("k8s")
    with fake_cluster(tmp / "logs", load(BASE)) as (api, node):
        yield Cluster(api, node, api.write_kubeconfig(tmp / "kubeconfig"))


def new_job(image: str, ns: str = "scoring", k8s_cluster: str = "emu", **fields: Any):
    run_id = "sf-" + uuid.uuid4().hex[:20]
    return make_job(run_id, model_image=image, k8s_cluster=k8s_cluster, k8s_namespace=ns, **fields)


def spec(backend: KubernetesBackend, image: str) -> ModelSpec:
    return backend.settings.models.spec(image)


def assert_gone(cluster: Cluster, name: str) -> None:
    assert name not in cluster.api.pod_names()
    cluster.node.wait_gone(name)


# ------------------------------------------------------------------ the pod
def test_pod_manifest_is_locked_down_and_configurable():
    settings = load(
        {
            **BASE,
            "SCOREFLEET_K8S_IMAGE_PULL_SECRETS": "regcred",
            "SCOREFLEET_K8S_NODE_SELECTOR": '{"workload": "scoring"}',
            "SCOREFLEET_K8S_TOLERATIONS": '[{"key": "scoring", "operator": "Exists"}]',
            "SCOREFLEET_K8S_SERVICE_ACCOUNT": "model-runner",
            "SCOREFLEET_K8S_ACTIVE_DEADLINE": "3600",
            "SCOREFLEET_MODEL_CATALOG": json.dumps(
                {
                    "reg/big*": {
                        "port": 9000,
                        "resources": {"requests": {"cpu": "4", "nvidia.com/gpu": 1}},
                        "node_selector": {"gpu": "a10"},
                        "args": ["serve"],
                        "env": {"OMP_NUM_THREADS": 2},
                        "run_as_user": 1000,
                    }
                }
            ),
        }
    )
    job = new_job("reg/small:1", key="in/2026/q3 été.csv", version_id="v7")
    pod = pod_manifest(job, settings.models.spec("reg/small:1"), settings, fleet="q", worker="w-1")
    meta, pspec = pod["metadata"], pod["spec"]
    assert meta["name"] == job.run_id and meta["namespace"] == "scoring"
    assert meta["labels"][FLEET_LABEL] == "q" and meta["labels"][RUN_LABEL] == job.run_id
    assert meta["labels"]["scorefleet.io/pipeline-id"] == job.pipeline_id
    assert meta["labels"]["scorefleet.io/worker"] == "w-1"
    assert meta["annotations"]["scorefleet.io/source"] == "s3://b/in/2026/q3 été.csv"
    assert meta["annotations"]["scorefleet.io/image"] == "reg/small:1"
    assert pspec["automountServiceAccountToken"] is False
    assert pspec["activeDeadlineSeconds"] == 3600 and pspec["restartPolicy"] == "Always"
    assert pspec["imagePullSecrets"] == [{"name": "regcred"}]
    assert pspec["nodeSelector"] == {"workload": "scoring"}
    assert pspec["tolerations"] == [{"key": "scoring", "operator": "Exists"}]
    assert pspec["serviceAccountName"] == "model-runner"
    assert pspec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pspec["containers"]
    assert c["image"] == "reg/small:1" and c["ports"][0]["containerPort"] == 8080
    assert c["readinessProbe"]["httpGet"] == {"path": "/ping", "port": 8080}
    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert (
        sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
    )
    # a catalog entry overrides the defaults for its images
    big = pod_manifest(job, settings.models.spec("reg/big:2"), settings, fleet="q", worker="w")
    (c,) = big["spec"]["containers"]
    assert c["ports"][0]["containerPort"] == 9000 and c["args"] == ["serve"]
    assert c["resources"] == {"requests": {"cpu": "4", "nvidia.com/gpu": "1"}}
    assert c["env"] == [{"name": "OMP_NUM_THREADS", "value": "2"}]
    assert c["securityContext"]["runAsUser"] == 1000
    assert big["spec"]["nodeSelector"] == {"gpu": "a10"}
    # both are valid pods for the client's V1Pod model (the API's schema; unknown fields fail)
    for manifest in (pod, big):
        V1Pod.model_validate(manifest)


def test_pod_names_and_label_values():
    assert pod_name("sf-0123456789abcdef0123") == "sf-0123456789abcdef0123"
    rerun = "sf-0123456789abcdef0123-r17000000001a2b"
    assert pod_name(rerun) == rerun
    odd = pod_name("SF_Weird/Run.ID" * 6)
    assert odd == pod_name("SF_Weird/Run.ID" * 6) and len(odd) <= 63
    assert odd.replace("-", "").isalnum() and odd.islower()
    assert label_value("-worker_1.example.com-") == "worker_1.example.com"
    assert len(label_value("x" * 100)) == 63


def test_api_verbs():
    assert api_verb("POST", "http://h/api/v1/namespaces/n/pods") == "create pods"
    assert api_verb("GET", "http://h/api/v1/namespaces/n/pods?watch=true&x=1") == "watch pods"
    assert api_verb("GET", "http://h/api/v1/namespaces/n/pods?labelSelector=a") == "list pods"
    assert api_verb("GET", "http://h/api/v1/namespaces/n/pods/p") == "get pods"
    assert api_verb("GET", "http://h/api/v1/namespaces/n/pods/p/log?tailLines=4") == "get pods/log"
    assert api_verb("DELETE", "http://h/api/v1/namespaces/n/pods/p") == "delete pods"
    assert api_verb("PATCH", "http://h/api/v1/namespaces/n/pods/p/status") == "patch pods/status"


def test_pod_state_reads_the_kubelet_reports():
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    pending = {
        "status": {"phase": "Pending", "containerStatuses": [{"name": "model", "state": waiting}]}
    }
    assert pod_state(pending, "i").summary == "pod Pending, container waiting: ContainerCreating"
    evicted = {"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}}
    assert pod_state(evicted, "i").failure_class == "transient"
    deadline = {"status": {"phase": "Failed", "reason": "DeadlineExceeded", "message": "too long"}}
    assert pod_state(deadline, "i").failure_class == "crash"
    root = {
        "waiting": {"reason": "CreateContainerConfigError", "message": "image will run as root"}
    }
    state = pod_state({"status": {"containerStatuses": [{"name": "model", "state": root}]}}, "i")
    assert state.failure_class == "start" and "will run as root" in str(state.failure)
    assert pod_state({"metadata": {"deletionTimestamp": "x"}}, "i").failure_class == "transient"


@pytest.mark.parametrize(
    ("entry", "probe", "readiness"),
    [
        ({}, {"httpGet": {"path": "/ping", "port": 8080}}, "GET /ping"),
        (
            {"protocol": "v2", "v2": {"model_name": "iris", "model_version": "3"}},
            {"httpGet": {"path": "/v2/models/iris/versions/3/ready", "port": 8080}},
            "GET /v2/models/iris/versions/3/ready",
        ),
        (
            {"protocol": "json", "json": {"path": "/predict", "ready_path": "/health"}},
            {"httpGet": {"path": "/health", "port": 8080}},
            "GET /health",
        ),
        ({"protocol": "lambda"}, {"tcpSocket": {"port": 8080}}, "a connection to port 8080"),
        # seed 000's containers answer GET /ping with a 500: their readiness is GET /
        ({"protocol": "sas-executions"}, {"httpGet": {"path": "/", "port": 8080}}, "GET /"),
    ],
)
def test_the_readiness_probe_is_the_protocols(entry, probe, readiness):
    settings = load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({"reg/m:1": entry})})
    job = new_job("reg/m:1")
    pod = pod_manifest(job, settings.models.spec("reg/m:1"), settings, fleet="q", worker="w")
    (c,) = pod["spec"]["containers"]
    handler = {k: v for k, v in c["readinessProbe"].items() if k in ("httpGet", "tcpSocket")}
    assert handler == probe
    assert c["ports"][0]["containerPort"] == 8080 and "args" not in c
    running = {"containerStatuses": [{"name": "model", "state": {"running": {"startedAt": "t"}}}]}
    state = pod_state({**pod, "status": {"phase": "Running", **running}}, "reg/m:1")
    assert state.summary == f"the model is running but {readiness} does not answer yet"


@pytest.mark.parametrize(
    "image", ["scorefleet-examples/iris-sas:1", "scorefleet-examples/iris-lambda:1"]
)
def test_a_model_ready_by_its_protocols_probe_launches(cluster, image):
    """The SAS-style server answers GET /ping with 500 and the Lambda emulator has no
    health endpoint at all: both start, because the pod's probe and the worker's
    check are their protocol's."""
    from workers.scoring.batches import Batch
    from workers.scoring.protocols import CallLimits, open_protocol

    backend = cluster.backend()
    job = new_job(image)
    try:
        ep = backend.launch(job, spec(backend, image))
        proto = open_protocol(ep.url, spec(backend, image), CallLimits(timeout=20))
        try:
            row = Batch(
                1,
                1,
                "data row 1",
                ("sepal_length", "sepal_width", "petal_length", "petal_width"),
                csv=b"5.1,3.5,1.4,0.2\n",
                csv_header=b"sepal_length,sepal_width,petal_length,petal_width\n",
            )
            assert proto.score(row).as_csv().startswith(b"setosa,")
        finally:
            proto.close()
    finally:
        backend.teardown(job)


# ------------------------------------------------------------ the happy path
def test_launch_score_adopt_teardown(cluster):
    backend = cluster.backend()
    job = new_job("test/ok:1")
    t0 = time.monotonic()
    ep = backend.launch(job, spec(backend, "test/ok:1"))
    assert time.monotonic() - t0 < 5
    assert ep.url == f"http://{ep.handle['pod_ip']}:{PORT}" and ep.handle["pod_ip"] != "127.0.0.1"
    assert ep.handle["pod"] == job.run_id and ep.handle["namespace"] == "scoring"
    client = sagemaker(ep.url)
    assert invoke(client, b"a,b\n1,2\n3,4\n", 1, 2).csv == b"1,2\n2,2\n"
    client.close()
    assert backend.calls.snapshot() == {"create pods": 1, "watch pods": 1}
    # provenance: the digest the kubelet pulled, from the Ready pod the watch saw (issue
    # 27: no call more), the runtime's prefix dropped
    assert ep.image_id == image_id_of("test/ok:1").removeprefix("docker-pullable://")
    assert ep.image_id.startswith("test/ok@sha256:")
    # the same run again (a retried step, another worker): the pod is adopted
    before = backend.calls.snapshot()
    again = backend.launch(job, spec(backend, "test/ok:1"))
    assert again.url == ep.url
    assert backend.calls.since(before) == {"create pods": 1, "watch pods": 1}  # 409, then watch
    assert backend.is_alive(job) and "listening" in backend.logs(job, 5)
    pid = cluster.node.pid(job.run_id)
    assert pid is not None and psutil.pid_exists(pid)
    assert backend.teardown(job) is True
    assert_gone(cluster, job.run_id)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert backend.teardown(job) is False  # NotFound is success
    assert not backend.is_alive(job)
    # the server saw exactly what the client counted, and nothing polled
    seen: dict[str, int] = {}
    for rec in cluster.api.requests():
        if rec.concerns(job.run_id):
            seen[rec.verb] = seen.get(rec.verb, 0) + 1
    assert seen == backend.calls.snapshot()
    assert seen == {
        "create pods": 2,
        "watch pods": 2,
        "get pods": 2,
        "get pods/log": 1,
        "delete pods": 2,
    }


# ------------------------------------------------------------- failures
FAILURES = [
    (
        "test/pull-error:1",
        ImagePullError,
        r"^image test/pull-error:1 could not be pulled: ErrImagePull: .*not found",
        None,
    ),
    (
        "test/pull-backoff:1",
        ImagePullError,
        r"could not be pulled: ImagePullBackOff: Back-off pulling",
        None,
    ),
    ("test/bad-name:1", ImagePullError, r"could not be pulled: InvalidImageName", None),
    ("test/unknown:1", ImagePullError, r"could not be pulled: ErrImagePull", None),
    (
        "test/crash:1",
        ModelError,
        r"^the model exited with code 3 before it was ready",
        "weights file is corrupt",
    ),
    (
        "test/crashloop:1",
        ModelError,
        r"keeps crashing \(CrashLoopBackOff\): it exited with code 3",
        "weights file is corrupt",
    ),
    (
        "test/oom:1",
        ModelError,
        r"killed for running out of memory \(OOMKilled, memory limit 2Gi\)",
        "listening",
    ),
    (
        "test/never-ready:1",
        ModelError,
        r"did not become ready within 4s \(the model is running but GET /ping",
        "503",
    ),
    (
        "test/unschedulable:1",
        PodUnschedulable,
        r"could not be scheduled within 1s: 0/3 nodes are available",
        None,
    ),
]


@pytest.mark.parametrize(
    ("image", "error", "message", "logs"), FAILURES, ids=[f[0] for f in FAILURES]
)
def test_failure_classes(cluster, image, error, message, logs):
    backend = cluster.backend()
    job = new_job(image)
    t0 = time.monotonic()
    with pytest.raises(error, match=message) as err:
        backend.launch(job, spec(backend, image))
    elapsed = time.monotonic() - t0
    # never-ready: the catalog gives that image launch_timeout 4 (overriding LAUNCH_TIMEOUT=2)
    timeouts = {"test/never-ready:1": 4.0, "test/unschedulable:1": 1.0}
    limit = timeouts.get(image, 0.0)
    assert limit <= elapsed < limit + 3, elapsed  # at once, or exactly at the deadline
    assert is_transient(err.value) is (error is PodUnschedulable)
    if logs:
        assert logs in err.value.model_logs
    else:
        assert err.value.model_logs == ""
    calls = backend.calls.snapshot()
    assert calls.pop("create pods") == 1 and calls.pop("watch pods") == 1  # one watch, no polling
    assert calls == ({"get pods/log": 1} if logs else {})
    if error is PodUnschedulable:  # retried later: the same pending pod is adopted
        with pytest.raises(PodUnschedulable):
            backend.launch(job, spec(backend, image))
        assert [n for n in cluster.api.pod_names() if n == job.run_id] == [job.run_id]
    assert job.run_id in cluster.api.pod_names()  # kept for the .error's logs, until teardown
    assert backend.teardown(job) is True
    assert_gone(cluster, job.run_id)


def test_unschedulable_pod_that_gets_a_node_restarts_the_launch_clock(cluster):
    """Time spent waiting for a node does not count against the launch timeout."""
    backend = cluster.backend(SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT="6")
    job = new_job("test/json:1")
    cluster.node.behaviours["test/json:1"] = "unschedulable"
    timer = threading.Timer(2.5, cluster.node.place, args=(job.run_id,))  # > launch timeout
    timer.start()
    try:
        t0 = time.monotonic()
        ep = backend.launch(job, spec(backend, "test/json:1"))
        assert 2.5 < time.monotonic() - t0 < 5
        assert ep.url.endswith(f":{PORT}")
        assert backend.calls.snapshot() == {"create pods": 1, "watch pods": 1}
    finally:
        timer.cancel()
        cluster.node.behaviours.pop("test/json:1", None)
        backend.teardown(job)
    assert_gone(cluster, job.run_id)


# ----------------------------------------------------------- API failures
def test_api_errors_are_sorted_into_transient_and_permanent(cluster):
    backend = cluster.backend()
    creates = lambda rec: rec.method == "POST" and rec.path.endswith("/pods")  # noqa: E731
    watches = lambda rec: rec.query.get("watch") == "true"  # noqa: E731
    for status, transient in ((503, True), (429, True), (500, True), (422, False)):
        cluster.api.fail(status, creates)
        with pytest.raises(KubernetesApiError) as err:
            backend.launch(new_job("test/ok:1"), spec(backend, "test/ok:1"))
        assert is_transient(err.value) is transient and f"HTTP {status}" in err.value.message
    assert "refused the pod spec" in err.value.message  # the 422's hint
    cluster.api.fail(403, creates)
    with pytest.raises(Rejected, match=r"HTTP 403.*Role in docs/kubernetes\.md"):
        backend.launch(new_job("test/ok:1"), spec(backend, "test/ok:1"))
    # a watch throttled by the API server: transient; the retry adopts the pod
    job = new_job("test/ok:1")
    cluster.api.fail(429, watches)
    with pytest.raises(KubernetesApiError, match=r"watch pod .* HTTP 429") as err:
        backend.launch(job, spec(backend, "test/ok:1"))
    assert is_transient(err.value)
    assert backend.launch(job, spec(backend, "test/ok:1")).url.endswith(f":{PORT}")
    assert backend.teardown(job)
    assert_gone(cluster, job.run_id)


def test_an_unreachable_api_server_is_transient(cluster, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{free_port()}"
    backend = cluster.backend(
        {"emu": {"endpoint": dead, "eks_cluster_name": "x", "region": "eu-west-1"}}
    )
    with pytest.raises(
        KubernetesApiError, match="cannot reach the Kubernetes API of cluster 'emu'"
    ) as err:
        backend.launch(new_job("test/ok:1"), spec(backend, "test/ok:1"))
    assert is_transient(err.value)


def test_raw_api_exceptions_are_sorted_too():
    for status, transient in (
        (0, True),
        (429, True),
        (503, True),
        (400, False),
        (403, False),
        (404, False),
    ):
        assert is_transient(ApiException(status=status)) is transient


def test_unknown_cluster_or_namespace_is_refused_without_api_calls(cluster):
    backend = cluster.backend(
        {"emu": {"kubeconfig": str(cluster.kubeconfig), "namespaces": ["scoring"]}}
    )
    with pytest.raises(
        Rejected, match=r"k8s_cluster 'nowhere' is not a configured cluster \(configured: emu\)"
    ):
        backend.launch(new_job("test/ok:1", k8s_cluster="nowhere"), spec(backend, "test/ok:1"))
    with pytest.raises(
        Rejected, match=r"k8s_namespace 'kube-system' is not enabled for cluster 'emu'"
    ):
        backend.launch(new_job("test/ok:1", ns="kube-system"), spec(backend, "test/ok:1"))
    assert backend.teardown(new_job("test/ok:1", k8s_cluster="nowhere")) is False
    assert backend.logs(new_job("test/ok:1", k8s_cluster="nowhere"), 10) == ""
    assert backend.calls.snapshot() == {}


def test_without_listed_namespaces_only_the_default_one_is_used(cluster):
    """No namespaces for the cluster (and no SCOREFLEET_K8S_CLUSTERS at all, which means
    the same): kube-system is refused before any API call, and the reaper looks in every
    namespace a pod may be in, so none is left behind."""
    backend = cluster.backend()  # the emu entry lists no namespaces
    with pytest.raises(Rejected, match="'kube-system' is not enabled for cluster 'emu'"):
        backend.launch(new_job("test/ok:1", ns="kube-system"), spec(backend, "test/ok:1"))
    assert backend.calls.snapshot() == {}
    assert "kube-system" not in cluster.api.pods_namespaces()
    # a configured list (SCOREFLEET_K8S_NAMESPACES): pods run there and are reaped there
    env = {"SCOREFLEET_K8S_NAMESPACES": "scoring,team-a"}
    job = new_job("test/ok:1", ns="team-a")
    cluster.backend(**env).launch(job, spec(backend, "test/ok:1"))
    assert job.run_id in cluster.api.pod_names("team-a")
    reaper = cluster.backend(**env)
    assert reaper.reap(0, lambda run: False) == [job.run_id]
    assert reaper.calls.snapshot() == {"list pods": 2, "delete pods": 1}
    assert_gone(cluster, job.run_id)


def test_the_endpoint_is_what_the_backend_recorded_never_the_jobs(cluster):
    """The score step asks the backend for the run's URL: the launching process knows
    it (no API call); another worker reads it from the API, by the run's pod name and
    this fleet's labels. The job's endpoint field plays no part."""
    launcher = cluster.backend()
    job = new_job("test/ok:1")
    ep = launcher.launch(job, spec(launcher, "test/ok:1"))
    job = launched(job, "http://127.0.0.1:9/attacker", ep.handle)
    try:
        before = launcher.calls.snapshot()
        assert launcher.endpoint(job) == ep.url and launcher.calls.since(before) == {}
        other_worker = cluster.backend()
        assert other_worker.endpoint(job) == ep.url
        assert other_worker.calls.snapshot() == {"get pods": 1}
        assert other_worker.endpoint(new_job("test/ok:1")) is None  # a run without a pod
    finally:
        launcher.teardown(job)
    assert_gone(cluster, job.run_id)
    assert launcher.endpoint(job) is None  # forgotten at teardown


def test_a_crafted_handle_never_reaches_a_pod_that_is_not_the_runs(cluster):
    """teardown, endpoint, logs and is_alive act on the pod of the job's own run: a
    handle naming another pod in an allowed namespace (someone else's, or another run
    of this fleet) is refused, and that pod keeps running."""
    backend = cluster.backend()
    core = cluster.api.client()
    stranger = {
        "metadata": {"name": "payments-db-0", "labels": {"app": "payments"}},
        "spec": {"containers": [{"name": "db", "image": "postgres"}]},
    }
    core.create_namespaced_pod("scoring", stranger, _preload_content=False)
    other = new_job("test/ok:1")
    backend.launch(other, spec(backend, "test/ok:1"))
    try:
        for victim in ("payments-db-0", other.run_id):
            job = new_job("test/ok:1", handle={"pod": victim})
            for call in ("teardown", "endpoint", "is_alive"):
                try:
                    getattr(backend, call)(job)
                except Exception as exc:
                    refused = str(exc)
                else:
                    refused = ""
                assert victim in cluster.api.pod_names("scoring"), f"{call} deleted {victim}"
                assert "is not this fleet's pod of run" in refused, (call, refused)
        assert backend.calls.snapshot().get("delete pods", 0) == 0
        pid = cluster.node.pid(other.run_id)
        assert pid is not None and pid in cluster.node.running_pids()
    finally:
        core.delete_namespaced_pod("payments-db-0", "scoring", _preload_content=False)
        backend.teardown(other)
    assert_gone(cluster, other.run_id)


# ----------------------------------------------------------------- reaper
WORKER_SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})
from scorefleet.settings import load
from tests.helpers import REPO, make_job
from workers.backends.kubernetes import KubernetesBackend
backend = KubernetesBackend(load(json.loads({env!r})), worker="doomed-worker")
for run in {runs!r}:
    job = make_job(run, model_image="test/ok:1", k8s_cluster="emu", k8s_namespace="scoring")
    backend.launch(job, backend.settings.models.spec("test/ok:1"))
print("launched", flush=True)
time.sleep(120)
"""


def test_reaper_removes_pods_left_by_a_killed_worker(cluster):
    runs = ["sf-" + uuid.uuid4().hex[:20] for _ in range(3)]
    env = cluster.env()
    script = WORKER_SCRIPT.format(repo=str(REPO), env=json.dumps(env), runs=runs)
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "launched"
    finally:
        worker.send_signal(signal.SIGKILL)  # the worker dies without tearing anything down
        worker.wait(timeout=10)
    pids = {run: cluster.node.pid(run) for run in runs}
    assert all(pids.values()) and set(runs) <= cluster.api.pod_names("scoring")
    labels = {p["metadata"]["name"]: p["metadata"]["labels"] for p in cluster.api.pods("scoring")}
    assert labels[runs[0]]["scorefleet.io/worker"] == "doomed-worker"
    # pods that are not this fleet's: never touched
    core = cluster.api.client()
    strangers = {
        "someone-elses": {},
        "other-fleet": {FLEET_LABEL: "other-queue", RUN_LABEL: "sf-00000000000000000000"},
    }
    for name, lbl in strangers.items():
        body = {
            "metadata": {"name": name, "labels": lbl, "creationTimestamp": "2001-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "x", "image": "busybox"}]},
        }
        core.create_namespaced_pod("scoring", body, _preload_content=False)
    reaper = cluster.backend()
    finished = runs[1]
    assert reaper.reap(3600, lambda run: run == finished) == [finished]
    assert reaper.calls.snapshot() == {"list pods": 1, "delete pods": 1}
    assert sorted(reaper.reap(0, lambda run: False)) == sorted([runs[0], runs[2]])
    for run in runs:
        assert_gone(cluster, run)
        assert (
            not psutil.pid_exists(pids[run])
            or psutil.Process(pids[run]).status() == psutil.STATUS_ZOMBIE
        )
    assert set(strangers) <= cluster.api.pod_names("scoring")
    for name in strangers:
        core.delete_namespaced_pod(name, "scoring", _preload_content=False)


def test_reaper_keeps_going_when_a_cluster_is_down(cluster, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{free_port()}"
    backend = cluster.backend(
        {
            "down": {"endpoint": dead, "eks_cluster_name": "x", "region": "eu-west-1"},
            "emu": {"kubeconfig": str(cluster.kubeconfig)},
        },
        SCOREFLEET_DEFAULT_K8S_CLUSTER="emu",
    )
    job = new_job("test/ok:1")
    backend.launch(job, spec(backend, "test/ok:1"))
    assert backend.reap(0, lambda run: False) == [job.run_id]
    assert_gone(cluster, job.run_id)


# -------------------------------------------------------------------- EKS
def test_an_eks_cluster_gets_a_signed_token(cluster, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    backend = cluster.backend(
        {
            "emu": {
                "endpoint": cluster.api.url,
                "eks_cluster_name": "blue-prod",
                "region": "eu-west-1",
            }
        }
    )
    job = new_job("test/ok:1")
    backend.launch(job, spec(backend, "test/ok:1"))
    backend.teardown(job)
    assert_gone(cluster, job.run_id)
    auths = {r.authorization for r in cluster.api.requests() if r.concerns(job.run_id)}
    (auth,) = auths  # one token for all three calls
    assert auth.startswith("Bearer k8s-aws-v1.") and not auth.endswith("=")
    encoded = auth.removeprefix("Bearer k8s-aws-v1.")
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.netloc == "sts.eu-west-1.amazonaws.com"
    assert query["Action"] == "GetCallerIdentity" and query["X-Amz-Expires"] == "60"
    assert query["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    assert (
        query["X-Amz-Credential"].startswith("AKIDEXAMPLE/")
        and "/eu-west-1/sts/" in query["X-Amz-Credential"]
    )
    assert "wJalrXUtnFEMI" not in url


def test_make_backend_loads_kubernetes_only_when_chosen():
    code = (
        "import json, sys; from scorefleet.settings import load; from workers.backends import make_backend; "
        f"env = json.loads({json.dumps(json.dumps({**BASE, 'SCOREFLEET_LAUNCH_BACKEND': 'local'}))}); "
        "print(type(make_backend(load(env))).__name__, 'kubernetes' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.split() == ["LocalBackend", "False"]


# ------------------------------------------------------------------ warm mode
def test_warm_mode_parks_and_reuses_a_pod(cluster):
    backend = cluster.backend(SCOREFLEET_WARM_IDLE_SECONDS="30")
    first = new_job("test/ok:1")
    ep = backend.launch(first, spec(backend, "test/ok:1"))
    first = launched(first, ep.url, ep.handle)
    first = replace(first, model=replace(first.model, image_id=ep.image_id))
    before = backend.calls.snapshot()
    assert backend.teardown(first) is True  # parked, not deleted
    assert first.run_id in cluster.api.pod_names()
    second = new_job("test/ok:1")
    again = backend.launch(second, spec(backend, "test/ok:1"))
    assert again.url == ep.url and again.handle["pod"] == first.run_id and again.warm
    assert not ep.warm and again.image_id == ep.image_id  # what the pod runs, still
    # park + claim: no create, no watch; one get: the pod is still this run's to park
    assert backend.calls.since(before) == {"get pods": 1, "patch pods": 2}
    # another image never gets it
    other = new_job("test/json:1")
    assert backend.launch(other, spec(backend, "test/json:1")).handle["pod"] == other.run_id
    backend.teardown(other)
    # a failed run's pod is deleted, not parked
    second = launched(second, again.url, again.handle)
    second = replace(second, failure=Failure(step="score", kind="ModelError", message="wrong rows"))
    assert backend.teardown(second) is True
    assert_gone(cluster, first.run_id)


def test_release_parks_the_pod_in_warm_mode_and_leaves_it_to_teardown_otherwise(cluster):
    """What the score step asks once its file is scored (issue 23: it no longer tests
    the warm settings and calls teardown itself): a warm backend parks the run's pod
    for the next file of its image now; without warm mode the run keeps it."""
    cold = cluster.backend()
    job = new_job("test/ok:1")
    ep = cold.launch(job, spec(cold, "test/ok:1"))
    job = launched(job, ep.url, ep.handle)
    before = cold.calls.snapshot()
    assert cold.release(job) is False and cold.calls.since(before) == {}
    assert cold.is_alive(job)
    assert cold.teardown(job) is True
    assert_gone(cluster, job.run_id)

    warm = cluster.backend(SCOREFLEET_WARM_IDLE_SECONDS="30")
    first = new_job("test/ok:1")
    ep = warm.launch(first, spec(warm, "test/ok:1"))
    assert warm.release(launched(first, ep.url, ep.handle)) is True
    assert first.run_id in cluster.api.pod_names()  # parked, not deleted
    second = new_job("test/ok:1")
    again = warm.launch(second, spec(warm, "test/ok:1"))
    assert again.warm and again.handle["pod"] == first.run_id
    second = launched(second, again.url, again.handle)
    failed = replace(second, failure=Failure(step="score", kind="ModelError", message="x"))
    assert warm.teardown(failed) is True  # a failed run's pod is deleted, not parked
    assert_gone(cluster, first.run_id)


def test_the_reaper_expires_parked_pods(cluster):
    backend = cluster.backend(SCOREFLEET_WARM_IDLE_SECONDS="30")
    job = new_job("test/ok:1")
    ep = backend.launch(job, spec(backend, "test/ok:1"))
    job = launched(job, ep.url, ep.handle)
    assert backend.teardown(job)
    # a finished run's parked pod stays while it is warm ...
    assert job.run_id not in backend.reap(3600, lambda run: True)
    assert job.run_id in cluster.api.pod_names()
    # ... and goes once idle too long (a beat process: it knows only the labels)
    reaper = cluster.backend(SCOREFLEET_WARM_IDLE_SECONDS="0.01")
    time.sleep(1.1)
    assert job.run_id in reaper.reap(3600, lambda run: False)
    assert_gone(cluster, job.run_id)


# ------------------------------------------------------------ replicas (issue 25)
#: several model processes start at once on the fake kubelet: more than the 2 s the
#: single-pod tests give one
SLOW_START = "15"


def test_a_runs_replicas_are_pods_of_their_own_that_teardown_and_the_reaper_find(cluster):
    """Three replicas: three pods created and watched together, named ``<run>``,
    ``<run>-1``, ``<run>-2``, each labelled with its run and replica; each answers at
    its own URL; teardown deletes every one."""
    from workers.backends import replicas

    catalog = {**k8s_catalog(PORT)}
    catalog["test/ok:1"] = {**catalog["test/ok:1"], "replicas": 3, "min_mb_per_replica": 0}
    backend = cluster.backend(
        SCOREFLEET_MODEL_CATALOG=json.dumps(catalog), SCOREFLEET_LAUNCH_TIMEOUT=SLOW_START
    )
    job = new_job("test/ok:1")
    s = spec(backend, "test/ok:1")
    t0 = time.monotonic()
    started = replicas.start(lambda i: backend.launch(job, s, i), [0, 1, 2], image=s.image)
    assert time.monotonic() - t0 < 8  # together: not three launches one after another
    names = [job.run_id, f"{job.run_id}-1", f"{job.run_id}-2"]
    assert [ep.handle["pod"] for _, ep in started] == names
    assert len({ep.url for _, ep in started}) == 3
    pods = {p["metadata"]["name"]: p["metadata"]["labels"] for p in cluster.api.pods("scoring")}
    for i, name in enumerate(names):
        assert pods[name][RUN_LABEL] == job.run_id and pods[name]["scorefleet.io/replica"] == str(i)
    job = replace(
        job,
        model=replace(job.model, handle=replicas.merged_handle(started), replicas=(0, 1, 2)),
    )
    for i, (_, ep) in enumerate(started):
        assert backend.endpoint(job, i) == ep.url
        client = sagemaker(ep.url)
        assert invoke(client, b"a\n1\n", 1, 1).rows == 1
        client.close()
    assert backend.is_alive(job, 2) and "listening" in backend.logs(job, 5, 2)
    # another worker (no memory of the launch) finds replica 1 by its name
    other = cluster.backend(SCOREFLEET_MODEL_CATALOG=json.dumps(catalog))
    assert other.endpoint(job, 1) == started[1][1].url
    before = backend.calls.snapshot()
    assert backend.teardown(job) is True
    for name in names:
        assert_gone(cluster, name)
    # one delete per replica, and one list for any the job did not learn of
    assert backend.calls.since(before) == {"delete pods": 3, "list pods": 1}


def test_teardown_finds_the_replicas_of_a_launch_that_failed_half_way(cluster):
    """A launch that failed after two of its replicas were made: the job the failure
    tail carries knows none of them; teardown finds them by the run's label."""
    catalog = {**k8s_catalog(PORT)}
    catalog["test/ok:1"] = {**catalog["test/ok:1"], "replicas": 4}
    backend = cluster.backend(
        SCOREFLEET_MODEL_CATALOG=json.dumps(catalog), SCOREFLEET_LAUNCH_TIMEOUT=SLOW_START
    )
    job = new_job("test/ok:1")
    s = spec(backend, "test/ok:1")
    for i in (1, 3):
        backend.launch(job, s, i)
    # a pod of another run of the fleet, and a stranger with the run's label: kept
    other = new_job("test/ok:1")
    backend.launch(other, s, 1)
    failed = replace(job, failure=Failure(step="launch", kind="ModelError", message="x"))
    assert backend.teardown(failed) is True
    for name in (f"{job.run_id}-1", f"{job.run_id}-3"):
        assert_gone(cluster, name)
    assert f"{other.run_id}-1" in cluster.api.pod_names("scoring")
    # the reaper finds a run's replicas by its labels, like its one pod
    assert backend.reap(0, lambda run: False) == [other.run_id]
    assert_gone(cluster, f"{other.run_id}-1")


def test_a_replica_the_quota_refuses_is_dropped(cluster):
    """The namespace's ResourceQuota refuses the third pod: the file goes on with two."""
    from workers.backends import replicas

    backend = cluster.backend(SCOREFLEET_LAUNCH_TIMEOUT=SLOW_START)
    job = new_job("test/ok:1")
    s = spec(backend, "test/ok:1")
    third = f"{job.run_id}-2"
    cluster.api.fail(
        403,
        lambda rec: rec.method == "POST" and rec.concerns(third),
        message='pods "x" is forbidden: exceeded quota: scoring-quota, requested: pods=1',
    )
    started = replicas.start(lambda i: backend.launch(job, s, i), [0, 1, 2], image=s.image)
    assert [i for i, _ in started] == [0, 1]
    assert third not in cluster.api.pod_names("scoring")
    job = replace(job, model=replace(job.model, replicas=(0, 1)))
    assert backend.teardown(job)
    for name in (job.run_id, f"{job.run_id}-1"):
        assert_gone(cluster, name)


# ------------------------------------------------------------- pod security
#: the namespaces of the start-up check, as the emulator serves them (None: not there)
PSA_NAMESPACES: dict[str, dict[str, str] | None] = {
    "psa-restricted": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "v1.30",
    },
    "psa-baseline": {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
    },
    "psa-unlabelled": {},
    "psa-missing": None,
    "psa-forbidden": {"pod-security.kubernetes.io/enforce": "restricted"},
}


@pytest.fixture
def psa_cluster(cluster):
    cluster.api.namespaces.update({n: v for n, v in PSA_NAMESPACES.items() if v is not None})
    # the worker may not read this one (its Role is missing there)
    cluster.api.fail(403, lambda rec: rec.path == "/api/v1/namespaces/psa-forbidden")
    clusters = {"emu": {"kubeconfig": str(cluster.kubeconfig), "namespaces": [*PSA_NAMESPACES]}}
    yield cluster, clusters
    for name in PSA_NAMESPACES:
        cluster.api.namespaces.pop(name, None)


def test_start_up_checks_say_which_namespaces_do_not_enforce_restricted(psa_cluster):
    from prometheus_client import REGISTRY

    from workers.backends.registry import start_checks

    cluster, clusters = psa_cluster
    env = {"SCOREFLEET_DEFAULT_K8S_NAMESPACE": "psa-restricted"}
    backend = cluster.backend(clusters, **env)
    before = len(cluster.api.requests())
    checks = start_checks(backend.settings, backend)
    assert [(c.name, c.subject, c.ok) for c in checks] == [
        ("pod_security", f"cluster emu, namespace {ns}", ns == "psa-restricted")
        for ns in PSA_NAMESPACES
    ]
    detail = {c.subject.rsplit(" ", 1)[1]: c.detail for c in checks}
    assert detail["psa-restricted"] == "enforces restricted (version v1.30)"
    assert detail["psa-baseline"].startswith(
        "does not enforce restricted: pod-security.kubernetes.io/enforce is 'baseline'; "
    )
    assert detail["psa-unlabelled"].startswith(
        "does not enforce restricted: no pod-security.kubernetes.io/enforce label"
    )
    assert (
        "HTTP 404" in detail["psa-missing"] and "does the namespace exist" in detail["psa-missing"]
    )
    assert detail["psa-forbidden"].startswith("cannot tell whether it enforces restricted: ")
    assert "HTTP 403" in detail["psa-forbidden"] and "docs/kubernetes.md" in detail["psa-forbidden"]
    for ns in ("psa-baseline", "psa-unlabelled", "psa-missing", "psa-forbidden"):
        assert (
            f"kubectl label --overwrite namespace {ns} pod-security.kubernetes.io/enforce=restricted"
            in detail[ns]
        )
    # one get per namespace, of the namespace itself, and nothing else
    seen = [r for r in cluster.api.requests()[before:]]
    assert sorted(r.path for r in seen) == sorted(f"/api/v1/namespaces/{n}" for n in PSA_NAMESPACES)
    assert {r.verb for r in seen} == {"get namespaces"}
    # the metric: 1 where restricted is enforced, 0 elsewhere
    for ns in PSA_NAMESPACES:
        value = REGISTRY.get_sample_value(
            "scorefleet_k8s_namespace_restricted", {"cluster": "emu", "namespace": ns}
        )
        assert value == (1.0 if ns == "psa-restricted" else 0.0), ns


def test_scorefleet_config_check_backend_prints_the_pod_security_of_each_namespace(psa_cluster):
    from click.testing import CliRunner

    from workers.cli.commands import main

    cluster, clusters = psa_cluster
    env = cluster.env(clusters, SCOREFLEET_DEFAULT_K8S_NAMESPACE="psa-restricted")
    result = CliRunner().invoke(main, ["config", "--check-backend"], env=env)
    assert result.exit_code == 1, result.output  # not every namespace enforces restricted
    lines = [line for line in result.output.splitlines() if line.startswith("pod_security ")]
    assert len(lines) == len(PSA_NAMESPACES)
    assert lines[0].split(None, 1)[1] == (
        "cluster emu, namespace psa-restricted: enforces restricted (version v1.30)"
    )
    assert all(": WARNING: " in line for line in lines[1:]), lines
    # with every namespace restricted, it passes
    only = {"emu": {**clusters["emu"], "namespaces": ["psa-restricted"]}}
    env = cluster.env(only, SCOREFLEET_DEFAULT_K8S_NAMESPACE="psa-restricted")
    result = CliRunner().invoke(main, ["config", "--check-backend"], env=env)
    assert result.exit_code == 0, result.output
    # and without the flag, it calls nothing
    before = len(cluster.api.requests())
    assert CliRunner().invoke(main, ["config"], env=env).exit_code == 0
    assert len(cluster.api.requests()) == before


def test_a_pod_that_would_fail_the_restricted_profile_is_never_created(cluster, monkeypatch):
    """A bug in the manifest code (here: the readiness probe given a host, which would
    let the kubelet probe any address from the node) is refused by the backend
    itself, also in a namespace that enforces nothing."""
    import workers.backends.kubernetes.manifest as manifest_module

    def buggy(readiness, port):
        return {"httpGet": {"path": "/ping", "port": port, "host": "169.254.169.254"}}

    monkeypatch.setattr(manifest_module, "probe_handler", buggy)
    backend = cluster.backend()
    job = new_job("test/ok:1")
    with pytest.raises(ClusterConfigError) as err:
        backend.launch(job, spec(backend, "test/ok:1"))
    assert "would fail the restricted Pod Security Standard" in str(err.value)
    assert "Host Probes / Lifecycle Hooks: spec.containers[0].readinessProbe" in str(err.value)
    assert not is_transient(err.value)
    assert backend.calls.snapshot() == {} and job.run_id not in cluster.api.pod_names()
