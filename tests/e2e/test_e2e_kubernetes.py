"""End to end through the kubernetes backend: S3 put -> Lambda bridge -> Celery worker
(SCOREFLEET_LAUNCH_BACKEND=kubernetes) -> a pod per file on the emulated API server,
run by the fake kubelet -> .scoreout or .error -> the pod deleted.

Two clusters point at the same emulator: ``local`` through a kubeconfig, ``blue``
through its endpoint with an EKS token (the code path of a remote EKS cluster).
All files are dropped at once; each test waits for its own outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from scorefleet.settings import load
from tests.helpers import REPO, Outcomes
from tests.helpers.k8s import (
    FakeApiServer,
    FakeKubelet,
    calls_for,
    image_id_of,
    k8s_catalog,
    now_iso,
    pod_of,
    wait_for,
)
from workers.backends.kubernetes import FLEET_LABEL, RUN_ANNOTATION, RUN_LABEL
from workers.localstack.stack import BUCKET, IRIS_IMAGE, LocalStack, free_port

pytestmark = pytest.mark.slow

IRIS = (REPO / "examples" / "iris.csv").read_bytes()
ROWS = b"a,b,c\n1,2,3\n4,5,6\n7,8,9\n"
MANY = b"a,b,c\n" + b"".join(b"%d,%d,%d\n" % (i, i + 1, i + 2) for i in range(120))

SCENARIOS: dict[str, tuple[bytes, dict[str, str]]] = {
    "iris.csv": (IRIS, {"model_image": IRIS_IMAGE, "k8s_namespace": "team-a"}),
    "eks.csv": (
        ROWS,
        {"model_image": "test/json:1", "k8s_cluster": "blue", "k8s_namespace": "blue-ns"},
    ),
    "pull.csv": (ROWS, {"model_image": "test/pull-error:1"}),
    "crash.csv": (ROWS, {"model_image": "test/crash:1"}),
    "crashloop.csv": (ROWS, {"model_image": "test/crashloop:1"}),
    "oom.csv": (ROWS, {"model_image": "test/oom:1"}),
    "unschedulable.csv": (ROWS, {"model_image": "test/unschedulable:1"}),
    "unknown-cluster.csv": (ROWS, {"model_image": "test/ok:1", "k8s_cluster": "nowhere"}),
    "api-503.csv": (ROWS, {"model_image": "test/ok:1"}),
    "replicas.csv": (MANY, {"model_image": "test/hash-replicas:1"}),
}


@pytest.fixture(scope="module")
def kstack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, FakeApiServer, FakeKubelet]]:
    tmp = tmp_path_factory.mktemp("k8s-e2e")
    catalog = k8s_catalog(free_port())
    extra = {
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,test/",
        "SCOREFLEET_LAUNCH_TIMEOUT": "4",
        "SCOREFLEET_RETRY_BACKOFF": "1",
        "SCOREFLEET_RETRY_BACKOFF_MAX": "2",
        "SCOREFLEET_RETRY_MAX": "2",
        "SCOREFLEET_LAUNCH_BACKEND": "kubernetes",
        "SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT": "1",
        "SCOREFLEET_REAP_INTERVAL": "10",
        "SCOREFLEET_REAP_MAX_AGE": "3600",
    }
    with FakeApiServer(tmp / "pod-logs") as api:
        kubelet_settings = load(
            {
                "SCOREFLEET_INPUT_URI": f"s3://{BUCKET}/in/",
                "SCOREFLEET_OUTPUT_URI": f"s3://{BUCKET}/out/",
                "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
                "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog),
            }
        )
        clusters = {
            "local": {
                "kubeconfig": str(api.write_kubeconfig(tmp / "kubeconfig")),
                "namespaces": ["scoring", "team-a"],
            },
            "blue": {
                "endpoint": api.url,
                "eks_cluster_name": "blue-prod",
                "region": "eu-west-1",
                # a namespace of its own: the two "clusters" share one emulator, and the
                # local cluster's reaper must not see (and delete, without a token) a pod
                # that is really the remote cluster's
                "namespaces": ["blue-ns"],
            },
        }
        extra["SCOREFLEET_K8S_CLUSTERS"] = json.dumps(clusters)
        # what the workers' start-up check reads: team-a does not enforce restricted
        restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
        api.namespaces.update(
            {"scoring": restricted, "blue-ns": restricted, "team-a": {"team": "a"}}
        )
        with FakeKubelet(api, kubelet_settings) as node:
            stack = LocalStack(
                tmp / "stack",
                workers=1,
                concurrency=6,
                flower=False,
                catalog=catalog,
                extra_env=extra,
            )
            stack.start()
            try:
                stack.wait_worker_ready()
                yield stack, api, node
            finally:
                stack.stop()


@pytest.fixture(scope="module")
def kout(kstack) -> Outcomes:
    return Outcomes(kstack[0])


@pytest.fixture(scope="module")
def dropped(kstack, kout: Outcomes) -> dict[str, float]:
    _, api, _ = kstack
    # the API server answers the first create of this file's pod with a 503
    api.fail(503, lambda rec: rec.method == "POST" and "in/api-503.csv" in json.dumps(rec.body))
    return {key: kout.put(key, body, tags) for key, (body, tags) in SCENARIOS.items()}


def step_calls(kstack, pod: str) -> dict[str, int]:
    """The pipeline's own API calls about ``pod`` (calls_for), with its delete counted
    once: the beat's reaper (every 10 s here) deletes the pod of a finished run too, and
    it may do so between upload recording the outcome and teardown's delete (NotFound,
    already gone); at least one delete, and at most that second one, are the
    pipeline's."""
    calls = calls_for(kstack[1], pod)
    assert calls.get("delete pods") in (1, 2), calls
    calls["delete pods"] = 1
    return calls


