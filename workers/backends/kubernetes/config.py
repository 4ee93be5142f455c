"""The ``kubernetes`` backend's own settings, checked in depth: how each cluster is
reached (in-cluster, a kubeconfig, or an endpoint with its CA and EKS name), the
pods' resources, node selector, tolerations, pull secrets and service account, and
the per-image catalog keys (:data:`CATALOG_OPTIONS`: the same, plus ``port``,
``args``, ``run_as_user``).

The variables are declared with the rest in :mod:`scorefleet.settings` (one table,
one ``scorefleet config``); only what the Lambda needs is checked there (cluster
names and their namespaces). These checks run at worker start-up, in ``scorefleet
config`` and in the chart's tests (:func:`workers.settings.load`). Importing this
module loads no kubernetes client (the package's ``__init__`` imports it lazily):
these checks read the values only.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scorefleet.settings import VARIABLES, ModelSpec, Variable
from scorefleet.settings.declare import Reader

#: DNS-1123 subdomain: names of Secrets and ServiceAccounts.
DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z", re.ASCII
)
#: A Kubernetes resource quantity: 500m, 2Gi, 1.5, 1e3, ...
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?\Z", re.ASCII)
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+\Z", re.ASCII)
_LOOPBACK_HTTP = re.compile(
    r"^http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)(:\d+)?/?\Z", re.ASCII
)
_CLUSTER_MODES = ("in_cluster", "kubeconfig", "endpoint")
_CLUSTER_KEYS = {
    "in_cluster": set(),
    "kubeconfig": {"context"},
    "endpoint": {"ca_data", "ca_file", "eks_cluster_name", "region"},
}


# ------------------------------------------------------------------- clusters
def check_cluster(entry: Mapping[str, Any]) -> None:
    modes = [m for m in _CLUSTER_MODES if entry.get(m)]
    if len(modes) != 1:
        raise ValueError('give exactly one of "in_cluster": true, "kubeconfig" or "endpoint"')
    mode = modes[0]
    allowed = {mode, "namespaces", *_CLUSTER_KEYS[mode]}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"unexpected keys {unknown} with {mode!r} (allowed: {sorted(allowed)})")
    if mode == "in_cluster" and entry["in_cluster"] is not True:
        raise ValueError('"in_cluster" must be true')
    if mode == "kubeconfig":
        path = Path(str(entry["kubeconfig"])).expanduser()
        if not path.is_file():
            raise ValueError(f"kubeconfig: no such file: {path}")
        if not isinstance(entry.get("context", ""), str):
            raise ValueError("context must be a string")
    if mode == "endpoint":
        _check_endpoint(entry)


def _check_endpoint(entry: Mapping[str, Any]) -> None:
    endpoint = entry["endpoint"]
    if not isinstance(endpoint, str) or not (
        endpoint.startswith("https://") or _LOOPBACK_HTTP.match(endpoint)
    ):
        raise ValueError("endpoint must be an https:// URL (http:// only for a loopback emulator)")
    if not isinstance(entry.get("eks_cluster_name"), str) or not entry["eks_cluster_name"]:
        raise ValueError("eks_cluster_name is required with endpoint (the token is made for it)")
    if "ca_data" in entry and "ca_file" in entry:
        raise ValueError("give ca_data or ca_file, not both")
    if endpoint.startswith("https://") and not (entry.get("ca_data") or entry.get("ca_file")):
        raise ValueError("ca_data or ca_file is required with an https endpoint")
    if "ca_data" in entry:
        try:
            pem = base64.b64decode(str(entry["ca_data"]), validate=True)
        except ValueError:
            pem = b""
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError(
                "ca_data must be a base64-encoded PEM certificate (as in a kubeconfig)"
            )
    if "ca_file" in entry and not Path(str(entry["ca_file"])).expanduser().is_file():
        raise ValueError(f"ca_file: no such file: {entry['ca_file']}")
    region = entry.get("region")
    if region is not None and not (isinstance(region, str) and _AWS_REGION.match(region)):
        raise ValueError(f"region {region!r} is not an AWS region")


def check_clusters(clusters: Mapping[str, Mapping[str, Any]]) -> None:
    for name, entry in clusters.items():
        try:
            check_cluster(entry)
        except ValueError as exc:
            raise ValueError(f"cluster {name!r}: {exc}") from None


# ----------------------------------------------------------------------- pods
def check_resources(obj: Any) -> None:
    if not isinstance(obj, dict) or set(obj) - {"requests", "limits"}:
        raise ValueError('expected {"requests": {...}, "limits": {...}}')
    for part, quantities in obj.items():
        if not isinstance(quantities, dict):
            raise ValueError(f"{part} must be an object")
        for resource, q in quantities.items():
            if isinstance(q, bool) or not isinstance(q, str | int | float):
                raise ValueError(f"{part}.{resource}: {q!r} is not a quantity")
            if not _QUANTITY.match(str(q)):
                raise ValueError(f"{part}.{resource}: {q!r} is not a quantity (e.g. 500m, 2Gi)")


def check_string_map(obj: Any) -> None:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ValueError('expected an object of strings, e.g. {"workload": "scoring"}')


def check_tolerations(obj: Any) -> None:
    keys = {"key", "operator", "value", "effect", "tolerationSeconds"}
    if not isinstance(obj, list | tuple) or not all(isinstance(t, dict) for t in obj):
        raise ValueError("expected a list of tolerations")
    for t in obj:
        if set(t) - keys:
            raise ValueError(f"unexpected keys {sorted(set(t) - keys)} (allowed: {sorted(keys)})")
        if t.get("operator", "Equal") not in {"Equal", "Exists"}:
            raise ValueError("operator must be Equal or Exists")
        if t.get("effect", "") not in {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}:
            raise ValueError("effect must be NoSchedule, PreferNoSchedule or NoExecute")


def check_names(obj: Any) -> None:
    if not isinstance(obj, list | tuple) or not all(
        isinstance(n, str) and DNS1123_SUBDOMAIN.match(n) for n in obj
    ):
        raise ValueError("expected a list of Secret names")


def check_name(obj: Any) -> None:
    if not isinstance(obj, str) or not (obj == "" or DNS1123_SUBDOMAIN.match(obj)):
        raise ValueError("must be a DNS-1123 name (lowercase letters, digits, '-', '.')")


def _check_args(obj: Any) -> None:
    if not isinstance(obj, list) or not all(isinstance(a, str) for a in obj):
        raise ValueError('expected a list of strings, e.g. ["serve"]')


def _check_uid(obj: Any) -> None:
    if isinstance(obj, bool) or not isinstance(obj, int) or not 1 <= obj <= 2**31 - 1:
        raise ValueError("expected a non-root user id (a positive integer)")


def check_port(obj: Any) -> None:
    if isinstance(obj, bool) or not isinstance(obj, int) or not 1 <= obj <= 65535:
        raise ValueError(f"expected a port number (1..65535), not {obj!r}")


#: The container port of a model whose catalog entry gives none.
DEFAULT_PORT = 8080


def port_of(spec: ModelSpec) -> int:
    """The model container's port (catalog ``port``)."""
    return int(spec.extra.get("port", DEFAULT_PORT))


