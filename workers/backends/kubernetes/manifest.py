"""A model pod: its name and labels (from the run), and its manifest."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from scorefleet.job import Job
from scorefleet.settings import DNS1123_LABEL, ModelSpec, Settings
from workers.backends.kubernetes.api import CONTAINER, ClusterConfigError
from workers.backends.kubernetes.config import port_of
from workers.backends.kubernetes.podsecurity import restricted_violations
from workers.scoring.protocols import HttpCheck, Readiness, protocol_for

log = logging.getLogger("workers.backends.kubernetes")

FLEET_LABEL = "scorefleet.io/fleet"
RUN_LABEL = "scorefleet.io/run-id"
PIPELINE_LABEL = "scorefleet.io/pipeline-id"
WORKER_LABEL = "scorefleet.io/worker"
#: which of a run's model replicas a pod is ("0" for a run's one model)
REPLICA_LABEL = "scorefleet.io/replica"
RUN_ANNOTATION = "scorefleet.io/run-id"
SOURCE_ANNOTATION = "scorefleet.io/source"
IMAGE_ANNOTATION = "scorefleet.io/image"
#: warm mode: "idle" on a parked pod waiting for the next file of its image
WARM_LABEL = "scorefleet.io/warm"
PARKED_ANNOTATION = "scorefleet.io/parked-at"
TERMINATION_GRACE_SECONDS = 10


# ------------------------------------------------------------- pod identity
def pod_name(run_id: str) -> str:
    """DNS-1123 label from the run id; deterministic (run ids are already valid)."""
    base = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    if base == run_id and DNS1123_LABEL.match(base):
        return base
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"{base[:52].strip('-') or 'sf'}-{digest}"


def replica_pod_name(run_id: str, replica: int = 0) -> str:
    """The pod of a run's ``replica``: the run's pod name for replica 0 (a run's one
    model, as before replicas), ``<that>-<n>`` for the others (a run id never ends
    in ``-<digits>``, so no run's pod has another's replica's name)."""
    base = pod_name(run_id)
    if replica == 0:
        return base
    return f"{base[: 62 - len(str(replica))].rstrip('-')}-{replica}"


def label_value(value: str) -> str:
    """A valid label value (at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def worker_identity() -> str:
    """The worker's pod name on Kubernetes (HOSTNAME), else the host name."""
    return label_value(os.environ.get("HOSTNAME") or socket.gethostname()) or "unknown"


def _quantities(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Quantities as strings (JSON numbers are accepted in the configuration)."""
    return {part: {k: str(v) for k, v in q.items()} for part, q in resources.items()}


def probe_handler(readiness: Readiness, port: int) -> dict[str, Any]:
    """The readiness probe's handler for what the model's protocol says ready means:
    a pod has one handler, so it is the last (most specific) GET among the checks,
    else a TCP connection to the port. What the kubelet cannot check (an answer's
    text, a POST) the worker checks itself before it scores
    (:meth:`KubernetesBackend._check_reachable`)."""
    gets = [c for c in readiness.checks if isinstance(c, HttpCheck) and c.method == "GET"]
    if gets:
        return {"httpGet": {"path": gets[-1].path, "port": port}}
    return {"tcpSocket": {"port": port}}


def pod_manifest(
    job: Job, spec: ModelSpec, settings: Settings, *, fleet: str, worker: str, replica: int = 0
) -> dict[str, Any]:
    """The pod of one run's ``replica``. Catalog entry keys override the
    SCOREFLEET_K8S_* defaults. Every pod the backend creates is made here, and one that
    would fail the restricted Pod Security Standard (a bug here) is refused, whatever
    its namespace admits."""
    extra = spec.extra
    port = port_of(spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": _quantities(extra.get("resources", settings.kubernetes.resources)),
        "readinessProbe": {
            **probe_handler(protocol_for(spec.protocol).readiness(spec), port),
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if extra.get("args"):
        container["args"] = list(extra["args"])
    if extra.get("env"):
        env = dict(extra["env"]).items()
        container["env"] = [{"name": str(k), "value": str(v)} for k, v in env]
    if extra.get("run_as_user"):
        container["securityContext"]["runAsUser"] = int(extra["run_as_user"])
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "Always",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": int(settings.kubernetes.active_deadline),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    node_selector = extra.get("node_selector", settings.kubernetes.node_selector)
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    tolerations = extra.get("tolerations", settings.kubernetes.tolerations)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    secrets = extra.get("image_pull_secrets", settings.kubernetes.image_pull_secrets)
    if secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    service_account = extra.get("service_account", settings.kubernetes.service_account)
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    annotations = {
        SOURCE_ANNOTATION: str(job.source),
        IMAGE_ANNOTATION: spec.image,
        RUN_ANNOTATION: job.run_id,
    }
    if job.version_id:
        annotations["scorefleet.io/source-version"] = job.version_id
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": replica_pod_name(job.run_id, replica),
            "namespace": job.k8s_namespace,
            "labels": {
                "app.kubernetes.io/name": "scorefleet-model",
                "app.kubernetes.io/component": "model",
                "app.kubernetes.io/managed-by": "scorefleet",
                FLEET_LABEL: fleet,
                RUN_LABEL: label_value(job.run_id),
                PIPELINE_LABEL: label_value(job.pipeline_id),
                WORKER_LABEL: worker,
                REPLICA_LABEL: str(replica),
            },
            "annotations": annotations,
        },
        "spec": pod_spec,
    }
    refused = restricted_violations(pod)
    if refused:
        raise ClusterConfigError(
            f"the pod of {spec.image} would fail the restricted Pod Security Standard "
            f"({'; '.join(refused)}); not creating it"
        )
    return pod


def pod_url(ip: str, port: int) -> str:
    return f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"
