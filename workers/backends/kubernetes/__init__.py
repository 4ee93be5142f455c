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

Failures are sorted from the pod status (:func:`.status.pod_state`):

* ``ErrImagePull`` / ``ImagePullBackOff`` / ``InvalidImageName`` -> permanent
  (:class:`.api.ImagePullError`), within seconds;
* ``OOMKilled``, ``CrashLoopBackOff`` or any exit before the pod was ready ->
  permanent :class:`~scorefleet.errors.ModelError` with the container's last log lines;
* unschedulable for longer than ``SCOREFLEET_K8S_UNSCHEDULABLE_TIMEOUT`` ->
  :class:`.api.PodUnschedulable`, transient: the pod stays Pending (so the cluster
  autoscaler keeps working on it) and the step is retried later, then ``.error``;
* API answers 429/5xx and connection errors -> transient
  :class:`.api.KubernetesApiError`; other 4xx -> permanent, with a hint (RBAC, ...).

Clusters (``SCOREFLEET_K8S_CLUSTERS``): the worker's own through in-cluster
config, another EKS cluster through its endpoint and CA with a token made like
``aws eks get-token`` (:mod:`workers.backends.kubernetes.eks_token`), or a kubeconfig (development
and tests). Every API call goes through :class:`.api.CountingApiClient`, so
:attr:`.backend.KubernetesBackend.calls` knows how many calls of each verb were made.

Its parts, along their seams: :mod:`.api` (the API client, its call counter and the
mapping of API errors onto the pipeline's), :mod:`.manifest` (a run's pod: name,
labels, manifest), :mod:`.status` (what a pod's status means), :mod:`.warm` (warm
mode's parked pods), :mod:`.watch` (waiting for the pod to be ready),
:mod:`.backend` (launch, endpoint, logs, teardown, reap). Its settings and catalog
keys are checked by :mod:`.config`. :data:`BACKEND` is what the registry knows of
it. The names other code uses are importable from here, loaded on first use:
importing the package (or :mod:`.config`) loads no kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scorefleet.settings import Settings
from workers.backends.base import BackendKind, LaunchBackend, StartCheck
from workers.backends.kubernetes.config import CATALOG_OPTIONS, problems

if TYPE_CHECKING:  # pragma: no cover
    from workers.backends.kubernetes.api import (
        ClusterConfigError,
        ImagePullError,
        KubernetesApiError,
        PodUnschedulable,
        api_verb,
    )
    from workers.backends.kubernetes.backend import KubernetesBackend
    from workers.backends.kubernetes.manifest import (
        FLEET_LABEL,
        PIPELINE_LABEL,
        RUN_ANNOTATION,
        RUN_LABEL,
        label_value,
        pod_manifest,
        pod_name,
    )
    from workers.backends.kubernetes.status import PodState, pod_state

#: {name: the module that defines it}
_EXPORTS = {
    "ClusterConfigError": "api",
    "ImagePullError": "api",
    "KubernetesApiError": "api",
    "PodUnschedulable": "api",
    "api_verb": "api",
    "KubernetesBackend": "backend",
    "FLEET_LABEL": "manifest",
    "PIPELINE_LABEL": "manifest",
    "RUN_ANNOTATION": "manifest",
    "RUN_LABEL": "manifest",
    "label_value": "manifest",
    "pod_manifest": "manifest",
    "pod_name": "manifest",
    "PodState": "status",
    "pod_state": "status",
}

__all__ = [
    "BACKEND",
    "FLEET_LABEL",
    "PIPELINE_LABEL",
    "RUN_ANNOTATION",
    "RUN_LABEL",
    "ClusterConfigError",
    "ImagePullError",
    "KubernetesApiError",
    "KubernetesBackend",
    "PodState",
    "PodUnschedulable",
    "api_verb",
    "label_value",
    "pod_manifest",
    "pod_name",
    "pod_state",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _make(settings: Settings) -> LaunchBackend:
    from workers.backends.kubernetes.backend import KubernetesBackend

    return KubernetesBackend(settings)


def _start_checks(backend: LaunchBackend) -> list[StartCheck]:
    from workers.backends.kubernetes.backend import KubernetesBackend

    assert isinstance(backend, KubernetesBackend)
    return backend.start_checks()


#: the registry line's entry (workers/backends/registry.py)
BACKEND = BackendKind(
    name="kubernetes",
    make=_make,
    catalog_options=CATALOG_OPTIONS,
    settings_problems=problems,
    start_checks=_start_checks,
)
