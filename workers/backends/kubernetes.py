"""The ``kubernetes`` launch backend: one pod per file, always torn down.

A run's pod is named after its run id (so the same file version always maps to
the same pod, and an AlreadyExists on launch means another attempt of this run
made it: it is adopted, not duplicated). Scoring reaches the pod directly at
``http://<pod IP>:<container port>``: the workers run in the cluster (or in a
peered VPC), so no per-file Service or Ingress is needed.

API calls per file on the happy path: one create, one watch, one delete. Launch
does not poll: it watches the one pod (``fieldSelector=metadata.name=<pod>``) and
decides on each event. The watch's socket read timeout is kept equal to the time
left before the deadline that currently applies (the launch timeout, or the
unschedulable timeout while the scheduler cannot place the pod), so a quiet pod
wakes the worker exactly when a deadline passes, with no second call.

Failures are sorted from the pod status (:func:`pod_state`):

* ``ErrImagePull`` / ``ImagePullBackOff`` / ``InvalidImageName`` -> permanent
  (:class:`ImagePullError`), within seconds;
* ``OOMKilled``, ``CrashLoopBackOff`` or any exit before the pod was ready ->
  permanent :class:`~scorefleet.errors.ModelError` with the container's last log lines;
* unschedulable for longer than ``SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT`` ->
  :class:`PodUnschedulable`, transient: the pod stays Pending (so the cluster
  autoscaler keeps working on it) and the step is retried later, then ``.error``;
* API answers 429/5xx and connection errors -> transient
  :class:`KubernetesApiError`; other 4xx -> permanent, with a hint (RBAC, ...).

Clusters (``SCOREFLEET_K8S_CLUSTERS``): the worker's own through in-cluster
config, another EKS cluster through its endpoint and CA with a token made like
``aws eks get-token`` (:mod:`workers.eks_token`), or a kubeconfig (development
and tests). Every API call goes through :class:`CountingApiClient`, so
:attr:`KubernetesBackend.calls` knows how many calls of each verb were made.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pydantic
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from scorefleet.errors import (
    AtCapacity,
    ModelError,
    PermanentError,
    PipelineError,
    Rejected,
    TransientError,
    Untrusted,
)
from scorefleet.job import Job
from scorefleet.settings import DNS1123_LABEL, ModelSpec, Settings
from scorefleet.vouch import check_run_id
from workers.backends.base import Endpoint
from workers.eks_token import EksTokenSource
from workers.protocols import probe, protocol_for

log = logging.getLogger(__name__)

CONTAINER = "model"
FLEET_LABEL = "scorefleet.io/fleet"
RUN_LABEL = "scorefleet.io/run-id"
PIPELINE_LABEL = "scorefleet.io/pipeline-id"
WORKER_LABEL = "scorefleet.io/worker"
RUN_ANNOTATION = "scorefleet.io/run-id"
SOURCE_ANNOTATION = "scorefleet.io/source"
IMAGE_ANNOTATION = "scorefleet.io/image"
#: warm mode: "idle" on a parked pod waiting for the next file of its image
WARM_LABEL = "scorefleet.io/warm"
PARKED_ANNOTATION = "scorefleet.io/parked-at"
USER_AGENT = "scorefleet-worker (kubernetes-python)"

#: (connect, read) seconds for every call but the watch.
API_TIMEOUT = (5.0, 30.0)
CONNECT_TIMEOUT = 5.0
LOG_LIMIT_BYTES = 64 * 1024
#: A watch that keeps ending early (a proxy cutting streams) stops being retried.
MAX_WATCHES = 20
TERMINATION_GRACE_SECONDS = 10

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CREATE_FAILURE_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


# --------------------------------------------------------------------- errors
class KubernetesApiError(PipelineError):
    """A call to the Kubernetes API failed (transient: 429, 5xx, no answer)."""

    kind = "KubernetesError"

    def __init__(self, message: str, *, status: int, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class ImagePullError(ModelError):
    """The model image cannot be pulled (missing, misspelt, no access)."""

    kind = "ImagePullError"


class PodUnschedulable(TransientError):
    """No node can take the pod (yet); the launch is retried later."""

    kind = "Unschedulable"


class ClusterConfigError(PermanentError):
    """The worker cannot set up a client for a configured cluster."""

    kind = "ClusterError"


_HINTS = {
    401: "the cluster does not accept the worker's credentials (on EKS: give the worker's "
    "IAM role an access entry in that cluster)",
    403: "the worker may not do this: bind it to the Role in docs/kubernetes.md in this namespace",
    404: "does the namespace exist in this cluster?",
    422: "the cluster refused the pod spec: check the SCOREFLEET_K8S_* settings and the "
    "model catalog entry",
}


def api_error(exc: ApiException, what: str, cluster: str) -> KubernetesApiError:
    """Sort an API error: 429, 5xx and no HTTP answer are transient, the rest permanent."""
    status = int(exc.status or 0)
    detail = str(exc.reason or "")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        detail = json.loads(exc.body or "{}").get("message") or detail
    hint = _HINTS.get(status, "")
    message = f"{what} on cluster {cluster!r} failed: HTTP {status}: {detail}".rstrip(": ")
    return KubernetesApiError(
        f"{message} ({hint})" if hint else message,
        status=status,
        transient=status in (0, 429) or status >= 500,
    )


@contextlib.contextmanager
def translated(what: str, cluster: str) -> Iterator[None]:
    """Turn client errors into pipeline errors with a message a user can act on."""
    try:
        yield
    except ApiException as exc:
        raise api_error(exc, what, cluster) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubernetesApiError(
            f"cannot reach the Kubernetes API of cluster {cluster!r} to {what}: {exc}",
            status=0,
            transient=True,
        ) from exc


# ---------------------------------------------------------------- API calls
def api_verb(method: str, url: str) -> str:
    """``"create pods"``, ``"watch pods"``, ``"get pods/log"``, ... for one request."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    rest = segments[2:] if segments[:1] == ["api"] else segments[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    plural, name, sub = [*rest, "", "", ""][:3]
    resource = f"{plural}/{sub}" if sub else plural or parts.path
    method = method.upper()
    if method == "GET":
        watch = parse_qs(parts.query).get("watch", [""])[0].lower() in {"true", "1"}
        verb = "watch" if watch else "get" if name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, method.lower()
        )
    return f"{verb} {resource}"


