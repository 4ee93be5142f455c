"""Waiting for a model pod to be ready: one watch of the one pod, no polling.

The watch (``fieldSelector=metadata.name=<pod>``) decides on each event. Its socket
read timeout is kept equal to the time left before the deadline that applies now
(the launch timeout, or the unschedulable timeout while the scheduler cannot place
the pod), so a quiet pod wakes the worker exactly when a deadline passes, with no
second call. What a pod's status means is :mod:`.status`'s to say; what to raise
for it is said here (the package docstring lists the classes of failure).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes.watch.watch import iter_resp_lines

from scorefleet.errors import ModelError, PipelineError, TransientError
from workers.backends.kubernetes.api import (
    Cluster,
    ImagePullError,
    KubernetesApiError,
    PodUnschedulable,
    set_read_timeout,
    translated,
)
from workers.backends.kubernetes.status import PodState, pod_state

log = logging.getLogger("workers.backends.kubernetes")

#: A watch that keeps ending early (a proxy cutting streams) stops being retried.
MAX_WATCHES = 20


def wait_ready(
    cluster: Cluster,
    ns: str,
    name: str,
    image: str,
    created: dict[str, Any] | None,
    *,
    launch_timeout: float,
    unschedulable_timeout: float,
    logs: Callable[[bool], str],
) -> dict[str, Any]:
    """Watch the pod until it is Ready and return it; raise as soon as it cannot
    become so. ``created``: the pod as the create call answered (None: adopted);
    ``logs(previous)``: the model container's last log lines, for an error."""
    clock = time.monotonic
    launch_deadline = clock() + launch_timeout
    unschedulable_deadline: float | None = None
    last = PodState(summary="no status yet")

    def ready(pod: dict[str, Any]) -> bool:
        nonlocal last, launch_deadline, unschedulable_deadline
        last = pod_state(pod, image)
        if last.failure:
            raise _failure(ns, name, last, logs)
        if last.ready:
            return True
        now = clock()
        if last.unschedulable and unschedulable_deadline is None:
            log.warning("pod %s/%s is unschedulable: %s", ns, name, last.unschedulable)
            unschedulable_deadline = now + unschedulable_timeout
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
    server_timeout = math.ceil(launch_timeout + unschedulable_timeout) + 5
    for _ in range(MAX_WATCHES):
        remaining = deadline() - clock()
        if remaining <= 0:
            raise _timeout(ns, name, last, launch_timeout, unschedulable_timeout, logs)
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
                set_read_timeout(resp, deadline() - clock())
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


def _failure(ns: str, name: str, state: PodState, logs: Callable[[bool], str]) -> PipelineError:
    message = str(state.failure)
    if state.failure_class == "pull":
        return ImagePullError(message)
    if state.failure_class == "transient":
        return TransientError(f"pod {ns}/{name}: {message}")
    return ModelError(message, model_logs=logs(state.previous_logs) if state.started else "")


def _timeout(
    ns: str,
    name: str,
    state: PodState,
    launch_timeout: float,
    unschedulable_timeout: float,
    logs: Callable[[bool], str],
) -> PipelineError:
    if state.unschedulable:
        return PodUnschedulable(
            f"pod {ns}/{name} could not be scheduled within "
            f"{unschedulable_timeout:g}s: {state.unschedulable}"
        )
    return ModelError(
        f"the model did not become ready within {launch_timeout:g}s ({state.summary})",
        model_logs=logs(False) if state.started else "",
    )