def torn_down(kstack, key: str) -> str:
    """The file's pod is deleted and its process stopped; returns the pod name."""
    _, api, node = kstack
    name = pod_of(api, f"in/{key}")
    wait_for(lambda: name not in api.pod_names(), 30, f"deletion of pod {name}")
    node.wait_gone(name)
    return name


def expect_error(kout: Outcomes, key: str, step: str, *needles: str) -> str:
    suffix, body, tags = kout.wait(key)
    text = body.decode()
    assert suffix == ".error", text
    assert tags["error_step"] == step, (tags, text)
    for needle in needles:
        assert needle in text, text
    return text


def test_iris_is_scored_in_a_pod(kstack, kout, dropped):
    suffix, body, tags = kout.wait("iris.csv")
    assert suffix == ".scoreout", body.decode()
    assert body.decode().splitlines()[0] == "label,probability" and tags["rows"] == "150"
    assert tags["k8s_cluster"] == "local" and tags["k8s_namespace"] == "team-a"
    # provenance (issue 27): the digest from the pod's status, as the kubelet reported it
    meta = kout.s3.head_object(Bucket=BUCKET, Key="out/iris.csv.scoreout")["Metadata"]
    assert meta["model-image-id"] == image_id_of(IRIS_IMAGE).removeprefix("docker-pullable://")
    assert meta["model-image"] == IRIS_IMAGE and meta["model-protocol"] == "sagemaker"
    name = torn_down(kstack, "iris.csv")
    # one create, one watch, one delete: nothing listed, nothing polled
    assert step_calls(kstack, name) == {"create pods": 1, "watch pods": 1, "delete pods": 1}


def test_a_remote_eks_cluster_with_a_token(kstack, kout, dropped):
    suffix, body, tags = kout.wait("eks.csv")
    assert suffix == ".scoreout", body.decode()
    assert tags["k8s_cluster"] == "blue" and tags["k8s_namespace"] == "blue-ns"
    assert body.decode().splitlines() == ["1,3", "2,3", "3,3"]
    name = torn_down(kstack, "eks.csv")
    auths = {r.authorization for r in kstack[1].requests() if r.concerns(name)}
    # (a token per backend instance: a worker process may build more than one at start-up)
    assert auths and all(a.startswith("Bearer k8s-aws-v1.") for a in auths)


def test_image_that_cannot_be_pulled(kstack, kout, dropped):
    expect_error(
        kout, "pull.csv", "launch", "image test/pull-error:1 could not be pulled: ErrImagePull"
    )
    torn_down(kstack, "pull.csv")


@pytest.mark.parametrize(
    ("key", "needle", "log_line"),
    [
        (
            "crash.csv",
            "the model exited with code 3 before it was ready",
            "weights file is corrupt",
        ),
        ("crashloop.csv", "keeps crashing (CrashLoopBackOff)", "weights file is corrupt"),
        ("oom.csv", "OOMKilled, memory limit 2Gi", "listening"),
    ],
)
def test_model_that_dies_before_it_is_ready(kstack, kout, dropped, key, needle, log_line):
    text = expect_error(kout, key, "launch", needle, log_line)
    assert "attempts)" not in text  # permanent: not retried
    torn_down(kstack, key)


def test_pod_that_cannot_be_scheduled_is_retried_then_reported(kstack, kout, dropped):
    text = expect_error(
        kout,
        "unschedulable.csv",
        "launch",
        "could not be scheduled within 1s",
        "Insufficient memory",
        "(after 3 attempts)",
    )
    assert "Unschedulable" in text
    name = torn_down(kstack, "unschedulable.csv")
    calls = step_calls(kstack, name)
    assert calls["create pods"] == 3 and calls["watch pods"] == 3  # the retries adopt the pod
    assert "list pods" not in calls  # (its delete: step_calls)