class ApiCallCounter:
    """Thread-safe count of Kubernetes API requests by verb and resource."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, verb: str) -> None:
        with self._lock:
            self._counts[verb] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def since(self, before: Mapping[str, int]) -> dict[str, int]:
        """Calls made after ``before`` (an earlier snapshot)."""
        now = self.snapshot()
        return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


class CountingApiClient(k8s.ApiClient):
    """The client's single request path, counted."""

    def __init__(self, configuration: k8s.Configuration, counter: ApiCallCounter) -> None:
        super().__init__(configuration)
        self.counter = counter
        self.user_agent = USER_AGENT

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.counter.add(api_verb(method, url))
        return super().call_api(method, url, *args, **kwargs)


# ------------------------------------------------------------- pod identity
def pod_name(run_id: str) -> str:
    """DNS-1123 label from the run id; deterministic (run ids are already valid)."""
    base = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    if base == run_id and DNS1123_LABEL.match(base):
        return base
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"{base[:52].strip('-') or 'sf'}-{digest}"


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


def _probe_handler(spec: ModelSpec, port: int) -> dict[str, Any]:
    """The readiness probe's handler: the model's protocol says what ready means."""
    handler = protocol_for(spec.protocol).pod_probe(spec)
    return {kind: {**body, "port": port} for kind, body in handler.items()}


def pod_manifest(
    job: Job, spec: ModelSpec, settings: Settings, *, fleet: str, worker: str
) -> dict[str, Any]:
    """The pod of one run. Catalog entry keys override the SCOREFLEET_K8S_* defaults."""
    extra = spec.extra
    port = spec.port
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": _quantities(extra.get("resources", settings.kubernetes.resources)),
        "readinessProbe": {
            **_probe_handler(spec, port),
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
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job.run_id),
            "namespace": job.k8s_namespace,
            "labels": {
                "app.kubernetes.io/name": "scorefleet-model",
                "app.kubernetes.io/component": "model",
                "app.kubernetes.io/managed-by": "scorefleet",
                FLEET_LABEL: fleet,
                RUN_LABEL: label_value(job.run_id),
                PIPELINE_LABEL: label_value(job.pipeline_id),
                WORKER_LABEL: worker,
            },
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


# --------------------------------------------------------------- pod status
@dataclass(frozen=True)
class PodState:
    """What one look at a pod says, for the launch decision."""

    ready: bool = False
    #: the scheduler's message while no node can take the pod
    unschedulable: str | None = None
    #: why the launch failed (None: not failed, or not yet)
    failure: str | None = None
    #: "pull", "start", "crash" (logs wanted) or "transient"
    failure_class: str = ""
    #: read the logs of the current container or of the previous (restarted) one
    previous_logs: bool = False
    #: the model container has started at least once (it may have logs)
    started: bool = False
    summary: str = ""


def _exit_text(term: Mapping[str, Any]) -> str:
    code = term.get("exitCode")
    text = f" with code {code}" if code is not None else ""
    reason = term.get("reason")
    if reason and reason not in {"Error", "Completed"}:
        text += f" ({reason})"
    return text


