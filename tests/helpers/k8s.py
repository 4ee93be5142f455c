"""A Kubernetes API to test the kubernetes backend against, and a kubelet for it.

* :class:`FakeApiServer` runs kmock's ``KubernetesEmulator`` (real HTTP on
  127.0.0.1) in a background event loop, with what a real API server adds: it
  stamps ``creationTimestamp``/``uid`` on create, honours ``labelSelector`` on
  lists, serves ``pods/<name>/log`` from the fake kubelet's log files and the
  Namespace objects a test gives it (``namespaces``: their labels), records
  every request, and can answer chosen requests with an error (fault injection).
* :class:`FakeKubelet` watches all pods, and for each new one does what a node
  would: it starts the model's command from the model catalog (as the local
  backend does) bound to a loopback IP of its own (127.0.0.2, 127.0.0.3, ...) on
  the container port, runs the pod's readiness probe (from the model's protocol:
  ``GET /ping``, ``GET /``, a TCP connection...) and patches the pod status (podIP,
  Ready), or reports the failure the test asked for (image pull errors,
  unschedulable, OOMKilled, CrashLoopBackOff) or the process's real exit. A
  deleted pod's process is stopped by its PID.

Used by tests/integration/test_kubernetes_backend.py, tests/e2e/test_e2e_kubernetes.py and
bench/k8s_calls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import psutil
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from scorefleet.settings import Settings
from tests.helpers import fake, test_catalog
from workers.backends.local.processes import PASSED_ENV, stop_tree

log = logging.getLogger("tests.k8s")

KUBELET_AGENT = "fake-kubelet"
PODS = kmock.resource("", "v1", "pods")
NAMESPACE_PATH = re.compile(r"/api/v1/namespaces/([^/]+)")

#: image -> what the fake kubelet does instead of running the model
BEHAVIOURS = {
    "test/pull-error:1": "ErrImagePull",
    "test/pull-backoff:1": "ImagePullBackOff",
    "test/bad-name:1": "InvalidImageName",
    "test/unschedulable:1": "unschedulable",
    "test/crashloop:1": "crashloop",
    "test/oom:1": "oom",
}
PULL_MESSAGES = {
    "ErrImagePull": 'rpc error: code = NotFound desc = failed to pull and unpack image: "{image}": not found',
    "ImagePullBackOff": 'Back-off pulling image "{image}"',
    "InvalidImageName": 'Failed to apply default image tag "{image}": couldn\'t parse image name',
}
UNSCHEDULABLE_MESSAGE = (
    "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: "
    "3 No preemption victims found for incoming pod."
)


def k8s_catalog(port: int) -> dict[str, Any]:
    """The test models (tests/helpers/__init__.py) bound to {host} on one container port."""
    catalog: dict[str, Any] = {}
    for image, entry in test_catalog().items():
        entry = dict(entry)
        if "{host}" not in entry["command"]:
            entry["command"] += " --host {host}"
        catalog[image] = {**entry, "port": port}
        if "iris" in image:  # the example iris servers of every protocol
            # scikit-learn takes ~1.5 s to import on an idle machine, and more than the
            # 4 s the e2e tests give the fake models when the whole suite shares 2 cores
            catalog[image]["launch_timeout"] = max(60, entry.get("launch_timeout", 0))
    for image in ("test/crashloop:1", "test/oom:1"):
        mode = "crash" if image == "test/crashloop:1" else "ok"
        catalog[image] = {"command": fake(mode)["command"] + " --host {host}", "port": port}
    return catalog


def now_iso(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif labels.get(term) is None:
            return False
    return True


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure"}
    body.update(code=code, reason=reason, message=message)
    return aiohttp.web.json_response(body, status=code)


@dataclass(frozen=True)
class Recorded:
    """One request the API server saw."""

    method: str
    path: str
    query: dict[str, str]
    agent: str
    authorization: str
    body: Any = None

    @property
    def from_worker(self) -> bool:
        return self.agent != KUBELET_AGENT

    def concerns(self, pod: str) -> bool:
        """Is this request about the pod named ``pod``?"""
        name = ((self.body or {}).get("metadata") or {}).get("name") if self.body else None
        return (
            name == pod
            or f"/pods/{pod}" in self.path
            or self.query.get("fieldSelector") == f"metadata.name={pod}"
        )

    @property
    def verb(self) -> str:
        from workers.backends.kubernetes import api_verb

        query = urllib.parse.urlencode(self.query)
        return api_verb(self.method, f"{self.path}?{query}")


@dataclass
class Fault:
    status: int
    times: int
    when: Callable[[Recorded], bool]
    message: str = ""


class _Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API-server behaviour the backend relies on."""

    harness: FakeApiServer

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        h = self.harness
        rec = Recorded(
            method=str(request.method.value),
            path=request.url.path,
            query=dict(request.params),
            agent=request.headers.get("User-Agent", ""),
            authorization=request.headers.get("Authorization", ""),
            body=request.data if isinstance(request.data, dict) else None,
        )
        h.record(rec)
        status, message = h.take_fault(rec)
        if status:
            reason = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "Injected")
            return _status(status, reason, message or f"injected HTTP {status}")
        namespace = NAMESPACE_PATH.fullmatch(rec.path)
        if namespace and rec.method == "GET":  # kmock has no cluster-scoped namespaces
            labels = h.namespaces.get(namespace[1])
            if labels is None:
                return _status(404, "NotFound", f'namespaces "{namespace[1]}" not found')
            meta = {"name": namespace[1], "labels": dict(labels)}
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
            )
        is_pods = request.resource == PODS
        if is_pods and request.subresource == "log" and rec.method == "GET":
            return aiohttp.web.Response(
                text=h.log_text(request.namespace, request.name, rec.query),
                content_type="text/plain",
            )
        if is_pods and request.action == kmock.action.CREATE and rec.body is not None:
            meta = rec.body.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta.setdefault("creationTimestamp", now_iso())
            meta.setdefault("uid", str(uuid.uuid4()))
            rec.body.setdefault("status", {"phase": "Pending"})
        if is_pods and request.action == kmock.action.LIST and "labelSelector" in rec.query:
            async with self._lock:
                items = [
                    obj.raw
                    for (res, ns, _), obj in self.objects.items()
                    if res == PODS
                    and not obj.deleted
                    and (request.namespace is None or ns == request.namespace)
                    and _selector_matches(
                        rec.query["labelSelector"],
                        (obj.raw.get("metadata") or {}).get("labels") or {},
                    )
                ]
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
            )
        return await super()._handle(request)


