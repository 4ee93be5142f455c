"""The Kubernetes API as the backend uses it: errors mapped to the pipeline's, a
client that counts its calls by verb, the pod calls on raw JSON, and the client
configuration of each cluster (in-cluster, kubeconfig, or an EKS endpoint with tokens)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pydantic
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from scorefleet.errors import (
    ModelError,
    PermanentError,
    PipelineError,
    TransientError,
)
from workers.backends.kubernetes.eks_token import EksTokenSource

log = logging.getLogger("workers.backends.kubernetes")

CONTAINER = "model"
USER_AGENT = "scorefleet-worker (kubernetes-python)"
#: (connect, read) seconds for every call but the watch.
API_TIMEOUT = (5.0, 30.0)
CONNECT_TIMEOUT = 5.0
LOG_LIMIT_BYTES = 64 * 1024


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
    #: no room rather than a failure: a file's other replicas go on without this one
    #: (workers/backends/replicas.py)
    no_room = True


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


def set_read_timeout(resp: Any, seconds: float) -> None:
    """Move the read deadline of a streaming response (the watch) to ``seconds`` from now."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(0.05, seconds))


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

    def read_namespace(self, name: str) -> dict[str, Any]:
        """The Namespace object itself (its Pod Security Admission labels)."""
        resp = self._core.read_namespace(name, _preload_content=False, _request_timeout=API_TIMEOUT)
        return cast(dict[str, Any], json.loads(resp.data))

    def list(self, ns: str, label_selector: str) -> list[dict[str, Any]]:
        resp = self._core.list_namespaced_pod(
            ns, label_selector=label_selector, _preload_content=False, _request_timeout=API_TIMEOUT
        )
        return cast(list[dict[str, Any]], json.loads(resp.data).get("items") or [])


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
