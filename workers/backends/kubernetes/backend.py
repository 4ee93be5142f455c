"""The backend itself: launch (the watch of the one pod is :mod:`.watch`), endpoint,
logs, teardown (or parking, warm mode) and the reaper. The package docstring tells
the whole story."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from scorefleet.errors import (
    AtCapacity,
    PipelineError,
    Rejected,
    TransientError,
    Untrusted,
)
from scorefleet.job import Job
from scorefleet.settings import DNS1123_LABEL, ModelSpec, Settings
from scorefleet.vouch import check_run_id
from workers.backends.base import Endpoint, StartCheck
from workers.backends.kubernetes.api import (
    CONTAINER,
    ApiCallCounter,
    Cluster,
    CountingApiClient,
    KubernetesApiError,
    PodsApi,
    cluster_configuration,
    translated,
)
from workers.backends.kubernetes.config import DEFAULT_PORT, port_of
from workers.backends.kubernetes.manifest import (
    FLEET_LABEL,
    PARKED_ANNOTATION,
    RUN_ANNOTATION,
    RUN_LABEL,
    WARM_LABEL,
    label_value,
    pod_manifest,
    pod_url,
    replica_pod_name,
    worker_identity,
)
from workers.backends.kubernetes.podsecurity import (
    NamespaceSecurity,
    namespace_security,
    unknown,
)
from workers.backends.kubernetes.status import created_at, image_id, pod_state
from workers.backends.kubernetes.warm import WarmPool
from workers.backends.kubernetes.watch import wait_ready
from workers.backends.replicas import allowed, handle_of
from workers.process import metrics
from workers.scoring.protocols import probe, protocol_for

log = logging.getLogger("workers.backends.kubernetes")


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
        # warm mode: the pods this worker parked
        self.warm = WarmPool(
            float(settings.launch.warm_idle_seconds), int(settings.launch.warm_max_per_image)
        )
        # the pod name and URL of each run's replica this process launched (endpoint())
        self._endpoints: OrderedDict[tuple[str, int], tuple[str, str]] = OrderedDict()

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

    def _target(self, job: Job, replica: int = 0) -> tuple[Cluster, str, str]:
        """The run's cluster, namespace and the pod name of its ``replica``: the name
        made from its run id. A warm pod this run reused keeps the name of the run
        that created it; such a pod (and, in warm mode, any) is taken only if it says
        it is this run's."""
        cluster, ns = self._place(job)
        name = replica_pod_name(check_run_id(job.run_id), replica)
        claimed = handle_of(job.model.handle, replica).get("pod")
        if claimed is not None and claimed != name:
            if not isinstance(claimed, str) or not DNS1123_LABEL.match(claimed):
                raise Untrusted(f"{claimed!r} is not a pod name")
            name = claimed
            self._owned(cluster, ns, name, job)
        elif self.warm.enabled:  # another run may have reused this run's pod
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

    def endpoint(self, job: Job, replica: int = 0) -> str | None:
        """The URL of the pod of the run's ``replica``: the one this process recorded
        at launch, else read from the API by its pod name, labelled as this fleet's
        pod of the run."""
        return self._url_of(*self._target(job, replica), job, replica)

    def _url_of(
        self, cluster: Cluster, ns: str, name: str, job: Job, replica: int = 0
    ) -> str | None:
        with self._lock:
            known = self._endpoints.get((job.run_id, replica))
        if known is not None and known[0] == name:
            return known[1]
        pod = self._owned(cluster, ns, name, job)
        ip = ((pod or {}).get("status") or {}).get("podIP")
        if pod is None or not ip:
            return None
        containers = (pod.get("spec") or {}).get("containers") or []
        model: dict[str, Any] = next((c for c in containers if c.get("name") == CONTAINER), {})
        port = int(((model.get("ports") or [{}])[0]).get("containerPort") or DEFAULT_PORT)
        return pod_url(str(ip), port)

    def _remember(self, run_id: str, replica: int, name: str, url: str) -> None:
        with self._lock:
            self._endpoints[(run_id, replica)] = (name, url)
            while len(self._endpoints) > 4096:
                self._endpoints.popitem(last=False)

    # ------------------------------------------------------------ pod security
    def pod_security(self) -> list[NamespaceSecurity]:
        """What Pod Security Admission enforces in every namespace pods may run in, from
        each namespace's labels: one get per namespace (the Role grants get on that
        namespace only). A namespace that cannot be read is reported as unknown."""
        found: list[NamespaceSecurity] = []
        for cluster_name in self.clusters_config:
            for ns in self.settings.kubernetes.namespaces_of(cluster_name) or ():
                try:
                    cluster = self.cluster(cluster_name)
                    with translated(f"read namespace {ns}", cluster_name):
                        obj = cluster.api.read_namespace(ns)
                except PipelineError as exc:
                    found.append(unknown(cluster_name, ns, str(exc)))
                    continue
                found.append(namespace_security(cluster_name, ns, obj))
        return found

    def start_checks(self) -> list[StartCheck]:
        """:meth:`pod_security` as start-up checks, and as the metric
        ``scorefleet_k8s_namespace_restricted`` (1: enforces restricted)."""
        checks = []
        for found in self.pod_security():
            gauge = metrics.K8S_NAMESPACE_RESTRICTED.labels(found.cluster, found.namespace)
            gauge.set(1 if found.restricted else 0)
            where = f"cluster {found.cluster}, namespace {found.namespace}"
            checks.append(StartCheck("pod_security", where, found.restricted, found.describe()))
        return checks

    # ----------------------------------------------------------------- launch
    def has_room(self, spec: ModelSpec) -> bool:
        """Always: room on a cluster is the scheduler's and the ResourceQuota's call
        (a launch refused by the quota waits its turn like one refused here)."""
        return True

    def has_parked(self, spec: ModelSpec) -> bool:
        """Never: a worker reuses only the pods it parked itself (:mod:`.warm`), and
        the score step may run on another worker."""
        return False

    def park(self, job: Job) -> bool:
        """Never at launch: the pool is this worker's own (see :meth:`has_parked`),
        so the run keeps its pod until its score is done."""
        return False

    def launch(self, job: Job, spec: ModelSpec, replica: int = 0) -> Endpoint:
        cluster, ns = self._place(job)
        # its own (not a dead warm one it had)
        name = replica_pod_name(check_run_id(job.run_id), replica)
        if self.warm.enabled and "pod" not in handle_of(job.model.handle, replica):
            warm = self.warm.take(
                job,
                spec,
                cluster,
                ns,
                cluster_of=self.cluster,
                delete=self._delete_quietly,
                replica=replica,
            )
            if warm is not None:
                self._remember(job.run_id, replica, str(warm.handle["pod"]), warm.url)
                return warm
        manifest = pod_manifest(
            job, spec, self.settings, fleet=self.fleet, worker=self.worker, replica=replica
        )
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
        pod = wait_ready(
            cluster,
            ns,
            name,
            spec.image,
            created,
            launch_timeout=launch_timeout,
            unschedulable_timeout=self.unschedulable_timeout,
            logs=lambda previous: self._read_logs(
                cluster, ns, name, self.log_lines, previous=previous
            ),
        )
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(FLEET_LABEL) != self.fleet or labels.get(RUN_LABEL) != label_value(
            job.run_id
        ):  # an AlreadyExists for a pod that is not this run's (warm mode reused it)
            raise TransientError(f"pod {ns}/{name} is another run's now; launching again later")
        ip = str(pod["status"]["podIP"])
        url = pod_url(ip, port_of(spec))
        self._check_reachable(url, ns, name, spec)
        self._remember(job.run_id, replica, name, url)
        handle = {
            "cluster": cluster.name,
            "namespace": ns,
            "pod": name,
            "pod_ip": ip,
            "port": port_of(spec),
            "node": (pod.get("spec") or {}).get("nodeName"),
        }
        if replica:
            handle["replica"] = replica
        return Endpoint(url=url, handle=handle, image_id=image_id(pod))

    def _check_reachable(self, url: str, ns: str, name: str, spec: ModelSpec) -> None:
        if not probe(url, spec, timeout=5.0):
            readiness = protocol_for(spec.protocol).describe_readiness(spec)
            raise TransientError(
                f"pod {ns}/{name} is Ready but the worker cannot reach {url} ({readiness}; "
                "is a NetworkPolicy in the way?)"
            )

    # ---------------------------------------------------------------- queries
    def is_alive(self, job: Job, replica: int = 0) -> bool:
        try:
            cluster, ns, name = self._target(job, replica)
        except Rejected:
            return False
        pod = self._owned(cluster, ns, name, job)
        if pod is None:
            return False
        state = pod_state(pod, job.model_image)
        return not state.failure and (pod.get("status") or {}).get("phase") == "Running"

    def logs(self, job: Job, lines: int, replica: int = 0) -> str:
        try:
            cluster, ns, name = self._target(job, replica)
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
    def _park(self, job: Job, cluster: Cluster, ns: str, name: str, replica: int) -> bool:
        """Keep this run's healthy pod (``name``, as _target found it) for this
        worker's next file of its image (:class:`.warm.WarmPool`)."""
        if not handle_of(job.model.handle, replica).get("pod"):
            return False
        url = self._url_of(cluster, ns, name, job, replica)
        if not url or not probe(url, self.settings.models.spec(job.model_image)):
            return False
        return self.warm.park(job, cluster, ns, name, url)

    def _delete_quietly(self, cluster: Cluster, ns: str, name: str) -> None:
        try:
            self._delete(cluster, ns, name)
        except PipelineError as exc:  # the reaper removes it later
            log.warning("could not delete pod %s/%s: %s", ns, name, exc)

    # --------------------------------------------------------------- teardown
    def release(self, job: Job) -> bool:
        """Warm mode: park the run's pod for this worker's next file of its image now
        (or delete it if it cannot be kept), rather than at teardown."""
        if not self.warm.enabled:
            return False
        self.teardown(job)
        return True

    def teardown(self, job: Job) -> bool:
        """Delete the run's pods (every replica), or park them (warm mode, after a
        success)."""
        try:
            cluster, ns = self._place(job)
        except Rejected:
            return False  # the launch was refused too: nothing was made
        if not DNS1123_LABEL.match(ns):
            return False
        done = False
        seen: set[str] = set()
        for replica in sorted({0, *job.model.replicas}):
            _, _, name = self._target(job, replica)
            seen.add(name)
            if self.warm.enabled and job.failure is None and not job.skipped:
                try:
                    if self._park(job, cluster, ns, name, replica):
                        done = True
                        continue
                except PipelineError as exc:
                    log.warning("could not park pod %s/%s: %s", ns, name, exc)
            done = self._delete(cluster, ns, name) or done
        if allowed(self.settings.models.spec(job.model_image)) > 1:
            # an image whose files may have several: any replica the job did not
            # learn of (a launch that failed half way), found by its run's label
            done = self._delete_run_pods(cluster, ns, job, seen) or done
        return done

    def _delete_run_pods(self, cluster: Cluster, ns: str, job: Job, seen: set[str]) -> bool:
        """Delete this fleet's pods of ``job``'s run not in ``seen`` (one list call)."""
        selector = f"{FLEET_LABEL}={self.fleet},{RUN_LABEL}={label_value(job.run_id)}"
        with translated(f"list pods in {ns}", cluster.name):
            pods = cluster.api.list(ns, label_selector=selector)
        done = False
        for pod in pods:
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            name = str(meta.get("name") or "")
            if (
                name
                and name not in seen
                and not meta.get("deletionTimestamp")  # already going
                and labels.get(FLEET_LABEL) == self.fleet
                and labels.get(RUN_LABEL) == label_value(job.run_id)
                and labels.get(WARM_LABEL) != "idle"
            ):
                done = self._delete(cluster, ns, name) or done
        return done

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
            if meta.get("deletionTimestamp"):
                continue  # already being deleted (by teardown, or an earlier pass)
            created = created_at(pod)
            try:
                if labels.get(WARM_LABEL) == "idle":  # parked: expires after the idle limit
                    parked_at = float(notes.get(PARKED_ANNOTATION) or 0)
                    if now - parked_at <= self.warm.idle:
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
