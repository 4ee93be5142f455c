"""The kubernetes section of the settings: the clusters and namespaces files may
name (what every process needs, the Lambda included), and the pods' settings, read
here and checked in depth by the kubernetes backend (workers/backends/kubernetes/config.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scorefleet.settings.declare import Parser, comma_list, json_or_file, var
from scorefleet.settings.declare import number as num

#: Kubernetes namespace / DNS-1123 label.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", re.ASCII)
#: A cluster name (K8S_CLUSTERS keys and the k8s_cluster tag).
CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z", re.ASCII)


def _label(value: str) -> str:
    if not DNS1123_LABEL.match(value):
        raise ValueError("must be a DNS-1123 label (lowercase letters, digits, '-')")
    return value


def _namespace_list(value: str) -> tuple[str, ...]:
    items = comma_list()(value)
    bad = [n for n in items if not DNS1123_LABEL.match(n)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: not a namespace name (DNS-1123 label)")
    return items


def _namespaces(entry: Mapping[str, Any]) -> None:
    namespaces = entry.get("namespaces")
    if namespaces is not None and (
        not isinstance(namespaces, list)
        or not namespaces
        or not all(isinstance(n, str) and DNS1123_LABEL.match(n) for n in namespaces)
    ):
        raise ValueError("namespaces must be a non-empty list of namespace names")


def parse_clusters(value: str) -> dict[str, dict[str, Any]]:
    """K8S_CLUSTERS as far as every process needs it: the cluster names and their
    namespaces (what a file's tags may name). How to reach each cluster is checked
    by the kubernetes backend (:mod:`workers.backends.kubernetes.config`)."""
    if not value:
        return {}
    data = json_or_file(value)
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(v, dict) for v in data.values())
    ):
        raise ValueError('expected a JSON object {"<cluster name>": {...}, ...}')
    for name, entry in data.items():
        try:
            _namespaces(entry)
        except ValueError as exc:
            raise ValueError(f"cluster {name!r}: {exc}") from None
        if not CLUSTER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid cluster name")
    return data


def _json(empty: Any) -> Parser[Any]:
    """Inline JSON, checked by the kubernetes backend (workers/backends/kubernetes/config.py)."""

    def parse(value: str) -> Any:
        return json.loads(value) if value else empty

    return Parser(parse)


@dataclass(frozen=True)
class Kubernetes:
    """The kubernetes backend: the clusters and namespaces files may name (what every
    process needs), and the pods' settings (checked in depth by the backend,
    workers/backends/kubernetes/config.py, at worker start-up)."""

    default_cluster: str = var(
        "DEFAULT_K8S_CLUSTER",
        "default",
        "cluster used when a file has no k8s_cluster tag",
        _label,
        expected="a cluster name",
    )
    default_namespace: str = var(
        "DEFAULT_K8S_NAMESPACE",
        "scoring",
        "namespace used when a file has no k8s_namespace tag",
        _label,
        expected="a namespace name",
    )
    clusters: Mapping[str, Mapping[str, Any]] = var(
        "K8S_CLUSTERS",
        "",
        "kubernetes backend: the clusters a k8s_cluster tag may name, as JSON or a path to a "
        "JSON file (see docs/kubernetes.md); empty: DEFAULT_K8S_CLUSTER is the worker's own "
        "cluster (in-cluster config)",
        parse_clusters,
        expected="a cluster map",
    )
    namespaces: tuple[str, ...] = var(
        "K8S_NAMESPACES",
        "",
        "comma-separated namespaces a k8s_namespace tag may name on a cluster whose "
        "K8S_CLUSTERS entry lists none (and on the default cluster when K8S_CLUSTERS is "
        "empty); the reaper looks in the same ones. Empty: DEFAULT_K8S_NAMESPACE only",
        _namespace_list,
        expected="a list of namespaces",
    )
    resources: Mapping[str, Any] = var(
        "K8S_RESOURCES",
        '{"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}',
        "kubernetes backend: resources of a model container as JSON, as in a pod spec "
        "(catalog key resources overrides it per image)",
        _json({}),
        expected="a resources object",
    )
    node_selector: Mapping[str, str] = var(
        "K8S_NODE_SELECTOR",
        "",
        'kubernetes backend: nodeSelector of model pods as JSON, e.g. {"workload": "scoring"} '
        "(catalog key node_selector overrides it per image)",
        _json({}),
        expected="a node selector",
    )
    tolerations: tuple[Mapping[str, Any], ...] = var(
        "K8S_TOLERATIONS",
        "",
        "kubernetes backend: tolerations of model pods as a JSON list, as in a pod spec "
        "(catalog key tolerations overrides it per image)",
        _json([]),
        expected="a list of tolerations",
    )
    image_pull_secrets: tuple[str, ...] = var(
        "K8S_IMAGE_PULL_SECRETS",
        "",
        "kubernetes backend: comma-separated Secret names for pulling model images (none "
        "needed for ECR with the nodes' IAM role; catalog key image_pull_secrets overrides it)",
        comma_list(),
        expected="a list of names",
    )
    service_account: str = var(
        "K8S_SERVICE_ACCOUNT",
        "",
        "kubernetes backend: service account of model pods (default: the namespace's "
        "default); its token is never mounted",
        expected="a service account",
    )
    active_deadline: int = var(
        "K8S_ACTIVE_DEADLINE",
        "21600",
        "kubernetes backend: activeDeadlineSeconds of a model pod, the last-resort bound on "
        "its life",
        num(60, 7 * 86400),
    )
    unschedulable_timeout: float = var(
        "K8S_UNSCHEDULABLE_TIMEOUT",
        "120",
        "kubernetes backend: seconds a model pod may stay unschedulable before its launch "
        "is retried later (counted as a transient failure)",
        num(1, 3600, integer=False),
    )

    def namespaces_of(self, cluster: str) -> tuple[str, ...] | None:
        """The namespaces files may name on ``cluster`` (None: not a configured cluster)."""
        entry = self.clusters.get(cluster)
        return None if entry is None else tuple(entry.get("namespaces") or ())