class FakeApiServer:
    """kmock's KubernetesEmulator on 127.0.0.1, served from a background thread."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.url = ""
        self._requests: list[Recorded] = []
        #: the Namespace objects it serves (GET /api/v1/namespaces/<name>): {name: labels}
        self.namespaces: dict[str, dict[str, str]] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name="k8s-api")
        self._error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FakeApiServer:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not self._ready.wait(15) or not self.url:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        return self

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        emulator = _Emulator()
        emulator.harness = self
        emulator.resources["v1/pods"] = kmock.ResourceInfo(
            namespaced=True, kind="Pod", singular="pod", subresources={"log", "status"}
        )
        async with emulator, kmock.Server(emulator) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stopping.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=15)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ behaviour
    def record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests.append(rec)

    def requests(self, worker_only: bool = True) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if r.from_worker or not worker_only]

    def fail(
        self, status: int, when: Callable[[Recorded], bool], times: int = 1, message: str = ""
    ) -> None:
        """Answer the next ``times`` requests for which ``when`` is true with ``status``
        (and ``message``, as the API server's Status says it)."""
        with self._lock:
            self._faults.append(Fault(status, times, when, message))

    def take_fault(self, rec: Recorded) -> tuple[int, str]:
        if rec.agent == KUBELET_AGENT:
            return 0, ""
        with self._lock:
            for f in self._faults:
                if f.times > 0 and f.when(rec):
                    f.times -= 1
                    return f.status, f.message
        return 0, ""

    def log_text(self, namespace: str | None, name: str | None, query: dict[str, str]) -> str:
        path = self.log_dir / f"{namespace}_{name}.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        tail = int(query.get("tailLines", "0") or 0)
        return "\n".join(lines[-tail:] if tail else lines) + ("\n" if lines else "")

    # ---------------------------------------------------------------- views
    def client(self, agent: str = "test") -> k8s.CoreV1Api:
        cfg = k8s.Configuration(host=self.url)
        api = k8s.ApiClient(cfg)
        api.user_agent = agent
        return k8s.CoreV1Api(api)

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        req = urllib.request.Request(self.url + path, headers={"User-Agent": KUBELET_AGENT})
        with urllib.request.urlopen(req, timeout=5) as resp:
            items: list[dict[str, Any]] = json.load(resp)["items"]
        return items

    def pod_names(self, namespace: str | None = None) -> set[str]:
        return {p["metadata"]["name"] for p in self.pods(namespace)}

    def pods_namespaces(self) -> set[str]:
        """The namespaces any pod is in."""
        return {p["metadata"].get("namespace", "") for p in self.pods()}

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: emulator\n  cluster:\n    server: {self.url}\n"
            "users:\n- name: tester\n  user: {}\n"
            "contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: tester\n"
            "current-context: emulator\n"
        )
        return path