def test_unknown_cluster_is_an_error_at_once(kstack, kout, dropped):
    expect_error(
        kout, "unknown-cluster.csv", "launch", "k8s_cluster 'nowhere' is not a configured cluster"
    )
    with pytest.raises(AssertionError, match="no pod was created"):
        pod_of(kstack[1], "in/unknown-cluster.csv")


def test_api_server_error_is_retried(kstack, kout, dropped):
    suffix, body, _ = kout.wait("api-503.csv")
    assert suffix == ".scoreout", body.decode()
    name = torn_down(kstack, "api-503.csv")
    assert step_calls(kstack, name) == {"create pods": 2, "watch pods": 1, "delete pods": 1}
    log = (kstack[0].state_dir / "logs" / "worker0.log").read_text()
    assert "launch failed (KubernetesError: create pod" in log and "HTTP 503" in log


def test_a_file_with_replicas_gets_a_pod_for_each(kstack, kout, dropped):
    """Issue 25: three pods (the run's, -1, -2), labelled with their replica, created
    and watched together; the output is the one model's, in order; teardown deletes
    all three (and lists the run's pods once, for any the job did not learn of)."""
    from tests.helpers.fakemodel import hash_row

    suffix, body, _ = kout.wait("replicas.csv")
    assert suffix == ".scoreout", body.decode()
    rows = [r.split(",") for r in MANY.decode().splitlines()[1:]]
    assert body == b"".join(hash_row(r) for r in rows)
    _, api, node = kstack
    first = pod_of(api, "in/replicas.csv")
    names = [first, f"{first}-1", f"{first}-2"]
    created = {
        rec.body["metadata"]["name"]: rec.body["metadata"]["labels"]
        for rec in api.requests()
        if rec.method == "POST" and rec.body and rec.body["metadata"]["name"] in names
    }
    assert sorted(created) == sorted(names)
    assert {created[n]["scorefleet.io/replica"] for n in names} == {"0", "1", "2"}
    for name in names:
        wait_for(lambda name=name: name not in api.pod_names(), 30, f"deletion of {name}")
        node.wait_gone(name)
        # created and watched once each; deleted by teardown (and maybe by the beat's
        # reaper too, which deletes a finished run's pods, every 10 s here)
        calls = calls_for(api, name)
        assert calls["create pods"] == 1 and calls["watch pods"] == 1, calls
        assert calls["delete pods"] >= 1, calls


def test_beat_reaper_deletes_a_pod_a_dead_worker_left(kstack, dropped):
    """A pod of this fleet that nobody owns any more (its run is long gone)."""
    stack, api, node = kstack
    name = "sf-00000000000000dead00"
    body = {
        "metadata": {
            "name": name,
            "creationTimestamp": now_iso(-7200),
            "labels": {FLEET_LABEL: "scorefleet", RUN_LABEL: name},
            "annotations": {RUN_ANNOTATION: name},
        },
        "spec": {
            "containers": [{"name": "model", "image": "test/ok:1", "ports": [{"containerPort": 1}]}]
        },
    }
    api.client().create_namespaced_pod("scoring", body, _preload_content=False)
    wait_for(lambda: name not in api.pod_names(), 40, "the reaper")
    node.wait_gone(name)
    log = stack.state_dir / "logs" / "worker0.log"
    line = f"reaper removed 1 model container(s) left behind: {name}"
    wait_for(lambda: line in log.read_text(), 10, "the reaper's report")


def test_the_worker_says_at_start_which_namespaces_do_not_enforce_restricted(kstack):
    stack, api, _ = kstack
    log = stack.state_dir / "logs" / "worker0.log"
    warning = (
        "pod_security: cluster local, namespace team-a: does not enforce restricted: no "
        "pod-security.kubernetes.io/enforce label"
    )
    wait_for(lambda: warning in log.read_text(), 30, "the start-up check's warning")
    text = log.read_text()
    assert "kubectl label --overwrite namespace team-a" in text
    for cluster, ns in (("local", "scoring"), ("blue", "blue-ns")):
        line = f"pod_security: cluster {cluster}, namespace {ns}: enforces restricted"
        assert line in text, line
    reads = [r for r in api.requests() if r.verb == "get namespaces"]
    assert sorted(r.path.rsplit("/", 1)[1] for r in reads) == ["blue-ns", "scoring", "team-a"]


def test_zz_no_pod_and_no_process_left(kstack, kout, dropped):
    for key in SCENARIOS:
        kout.wait(key)
    _, api, node = kstack
    wait_for(lambda: not api.pods(), 30, "deletion of every pod")
    wait_for(lambda: not node.running_pids(), 15, "the end of every model process")
    # per file, the worker only ever created, watched, read logs of and deleted pods (and
    # read each namespace once, when it started)
    verbs = {r.verb for r in api.requests() if r.path.startswith("/api/v1/namespaces/")}
    assert verbs <= {
        *("create pods", "watch pods", "get pods/log", "delete pods", "list pods"),
        "get namespaces",
    }
