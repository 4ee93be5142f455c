"""What a pod's status says: ready, still starting, unschedulable, or failed (and why)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workers.backends.kubernetes.api import CONTAINER

log = logging.getLogger("workers.backends.kubernetes")

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CREATE_FAILURE_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


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


def image_id(pod: Mapping[str, Any]) -> str | None:
    """The model container's ``imageID`` in the pod's status: the image the kubelet
    pulled, by digest (``docker.io/reg/iris@sha256:...``; a runtime's
    ``docker-pullable://`` prefix dropped). None before the container started."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    cs: Mapping[str, Any] = next((c for c in statuses if c.get("name") == CONTAINER), {})
    found = str(cs.get("imageID") or "")
    return found.split("://", 1)[-1] or None


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


def created_at(pod: Mapping[str, Any]) -> float | None:
    stamp = (pod.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