# --------------------------------------------------------------------- kubelet
_IPS = itertools.count(2)


def image_id_of(image: str) -> str:
    """The ``imageID`` a kubelet reports for a started container of ``image``: the
    repository and the digest it pulled, with the runtime's prefix (dockershim's
    ``docker-pullable://``; containerd reports it without one)."""
    repo = image.split("@", 1)[0]
    name_at = repo.rfind("/") + 1
    if ":" in repo[name_at:]:
        repo = repo[: name_at + repo[name_at:].index(":")]
    return f"docker-pullable://{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def next_loopback_ip() -> str:
    n = next(_IPS)
    return f"127.0.{n // 250}.{2 + n % 250}"


@dataclass
class PodRun:
    namespace: str
    name: str
    image: str
    ip: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    pod: dict[str, Any] = field(default_factory=dict)
    behaviour: str | None = None  # overrides BEHAVIOURS for this pod
    deleted: threading.Event = field(default_factory=threading.Event)


class FakeKubelet:
    """Watches every pod of a :class:`FakeApiServer` and plays its node."""

    def __init__(
        self,
        api: FakeApiServer,
        settings: Settings,
        behaviours: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.api = api
        self.settings = settings
        self.behaviours = dict(BEHAVIOURS if behaviours is None else behaviours)
        self.ready_timeout = ready_timeout
        self.core = api.client(agent=KUBELET_AGENT)
        self._runs: dict[tuple[str, str, str], PodRun] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watch = k8s_watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-kubelet")
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._watch.stop()
        self._thread.join(timeout=10)
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            run.deleted.set()
            self._stop_process(run)
        for t in self._workers:
            t.join(timeout=10)

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- views
    def pid(self, name: str) -> int | None:
        with self._lock:
            for run in self._runs.values():
                if run.name == name and run.popen is not None:
                    return run.popen.pid
        return None

    def running_pids(self) -> list[int]:
        with self._lock:
            return [r.popen.pid for r in self._runs.values() if r.popen and r.popen.poll() is None]

    def wait_gone(self, name: str, timeout: float = 15.0) -> None:
        """Wait until the pod's process (if it had one) has been stopped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                alive = [r for r in self._runs.values() if r.name == name]
            if not alive:
                return
            time.sleep(0.05)
        raise AssertionError(f"the process of pod {name} is still running after {timeout}s")

    # ---------------------------------------------------------------- watch
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                for event in self._watch.stream(
                    self.core.list_pod_for_all_namespaces, timeout_seconds=3600, deserialize=False
                ):
                    self._on_event(event)
                    if self._stopping.is_set():
                        return
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("fake kubelet: the watch failed (%s); watching again", exc)
                self._stopping.wait(0.2)

    def _on_event(self, event: dict[str, Any]) -> None:
        pod = event.get("object") or {}
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "", meta.get("uid") or "")
        if event.get("type") == "DELETED":
            with self._lock:
                run = self._runs.get(key)
            if run is not None:
                run.deleted.set()
                self._stop_process(run)
                with self._lock:
                    self._runs.pop(key, None)
            return
        if meta.get("deletionTimestamp"):
            return
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        with self._lock:
            if key in self._runs:
                return
            run = PodRun(key[0], key[1], str(containers[0].get("image", "")), pod=pod)
            self._runs[key] = run
        self._start_bring_up(run)

    def _start_bring_up(self, run: PodRun) -> None:
        t = threading.Thread(target=self._bring_up, args=(run, run.pod), daemon=True)
        self._workers.append(t)
        t.start()

    def place(self, name: str) -> None:
        """The scheduler found a node for a pod that was unschedulable: run it."""
        with self._lock:
            run = next(r for r in self._runs.values() if r.name == name)
            run.behaviour = "run"
        self._start_bring_up(run)

    # ------------------------------------------------------------ a pod
    def _patch(self, run: PodRun, status: dict[str, Any]) -> None:
        if run.deleted.is_set():
            return
        try:
            self.core.patch_namespaced_pod_status(
                run.name, run.namespace, {"status": status}, _preload_content=False
            )
        except Exception as exc:  # deleted meanwhile
            log.info("fake kubelet: cannot patch %s: %s", run.name, exc)

    def _container(self, run: PodRun, **fields: Any) -> list[dict[str, Any]]:
        base = {"name": "model", "image": run.image, "ready": False, "restartCount": 0}
        state = fields.get("state") or {}
        if "running" in state or "terminated" in state:  # pulled: the kubelet knows its digest
            base["imageID"] = image_id_of(run.image)
        return [{**base, **fields}]

    def _bring_up(self, run: PodRun, pod: dict[str, Any]) -> None:
        behaviour = run.behaviour or self.behaviours.get(run.image, "run")
        scheduled = [{"type": "PodScheduled", "status": "True"}]
        if behaviour == "unschedulable":
            unsched = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
            self._patch(
                run,
                {"phase": "Pending", "conditions": [{**unsched, "message": UNSCHEDULABLE_MESSAGE}]},
            )
            return
        spec = self.settings.models.spec(run.image)
        command = spec.extra.get("command")
        if behaviour in PULL_MESSAGES or not command:
            reason = behaviour if behaviour in PULL_MESSAGES else "ErrImagePull"
            waiting = {"reason": reason, "message": PULL_MESSAGES[reason].format(image=run.image)}
            self._patch(
                run,
                {
                    "phase": "Pending",
                    "conditions": scheduled,
                    "containerStatuses": self._container(run, state={"waiting": waiting}),
                },
            )
            return
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        port = int(((container.get("ports") or [{}])[0]).get("containerPort", 8080))
        run.ip = next_loopback_ip()
        argv = shlex.split(command.format(port=port, python=sys.executable, host=run.ip))
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        env.update({e["name"]: e.get("value", "") for e in container.get("env") or []})
        log_path = self.api.log_dir / f"{run.namespace}_{run.name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        with self._lock:
            run.popen = popen
        if run.deleted.is_set():  # deleted while we were starting it
            self._stop_process(run)
            return
        started = {"running": {"startedAt": now_iso()}}
        self._patch(
            run,
            {
                "phase": "Running",
                "podIP": run.ip,
                "podIPs": [{"ip": run.ip}],
                "hostIP": "127.0.0.1",
                "startTime": now_iso(),
                "conditions": scheduled,
                "containerStatuses": self._container(run, state=started, started=True),
            },
        )
        if not self._probe(run, popen, port, container.get("readinessProbe") or {}):
            return
        if behaviour == "oom":  # it loaded, then ran out of memory before it was Ready
            self._stop_process(run, kill=True)
            oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": now_iso()}}
            self._patch(
                run, {"phase": "Running", "containerStatuses": self._container(run, state=oom)}
            )
            return
        ready = [
            *scheduled,
            *({"type": t, "status": "True"} for t in ("Initialized", "ContainersReady", "Ready")),
        ]
        self._patch(
            run,
            {
                "phase": "Running",
                "conditions": ready,
                "containerStatuses": self._container(run, state=started, started=True, ready=True),
            },
        )
        popen.wait()  # until the pod is deleted (or the model dies)
        if not run.deleted.is_set():
            self._report_exit(run, popen, "run")

    def _probe(
        self, run: PodRun, popen: subprocess.Popen[bytes], port: int, probe: dict[str, Any]
    ) -> bool:
        """The pod's readiness probe as the kubelet runs it: an httpGet answering
        200-399, or a tcpSocket that accepts; False if the model died or the pod went."""
        deadline = time.monotonic() + self.ready_timeout
        http = probe.get("httpGet")
        url = f"http://{run.ip}:{port}{http.get('path', '/')}" if http else ""
        while time.monotonic() < deadline and not run.deleted.is_set():
            if popen.poll() is not None:
                self._report_exit(run, popen, self.behaviours.get(run.image, "run"))
                return False
            if not http:  # tcpSocket
                with contextlib.suppress(OSError), socket.create_connection((run.ip, port), 1):
                    return True
            else:
                try:
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        if 200 <= resp.status < 400:
                            return True
                except OSError:
                    pass
            time.sleep(0.05)
        return False

    def _report_exit(self, run: PodRun, popen: subprocess.Popen[bytes], behaviour: str) -> None:
        code = popen.returncode if popen.returncode is not None else popen.wait()
        term = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Error",
            "finishedAt": now_iso(),
        }
        if behaviour == "crashloop":
            waiting = {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 10s restarting failed container=model pod={run.name}",
            }
            statuses = self._container(
                run, state={"waiting": waiting}, lastState={"terminated": term}, restartCount=2
            )
        else:
            statuses = self._container(run, state={"terminated": term})
        self._patch(run, {"phase": "Running", "containerStatuses": statuses})

    def _stop_process(self, run: PodRun, kill: bool = False) -> None:
        with self._lock:
            popen = run.popen
        if popen is None or popen.poll() is not None:
            return
        try:
            proc = psutil.Process(popen.pid)
            if kill:
                proc.kill()
                popen.wait(timeout=5)
            else:
                stop_tree(proc, grace=2)
                popen.wait(timeout=5)
        except (psutil.NoSuchProcess, subprocess.TimeoutExpired):
            pass


@contextlib.contextmanager
def fake_cluster(
    log_dir: Path, settings: Settings, **kubelet: Any
) -> Iterator[tuple[FakeApiServer, FakeKubelet]]:
    """An emulated API server with a kubelet; everything stopped on exit."""
    with FakeApiServer(log_dir) as api, FakeKubelet(api, settings, **kubelet) as node:
        yield api, node


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def pod_of(api: FakeApiServer, source_suffix: str) -> str:
    """The name of the pod the worker created for the file whose S3 URI ends so (its
    first model replica's: replicas are created together, in any order)."""
    for rec in api.requests():
        if rec.method == "POST" and rec.body:
            meta = rec.body.get("metadata") or {}
            notes = meta.get("annotations") or {}
            replica = (meta.get("labels") or {}).get("scorefleet.io/replica", "0")
            if str(notes.get("scorefleet.io/source", "")).endswith(source_suffix) and (
                replica == "0"
            ):
                return str(meta["name"])
    raise AssertionError(f"no pod was created for {source_suffix}")


def calls_for(api: FakeApiServer, pod: str) -> dict[str, int]:
    """The worker's API calls about one pod, by verb, as the server saw them."""
    counts: dict[str, int] = {}
    for rec in api.requests():
        if rec.concerns(pod):
            counts[rec.verb] = counts.get(rec.verb, 0) + 1
    return counts


__all__ = [
    "BEHAVIOURS",
    "FakeApiServer",
    "FakeKubelet",
    "Recorded",
    "calls_for",
    "fake_cluster",
    "k8s_catalog",
    "next_loopback_ip",
    "pod_of",
    "wait_for",
]
