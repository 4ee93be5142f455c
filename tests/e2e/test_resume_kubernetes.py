"""Issue 26 with the kubernetes backend: the worker scoring a file through its model
pod is killed (``kill -9``) past the first committed part; the worker started again
finds the run's pod still serving (the pod outlives the worker, as on EKS), goes on
from the last committed part, and the file is published once, right; the pod is
created once and deleted once."""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from scorefleet.settings import load
from tests.e2e.test_resume_e2e import hash_of, versions, wait_committed, wait_outcome
from tests.helpers import FAKEMODEL, supervised
from tests.helpers.k8s import FakeApiServer, FakeKubelet, calls_for, pod_of, wait_for
from workers.localstack.restarts import Restarts
from workers.localstack.stack import BUCKET, LocalStack, emulator_client, free_port

pytestmark = pytest.mark.slow

IMAGE = "test/hash-slow:1"


@pytest.fixture(scope="module")
def kstack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, FakeApiServer]]:
    tmp = tmp_path_factory.mktemp("k8s-resume")
    command = f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} --mode hash --delay 0.5"
    catalog = {
        IMAGE: {
            "command": command,
            "port": free_port(),
            "keep_columns": ["*"],
            "model_columns": ["id"],
        }
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
                "namespaces": ["scoring"],
            }
        }
        api.namespaces.update({"scoring": {"pod-security.kubernetes.io/enforce": "restricted"}})
        with FakeKubelet(api, kubelet_settings) as node:
            del node
            stack = LocalStack(
                tmp / "stack",
                workers=1,
                concurrency=2,
                flower=False,
                beat=False,
                catalog=catalog,
                restarts=Restarts(limit=10),
                extra_env={
                    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
                    "SCOREFLEET_LAUNCH_BACKEND": "kubernetes",
                    "SCOREFLEET_K8S_CLUSTERS": json.dumps(clusters),
                    "SCOREFLEET_DEFAULT_K8S_CLUSTER": "local",
                    "SCOREFLEET_VISIBILITY_TIMEOUT": "6",
                    "SCOREFLEET_MAX_PAYLOAD_MB": "0.5",
                    "SCOREFLEET_MAX_IN_FLIGHT": "2",
                },
            )
            with supervised(stack):
                stack.wait_worker_ready()
                yield stack, api


@pytest.mark.timeout(400)
def test_a_resumed_step_goes_on_with_its_runs_pod(kstack: tuple[LocalStack, FakeApiServer]):
    stack, api = kstack
    rng = random.Random(2626)
    rows = [(str(i), f"{rng.getrandbits(480):0120x}") for i in range(90_000)]
    data = ("id,pad\n" + "".join(f"{i},{p}\n" for i, p in rows)).encode()
    want = b"id,pad,score_0,score_1\n" + "".join(
        f"{i},{p},{hash_of([i])},1\n" for i, p in rows
    ).encode("ascii")
    s3: Any = emulator_client("s3", stack.endpoint)
    put = s3.put_object(
        Bucket=BUCKET,
        Key="in/k8s-big.csv",
        Body=data,
        Tagging=f"model_image={IMAGE}&k8s_namespace=scoring",
    )
    wait_committed(s3, "in/k8s-big.csv", put)
    worker = next(p for p in stack.procs if p.name == "worker0")
    os.killpg(worker.popen.pid, signal.SIGKILL)  # the worker's process group, as a pod dies
    assert wait_outcome(s3, "k8s-big.csv") == want
    assert versions(s3, "out/k8s-big.csv.scoreout") == 1
    log = (stack.state_dir / "logs" / "worker0.log").read_text()
    assert "taking the file up at data row" in log
    pod = pod_of(api, "in/k8s-big.csv")
    # teardown runs after the upload that published the outcome: wait for it (it
    # came after this check once in CI)
    wait_for(lambda: "delete pods" in calls_for(api, pod), 60, "the pod's teardown")
    calls = calls_for(api, pod)
    assert calls.get("create pods") == 1, calls  # the resumed step used the run's pod
    # teardown's delete, and maybe the beat's reaper's of a finished run before it
    # (as test_e2e_kubernetes.step_calls counts them)
    assert calls.get("delete pods") in (1, 2), calls