def readiness_of(pod: Mapping[str, Any]) -> str:
    """What the pod's readiness probe checks, as messages say it (``GET /ping``): the
    probe came from the model's protocol (pod_manifest)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    c = next((c for c in containers if c.get("name") == CONTAINER), containers[0])
    probe = c.get("readinessProbe") or {}
    if "httpGet" in probe:
        return f"GET {probe['httpGet'].get('path', '/')}"
    if "tcpSocket" in probe:
        return f"a connection to port {probe['tcpSocket'].get('port')}"
    return "GET /ping"


def pod_state(pod: Mapping[str, Any], image: str) -> PodState:
    """Sort a pod (as JSON) into ready / failed (how) / still starting."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return PodState(failure="the pod is being deleted", failure_class="transient")
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or []
    cs = next((c for c in statuses if c.get("name") == CONTAINER), statuses[0] if statuses else {})
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    waiting = state.get("waiting") or {}
    term, last_term = state.get("terminated"), last.get("terminated")
    reason, message = waiting.get("reason"), waiting.get("message") or ""
    started = bool(state.get("running") or term or last_term)
    if reason in IMAGE_PULL_REASONS:
        return PodState(
            failure=f"image {image} could not be pulled: {reason}: {message or 'no details'}",
            failure_class="pull",
        )
    if reason in CREATE_FAILURE_REASONS:
        return PodState(
            failure=f"the model container could not be started: {reason}: {message}",
            failure_class="start",
        )
    dead = term or last_term
    if dead and dead.get("reason") == "OOMKilled":
        limit = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        memory = ((limit.get("resources") or {}).get("limits") or {}).get("memory", "none")
        return PodState(
            failure="the model was killed for running out of memory (OOMKilled, memory "
            f"limit {memory})",
            failure_class="crash",
            previous_logs=not term,
            started=True,
        )
    if reason == "CrashLoopBackOff":
        return PodState(
            failure="the model keeps crashing (CrashLoopBackOff): it exited"
            f"{_exit_text(last_term or {})}",
            failure_class="crash",
            previous_logs=True,
            started=True,
        )
    if dead:
        return PodState(
            failure=f"the model exited{_exit_text(dead)} before it was ready ({readiness_of(pod)})",
            failure_class="crash",
            previous_logs=not term,
            started=True,
        )
    if phase in {"Failed", "Succeeded"}:
        why = status.get("reason") or phase
        return PodState(
            failure=f"the pod {phase.lower()} before it was ready ({why}): "
            f"{status.get('message') or 'no details'}",
            failure_class="transient" if why == "Evicted" else "crash",
            started=started,
        )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True" and bool(status.get("podIP"))
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = None
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        unschedulable = scheduled.get("message") or "no node can take the pod"
    if unschedulable:
        summary = f"unschedulable: {unschedulable}"
    elif reason:
        summary = f"pod {phase}, container waiting: {reason}"
    elif state.get("running"):
        summary = f"the model is running but {readiness_of(pod)} does not answer yet"
    else:
        summary = f"pod {phase}"
    return PodState(
        ready=ready,
        unschedulable=unschedulable,
        started=started,
        summary=summary,
    )