#: Per-image kubernetes settings a model catalog entry may carry.
CATALOG_OPTIONS: dict[str, Callable[[Any], None]] = {
    "port": check_port,
    "resources": check_resources,
    "node_selector": check_string_map,
    "tolerations": check_tolerations,
    "image_pull_secrets": check_names,
    "service_account": check_name,
    "args": _check_args,
    "run_as_user": _check_uid,
}


#: {variable: check of its parsed value}; empty variables are not checked (their
#: defaults are good). The catalog's keys are checked with every other key of the
#: catalog (:data:`CATALOG_OPTIONS`, :mod:`workers.catalog`).
CHECKS: dict[str, Callable[[Any], None]] = {
    "K8S_CLUSTERS": check_clusters,
    "K8S_RESOURCES": check_resources,
    "K8S_NODE_SELECTOR": check_string_map,
    "K8S_TOLERATIONS": check_tolerations,
    "K8S_IMAGE_PULL_SECRETS": check_names,
    "K8S_SERVICE_ACCOUNT": check_name,
}
_VARIABLES: dict[str, Variable] = {v.name: v for v in VARIABLES}


def problems(environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the kubernetes settings of ``environ``, one problem per
    variable, worded as :func:`scorefleet.settings.load` words its own. A value the
    core already refused (bad JSON, a bad cluster name) is not checked again."""
    reader, found = Reader(environ), []
    for name, check in CHECKS.items():
        variable = _VARIABLES[name]
        raw = reader.raw(variable)
        if not raw:
            continue
        try:
            value = variable.parser.parse(raw)
        except ValueError:
            continue
        try:
            check(value)
        except ValueError as exc:
            found.append(variable.parser.problem(variable.env, raw, exc))
    return found
