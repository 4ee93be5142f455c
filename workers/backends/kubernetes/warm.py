"""Warm mode: the pods a worker parked after their file, kept for its next file of
the same image.

A worker reuses only the pods it parked itself, kept in its memory (no cross-worker
claims, so no race for one pod); the labels and annotations it sets on them let the
reaper expire what a dead worker parked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scorefleet.job import Job
from scorefleet.settings import ModelSpec
from workers.backends.base import Endpoint
from workers.backends.kubernetes.api import Cluster, translated
from workers.backends.kubernetes.manifest import (
    PARKED_ANNOTATION,
    PIPELINE_LABEL,
    REPLICA_LABEL,
    RUN_ANNOTATION,
    RUN_LABEL,
    SOURCE_ANNOTATION,
    WARM_LABEL,
    label_value,
)
from workers.scoring.protocols import probe

log = logging.getLogger("workers.backends.kubernetes")

#: Deletes a pod, logging rather than raising (the reaper removes it later).
Delete = Callable[[Cluster, str, str], None]


@dataclass
class ParkedPod:
    name: str
    url: str
    handle: dict[str, Any]
    parked_at: float
    #: the image its pod runs, as its status said when the run that parked it began
    image_id: str | None = None


class WarmPool:
    """This worker's parked pods, per (cluster, namespace, image)."""

    def __init__(self, idle: float, max_per_image: int) -> None:
        self.idle = idle
        self.max_per_image = max_per_image
        self._pods: dict[tuple[str, str, str], list[ParkedPod]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.idle > 0

    def take(
        self,
        job: Job,
        spec: ModelSpec,
        cluster: Cluster,
        ns: str,
        *,
        cluster_of: Callable[[str], Cluster],
        delete: Delete,
        replica: int = 0,
    ) -> Endpoint | None:
        """A parked pod of ``spec``'s image that still answers, relabelled as this
        run's ``replica`` (each parked pod is one replica: a run of several takes one
        per replica); None if there is none."""
        self.expire(cluster_of=cluster_of, delete=delete)
        key = (cluster.name, ns, spec.image)
        while True:
            with self._lock:
                pool = self._pods.get(key) or []
                if not pool:
                    return None
                parked = pool.pop()  # the most recently parked
            if not probe(parked.url, spec):
                delete(cluster, ns, parked.name)
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
                                REPLICA_LABEL: str(replica),
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
            handle = {**parked.handle, **({"replica": replica} if replica else {})}
            return Endpoint(url=parked.url, handle=handle, warm=True, image_id=parked.image_id)

    def park(self, job: Job, cluster: Cluster, ns: str, name: str, url: str) -> bool:
        """Keep this run's healthy pod ``name`` (answering at ``url``) for this
        worker's next file of its image, unless the image has enough parked."""
        key = (cluster.name, ns, job.model_image)
        with self._lock:
            if len(self._pods.get(key) or []) >= self.max_per_image:
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
            self._pods.setdefault(key, []).append(
                ParkedPod(
                    name=name,
                    url=url,
                    handle={"cluster": cluster.name, "namespace": ns, "pod": name},
                    parked_at=now,
                    image_id=job.model.image_id,
                )
            )
        log.info("parked pod %s/%s warm for %gs", ns, name, self.idle)
        return True

    def expire(self, *, cluster_of: Callable[[str], Cluster], delete: Delete) -> None:
        """Delete this worker's pods parked longer than the idle time."""
        now = time.time()
        doomed: list[tuple[str, str, ParkedPod]] = []
        with self._lock:
            for (cluster_name, ns, _image), pool in self._pods.items():
                keep = [p for p in pool if now - p.parked_at <= self.idle]
                doomed += [(cluster_name, ns, p) for p in pool if p not in keep]
                pool[:] = keep
        for cluster_name, ns, parked in doomed:
            delete(cluster_of(cluster_name), ns, parked.name)