def _set_read_timeout(resp: Any, seconds: float) -> None:
    """Move the read deadline of a streaming response (the watch) to ``seconds`` from now."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(0.05, seconds))


def _pod_url(ip: str, port: int) -> str:
    return f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"


def _created_at(pod: Mapping[str, Any]) -> float | None:
    stamp = (pod.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------ clusters
class PodsApi:
    """The pod calls the backend makes, on JSON. (The typed client methods do not
    describe raw answers, ``_preload_content=False``, which skip building models.)"""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self._core: Any = core

    def create(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        try:  # the client checks the body against its V1Pod model first
            resp = self._core.create_namespaced_pod(
                ns, body, _preload_content=False, _request_timeout=API_TIMEOUT
            )
        except pydantic.ValidationError as exc:
            raise ClusterConfigError(f"the pod spec is not valid: {exc}") from exc
        return cast(dict[str, Any], json.loads(resp.data))

    def watch(
        self, ns: str, name: str, *, resource_version: str | None, timeout: int, read: float
    ) -> urllib3.BaseHTTPResponse:
        """A watch of one pod; the caller reads the stream and closes it."""
        return cast(
            urllib3.BaseHTTPResponse,
            self._core.list_namespaced_pod(
                ns,
                field_selector=f"metadata.name={name}",
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, read),
            ),
        )

    def read(self, ns: str, name: str) -> dict[str, Any]:
        resp = self._core.read_namespaced_pod(
            name, ns, _preload_content=False, _request_timeout=API_TIMEOUT
        )
        return cast(dict[str, Any], json.loads(resp.data))

    def read_log(self, ns: str, name: str, *, lines: int, previous: bool) -> bytes:
        resp = self._core.read_namespaced_pod_log(
            name,
            ns,
            container=CONTAINER,
            tail_lines=lines,
            previous=previous,
            limit_bytes=LOG_LIMIT_BYTES,
            _preload_content=False,
            _request_timeout=API_TIMEOUT,
        )
        return bytes(resp.data)

    def delete(self, ns: str, name: str) -> None:
        self._core.delete_namespaced_pod(
            name, ns, _preload_content=False, _request_timeout=API_TIMEOUT
        )

    def patch(self, ns: str, name: str, body: dict[str, Any]) -> None:
        """A JSON merge patch (labels and annotations of a warm pod)."""
        self._core.patch_namespaced_pod(
            name, ns, body, _preload_content=False, _request_timeout=API_TIMEOUT
        )

    def list(self, ns: str, label_selector: str) -> list[dict[str, Any]]:
        resp = self._core.list_namespaced_pod(
            ns, label_selector=label_selector, _preload_content=False, _request_timeout=API_TIMEOUT
        )
        return cast(list[dict[str, Any]], json.loads(resp.data).get("items") or [])


@dataclass
class ParkedPod:
    name: str
    url: str
    handle: dict[str, Any]
    parked_at: float


@dataclass
class Cluster:
    name: str
    api: PodsApi
    #: the namespaces pods may run in (Settings.namespaces_of: never empty)
    namespaces: tuple[str, ...]


def cluster_configuration(name: str, entry: Mapping[str, Any], region: str) -> k8s.Configuration:
    """A client configuration for one entry of SCOREFLEET_K8S_CLUSTERS."""
    cfg = k8s.Configuration()
    try:
        if entry.get("in_cluster"):
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        elif entry.get("kubeconfig"):
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.path.expanduser(str(entry["kubeconfig"])),
                context=entry.get("context") or None,
                client_configuration=cfg,
                persist_config=False,
            )
        else:
            cfg.host = str(entry["endpoint"]).rstrip("/")
            if entry.get("ca_file"):
                cfg.ssl_ca_cert = os.path.expanduser(str(entry["ca_file"]))
            elif entry.get("ca_data"):
                cfg.ca_cert_data = base64.b64decode(str(entry["ca_data"])).decode("ascii")
            tokens = EksTokenSource(str(entry["eks_cluster_name"]), entry.get("region") or region)
            cfg.api_key = {"BearerToken": ""}
            cfg.api_key_prefix = {"BearerToken": "Bearer"}

            def refresh(c: k8s.Configuration) -> None:
                c.api_key["BearerToken"] = tokens.token()

            cast(Any, cfg).refresh_api_key_hook = refresh  # typed as None in the client
    except (ConfigException, OSError, ValueError) as exc:
        raise ClusterConfigError(f"cannot set up a client for cluster {name!r}: {exc}") from exc
    # connection errors: two quick retries in urllib3; never a replay of a sent request
    cfg.retries = urllib3.Retry(
        total=2, connect=2, read=0, redirect=0, status=0, other=0, backoff_factor=0.2
    )
    cfg.connection_pool_maxsize = 32
    return cfg


# ------------------------------------------------------------------- backend
class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        *,
        worker: str | None = None,
    ) -> None:
        self.settings = settings
        self.clusters_config = dict(settings.kubernetes.clusters)
        self.launch_timeout = float(settings.models.launch_timeout)
        self.unschedulable_timeout = float(settings.kubernetes.unschedulable_timeout)
        self.log_lines = settings.models.log_lines
        self.fleet = label_value(settings.broker.queue) or "scorefleet"
        self.worker = worker or worker_identity()
        self.calls = ApiCallCounter()
        self._clusters: dict[str, Cluster] = {}
        self._lock = threading.Lock()
        # warm mode: the pods this worker parked, per (cluster, namespace, image)
        self.warm_idle = float(settings.launch.warm_idle_seconds)
        self.warm_max = int(settings.launch.warm_max_per_image)
        self._warm: dict[tuple[str, str, str], list[ParkedPod]] = {}
        # the pod name and URL of each run this process launched (see endpoint())
        self._endpoints: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # --------------------------------------------------------------- clusters
    def cluster(self, name: str) -> Cluster:
        """The client of a configured cluster; an unknown name is refused at once."""
        with self._lock:
            if name in self._clusters:
                return self._clusters[name]
            entry = self.clusters_config.get(name)
            if entry is None:
                known = ", ".join(sorted(self.clusters_config)) or "none"
                raise Rejected(
                    f"k8s_cluster {name!r} is not a configured cluster (configured: {known}); "
                    "fix the file's k8s_cluster tag or add the cluster to SCOREFLEET_K8S_CLUSTERS"
                )
            cfg = cluster_configuration(name, entry, self.settings.aws.region)
            api = PodsApi(k8s.CoreV1Api(CountingApiClient(cfg, self.calls)))
            cluster = Cluster(name, api, self.settings.kubernetes.namespaces_of(name) or ())
            self._clusters[name] = cluster
            return cluster

    def _place(self, job: Job) -> tuple[Cluster, str]:
        """The run's cluster and namespace, if both are configured."""
        cluster = self.cluster(job.k8s_cluster)
        ns = job.k8s_namespace
        if ns not in cluster.namespaces:
            raise Rejected(
                f"k8s_namespace {ns!r} is not enabled for cluster {cluster.name!r} "
                f"(namespaces: {', '.join(cluster.namespaces)})"
            )
        return cluster, ns

    def _target(self, job: Job) -> tuple[Cluster, str, str]:
        """The run's cluster, namespace and pod name: the name made from its run id.
        A warm pod this run reused keeps the name of the run that created it; such a
        pod (and, in warm mode, any) is taken only if it says it is this run's."""
        cluster, ns = self._place(job)
        name = pod_name(check_run_id(job.run_id))
        claimed = job.handle.get("pod")
        if claimed is not None and claimed != name:
            if not isinstance(claimed, str) or not DNS1123_LABEL.match(claimed):
                raise Untrusted(f"{claimed!r} is not a pod name")
            name = claimed
            self._owned(cluster, ns, name, job)
        elif self.warm_idle > 0:  # another run may have reused this run's pod
            self._owned(cluster, ns, name, job)
        return cluster, ns, name

    def _owned(self, cluster: Cluster, ns: str, name: str, job: Job) -> dict[str, Any] | None:
        """The pod ``ns/name`` if it is this fleet's pod of ``job``'s run; None if
        there is none; :class:`Untrusted` if it is another's (never touched)."""
        with translated(f"read pod {ns}/{name}", cluster.name):
            try:
                pod = cluster.api.read(ns, name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        labels = (pod.get("metadata") or {}).get("labels") or {}
        fleet, run = labels.get(FLEET_LABEL), labels.get(RUN_LABEL)
        if fleet != self.fleet or run != label_value(job.run_id):
            raise Untrusted(
                f"pod {ns}/{name} on cluster {cluster.name!r} is not this fleet's pod of run "
                f"{job.run_id} (its labels: fleet {fleet!r}, run {run!r}); not touching it"
            )
        return pod

    def endpoint(self, job: Job) -> str | None:
        """The URL of the run's pod: the one this process recorded at launch, else read
        from the API by the run's pod name, labelled as this fleet's pod of the run."""
        return self._url_of(*self._target(job), job)

    def _url_of(self, cluster: Cluster, ns: str, name: str, job: Job) -> str | None:
        with self._lock:
            known = self._endpoints.get(job.run_id)
        if known is not None and known[0] == name:
            return known[1]
        pod = self._owned(cluster, ns, name, job)
        ip = ((pod or {}).get("status") or {}).get("podIP")
        if pod is None or not ip:
            return None
        containers = (pod.get("spec") or {}).get("containers") or []
        model: dict[str, Any] = next((c for c in containers if c.get("name") == CONTAINER), {})
        port = int(((model.get("ports") or [{}])[0]).get("containerPort") or 8080)
        return _pod_url(str(ip), port)

    def _remember(self, run_id: str, name: str, url: str) -> None:
        with self._lock:
            self._endpoints[run_id] = (name, url)
            while len(self._endpoints) > 4096:
                self._endpoints.popitem(last=False)

    # ----------------------------------------------------------------- launch
    def has_room(self, spec: ModelSpec) -> bool:
        """Always: room on a cluster is the scheduler's and the ResourceQuota's call
        (a launch refused by the quota waits its turn like one refused here)."""
        return True

    def launch(self, job: Job, spec: ModelSpec) -> Endpoint:
        cluster, ns = self._place(job)
        name = pod_name(check_run_id(job.run_id))  # its own (not a dead warm one it had)
        if self.warm_idle > 0 and "pod" not in job.handle:
            warm = self._claim_warm(job, spec, cluster, ns)
            if warm is not None:
                self._remember(job.run_id, str(warm.handle["pod"]), warm.url)
                return warm
        manifest = pod_manifest(job, spec, self.settings, fleet=self.fleet, worker=self.worker)
        created: dict[str, Any] | None = None
        try:
            with translated(f"create pod {ns}/{name}", cluster.name):
                try:
                    created = cluster.api.create(ns, manifest)
                    log.info("created pod %s/%s (%s) on %s", ns, name, spec.image, cluster.name)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    log.info("adopting pod %s/%s of this run on %s", ns, name, cluster.name)
        except KubernetesApiError as exc:
            if exc.status == 403 and "exceeded quota" in exc.message:
                raise AtCapacity(exc.message) from exc  # the namespace's ResourceQuota is full
            if exc.status == 403:
                raise Rejected(exc.message) from exc
            raise
        # the catalog may give an image more time (large models load slowly)
        launch_timeout = float(spec.extra.get("launch_timeout", self.launch_timeout))
        pod = self._wait_ready(cluster, ns, name, spec, created, launch_timeout)
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(FLEET_LABEL) != self.fleet or labels.get(RUN_LABEL) != label_value(
            job.run_id
        ):  # an AlreadyExists for a pod that is not this run's (warm mode reused it)
            raise TransientError(f"pod {ns}/{name} is another run's now; launching again later")
        ip = str(pod["status"]["podIP"])
        url = _pod_url(ip, spec.port)
        self._check_reachable(url, ns, name, spec)
        self._remember(job.run_id, name, url)
        return Endpoint(
            url=url,
            handle={
                "cluster": cluster.name,
                "namespace": ns,
                "pod": name,
                "pod_ip": ip,
                "port": spec.port,
                "node": (pod.get("spec") or {}).get("nodeName"),
            },
        )

    def _wait_ready(
        self,
        cluster: Cluster,
        ns: str,
        name: str,
        spec: ModelSpec,
        created: dict[str, Any] | None,
        launch_timeout: float,
    ) -> dict[str, Any]:
        """Watch the pod until it is Ready; raise as soon as it cannot become so."""
        clock = time.monotonic
        launch_deadline = clock() + launch_timeout
        unschedulable_deadline: float | None = None
        last = PodState(summary="no status yet")

        def ready(pod: dict[str, Any]) -> bool:
            nonlocal last, launch_deadline, unschedulable_deadline
            last = pod_state(pod, spec.image)
            if last.failure:
                raise self._failure(cluster, ns, name, last)
            if last.ready:
                return True
            now = clock()
            if last.unschedulable and unschedulable_deadline is None:
                log.warning("pod %s/%s is unschedulable: %s", ns, name, last.unschedulable)
                unschedulable_deadline = now + self.unschedulable_timeout
            elif not last.unschedulable and unschedulable_deadline is not None:
                unschedulable_deadline = None  # scheduled after all: the launch clock restarts
                launch_deadline = max(launch_deadline, now + launch_timeout)
            return False

        def deadline() -> float:
            return unschedulable_deadline if unschedulable_deadline is not None else launch_deadline

        if created is not None and ready(created):
            return created
        rv = ((created or {}).get("metadata") or {}).get("resourceVersion")
        # the server ends the watch by itself at the latest possible deadline
        server_timeout = math.ceil(launch_timeout + self.unschedulable_timeout) + 5
        for _ in range(MAX_WATCHES):
            remaining = deadline() - clock()
            if remaining <= 0:
                raise self._timeout(cluster, ns, name, last, launch_timeout)
            opened, events = clock(), 0
            with translated(f"watch pod {ns}/{name}", cluster.name):
                resp = cluster.api.watch(
                    ns, name, resource_version=rv, timeout=server_timeout, read=remaining + 0.5
                )
            try:
                for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                    event = json.loads(line) if line.strip() else {}
                    events += 1
                    kind, obj = event.get("type"), event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # our resourceVersion is too old
                            rv = None
                            break
                        code = int(obj.get("code") or 500)
                        raise KubernetesApiError(
                            f"watching pod {ns}/{name} on cluster {cluster.name!r} failed: "
                            f"{obj.get('message') or obj.get('reason')}",
                            status=code,
                            transient=code == 429 or code >= 500,
                        )
                    rv = meta.get("resourceVersion") or rv
                    if kind in {"ADDED", "MODIFIED", "DELETED"} and meta.get("name") == name:
                        if kind == "DELETED":
                            raise TransientError(
                                f"pod {ns}/{name} was deleted before the model was ready"
                            )
                        if ready(obj):
                            return obj
                    _set_read_timeout(resp, deadline() - clock())
            except urllib3.exceptions.ReadTimeoutError:
                pass  # a deadline passed (checked above) or the stream went quiet
            except (urllib3.exceptions.ProtocolError, OSError) as exc:
                log.info("the watch of pod %s/%s ended (%s); watching again", ns, name, exc)
            except ValueError as exc:
                log.warning("unreadable watch event for pod %s/%s: %s", ns, name, exc)
            finally:
                resp.close()
                resp.release_conn()
            if not events and clock() - opened < 1.0 and deadline() > clock() + 1.0:
                time.sleep(1.0)  # a stream that ends at once, empty: do not hammer the server
        raise TransientError(f"the watch of pod {ns}/{name} kept ending early")

    def _failure(self, cluster: Cluster, ns: str, name: str, state: PodState) -> PipelineError:
        message = str(state.failure)
        if state.failure_class == "pull":
            return ImagePullError(message)
        if state.failure_class == "transient":
            return TransientError(f"pod {ns}/{name}: {message}")
        logs = ""
        if state.started:
            logs = self._read_logs(cluster, ns, name, self.log_lines, previous=state.previous_logs)
        return ModelError(message, model_logs=logs)

    def _timeout(
        self, cluster: Cluster, ns: str, name: str, state: PodState, launch_timeout: float
    ) -> PipelineError:
        if state.unschedulable:
            return PodUnschedulable(
                f"pod {ns}/{name} could not be scheduled within "
                f"{self.unschedulable_timeout:g}s: {state.unschedulable}"
            )
        logs = self._read_logs(cluster, ns, name, self.log_lines) if state.started else ""
        return ModelError(
            f"the model did not become ready within {launch_timeout:g}s ({state.summary})",
            model_logs=logs,
        )

    def _check_reachable(self, url: str, ns: str, name: str, spec: ModelSpec) -> None:
        if not probe(url, spec, timeout=5.0):
            readiness = protocol_for(spec.protocol).describe_readiness(spec)
            raise TransientError(
                f"pod {ns}/{name} is Ready but the worker cannot reach {url} ({readiness}; "
                "is a NetworkPolicy in the way?)"
            )

    # ---------------------------------------------------------------- queries
    def is_alive(self, job: Job) -> bool:
        try:
            cluster, ns, name = self._target(job)
        except Rejected:
            return False
        pod = self._owned(cluster, ns, name, job)
        if pod is None:
            return False
        state = pod_state(pod, job.model_image)
        return not state.failure and (pod.get("status") or {}).get("phase") == "Running"

    def logs(self, job: Job, lines: int) -> str:
        try:
            cluster, ns, name = self._target(job)
        except Rejected:
            return ""
        return self._read_logs(cluster, ns, name, lines)

    def _read_logs(
        self, cluster: Cluster, ns: str, name: str, lines: int, *, previous: bool = False
    ) -> str:
        if lines <= 0:
            return ""
        try:
            with translated(f"read the logs of pod {ns}/{name}", cluster.name):
                data = cluster.api.read_log(ns, name, lines=lines, previous=previous)
        except PipelineError as exc:
            log.info("no logs from pod %s/%s: %s", ns, name, exc)
            return ""
        text = data.decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -------------------------------------------------------------------- warm
    # Warm mode keeps the pods a worker parked in that worker's memory: a worker
    # reuses only its own (no cross-worker claims, so no race for one pod), and the
    # labels and annotations it sets let the reaper expire what a dead worker parked.
    def _claim_warm(self, job: Job, spec: ModelSpec, cluster: Cluster, ns: str) -> Endpoint | None:
        self._expire_own_warm()
        key = (cluster.name, ns, spec.image)
        while True:
            with self._lock:
                pool = self._warm.get(key) or []
                if not pool:
                    return None
                parked = pool.pop()  # the most recently parked
            if not probe(parked.url, spec):
                self._delete_quietly(cluster, ns, parked.name)
                continue
            with translated(f"claim warm pod {ns}/{parked.name}", cluster.name):
                cluster.api.patch(
                    ns,
                    parked.name,
                    {
                        "metadata": {
                            "labels": {
                                WARM_LABEL: None,
                                RUN_LABEL: label_value(job.run_id),
                                PIPELINE_LABEL: label_value(job.pipeline_id),
                            },
                            "annotations": {
                                PARKED_ANNOTATION: None,
                                RUN_ANNOTATION: job.run_id,
                                SOURCE_ANNOTATION: str(job.source),
                            },
                        }
                    },
                )
            log.info("reusing warm pod %s/%s for this file", ns, parked.name)
            return Endpoint(url=parked.url, handle={**parked.handle, "warm": True})

    def _park(self, job: Job, cluster: Cluster, ns: str, name: str) -> bool:
        """Keep this run's healthy pod (``name``, as _target found it) for this
        worker's next file of its image."""
        if not job.handle.get("pod"):
            return False
        url = self._url_of(cluster, ns, name, job)
        if not url or not probe(url, self.settings.models.spec(job.model_image)):
            return False
        key = (cluster.name, ns, job.model_image)
        with self._lock:
            if len(self._warm.get(key) or []) >= self.warm_max:
                return False
        now = time.time()
        with translated(f"park pod {ns}/{name}", cluster.name):
            cluster.api.patch(
                ns,
                name,
                {
                    "metadata": {
                        "labels": {WARM_LABEL: "idle"},
                        "annotations": {PARKED_ANNOTATION: f"{now:.0f}"},
                    }
                },
            )
        with self._lock:
            self._warm.setdefault(key, []).append(
                ParkedPod(
                    name=name,
                    url=url,
                    handle={"cluster": cluster.name, "namespace": ns, "pod": name},
                    parked_at=now,
                )
            )
        log.info("parked pod %s/%s warm for %gs", ns, name, self.warm_idle)
        return True

    def _expire_own_warm(self) -> None:
        now = time.time()
        doomed: list[tuple[str, str, ParkedPod]] = []
        with self._lock:
            for (cluster_name, ns, _image), pool in self._warm.items():
                keep = [p for p in pool if now - p.parked_at <= self.warm_idle]
                doomed += [(cluster_name, ns, p) for p in pool if p not in keep]
                pool[:] = keep
        for cluster_name, ns, parked in doomed:
            self._delete_quietly(self.cluster(cluster_name), ns, parked.name)

    def _delete_quietly(self, cluster: Cluster, ns: str, name: str) -> None:
        try:
            self._delete(cluster, ns, name)
        except PipelineError as exc:  # the reaper removes it later
            log.warning("could not delete pod %s/%s: %s", ns, name, exc)

    # --------------------------------------------------------------- teardown
    def teardown(self, job: Job) -> bool:
        """Delete the run's pod, or park it (warm mode, after a success)."""
        try:
            cluster, ns, name = self._target(job)
        except Rejected:
            return False  # the launch was refused too: nothing was made
        if not DNS1123_LABEL.match(ns):
            return False
        if self.warm_idle > 0 and job.failure is None and not job.skipped:
            try:
                if self._park(job, cluster, ns, name):
                    return True
            except PipelineError as exc:
                log.warning("could not park pod %s/%s: %s", ns, name, exc)
        return self._delete(cluster, ns, name)

    def _delete(self, cluster: Cluster, ns: str, name: str) -> bool:
        with self._lock:
            for run, (known, _url) in list(self._endpoints.items()):
                if known == name:
                    del self._endpoints[run]
        with translated(f"delete pod {ns}/{name}", cluster.name):
            try:
                cluster.api.delete(ns, name)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                if exc.status == 403:  # could not have been created there either
                    log.warning("may not delete pods in %s on %s: %s", ns, cluster.name, exc)
                    return False
                raise
        log.info("deleted pod %s/%s on cluster %s", ns, name, cluster.name)
        return True

    def reap(self, max_age: float, is_finished: Callable[[str], bool]) -> list[str]:
        """Delete this fleet's pods whose run is finished or that are older than
        ``max_age``, in every namespace the reaper knows of: one list call per
        cluster and namespace."""
        removed: list[str] = []
        now = time.time()
        for cluster_name in self.clusters_config:
            for ns in self.settings.kubernetes.namespaces_of(cluster_name) or ():
                try:
                    cluster = self.cluster(cluster_name)
                    removed += self._reap_namespace(cluster, ns, now, max_age, is_finished)
                except PipelineError as exc:
                    log.warning("reaper: skipped %s on cluster %s: %s", ns, cluster_name, exc)
        return removed

    def _reap_namespace(
        self,
        cluster: Cluster,
        ns: str,
        now: float,
        max_age: float,
        is_finished: Callable[[str], bool],
    ) -> list[str]:
        with translated(f"list pods in {ns}", cluster.name):
            pods = cluster.api.list(ns, label_selector=f"{FLEET_LABEL}={self.fleet}")
        removed: list[str] = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
            run_id = notes.get(RUN_ANNOTATION) or labels.get(RUN_LABEL)
            if labels.get(FLEET_LABEL) != self.fleet or not run_id or not meta.get("name"):
                continue  # not ours, whatever the server's selector said
            created = _created_at(pod)
            try:
                if labels.get(WARM_LABEL) == "idle":  # parked: expires after the idle limit
                    parked_at = float(notes.get(PARKED_ANNOTATION) or 0)
                    if now - parked_at <= self.warm_idle:
                        continue
                else:
                    old = created is not None and now - created > max_age
                    if not (old or is_finished(run_id)):
                        continue
            except Exception as exc:
                log.warning("reaper: cannot tell whether run %s is finished: %s", run_id, exc)
                continue
            if self._delete(cluster, ns, str(meta["name"])):
                removed.append(run_id)
        return removed
