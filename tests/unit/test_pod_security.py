"""The restricted profile of the Pod Security Standards
(workers/backends/kubernetes/podsecurity.py names the published version it follows):
the check refuses what each control of the published tables refuses and admits what
they allow; and every pod manifest the kubernetes backend can produce passes it as
it is (every protocol, every catalog key, the K8S_* settings; tests/helpers/pod_manifests.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.helpers.pod_manifests import SAMPLES, applied_samples, every_manifest, uncovered_keys
from workers.backends.kubernetes.podsecurity import (
    PROFILE_SOURCE,
    namespace_security,
    restricted_violations,
    unknown,
)


def compliant() -> dict[str, Any]:
    """A pod the restricted profile admits, with an init container and volumes of the
    allowed kinds."""
    secure = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}],
            },
            "initContainers": [{"name": "init", "image": "i", "securityContext": dict(secure)}],
            "containers": [
                {
                    "name": "model",
                    "image": "m",
                    "ports": [{"containerPort": 8080, "hostPort": 0}],
                    "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080, "host": ""}},
                    "securityContext": copy.deepcopy(secure),
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "tok", "projected": {"sources": []}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
            ],
        },
    }


def _container(pod: dict[str, Any], which: str = "containers") -> dict[str, Any]:
    c: dict[str, Any] = pod["spec"][which][0]
    return c


def _set(path: str, value: Any):
    """A change of the compliant pod: ``path`` is dotted from the pod, ``c.`` the model
    container, ``i.`` the init container (``None`` removes the field)."""

    def change(pod: dict[str, Any]) -> None:
        node: dict[str, Any] = pod
        parts = path.split(".")
        if parts[0] in ("c", "i"):
            node = _container(pod, "containers" if parts[0] == "c" else "initContainers")
            parts = parts[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value

    return change


#: (change, the control it breaks), as the published tables name them
REFUSED = [
    (_set("spec.hostNetwork", True), "Host Namespaces"),
    (_set("spec.hostPID", True), "Host Namespaces"),
    (_set("spec.hostIPC", True), "Host Namespaces"),
    (_set("spec.securityContext.windowsOptions", {"hostProcess": True}), "HostProcess"),
    (_set("c.securityContext.privileged", True), "Privileged Containers"),
    (_set("i.securityContext.privileged", True), "Privileged Containers"),
    (_set("c.securityContext.capabilities.add", ["SYS_ADMIN"]), "Capabilities"),
    (_set("c.securityContext.capabilities.add", ["CHOWN"]), "Capabilities"),  # baseline's
    (_set("c.securityContext.capabilities.drop", ["NET_RAW"]), "Capabilities"),
    (_set("i.securityContext.capabilities", None), "Capabilities"),
    (_set("spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]), "HostPath Volumes"),
    (_set("spec.volumes", [{"name": "n", "nfs": {"server": "s", "path": "/"}}]), "Volume Types"),
    (_set("spec.volumes", [{"name": "g", "gitRepo": {"repository": "r"}}]), "Volume Types"),
    (_set("c.ports", [{"containerPort": 80, "hostPort": 80}]), "Host Ports"),
    (_set("c.readinessProbe.httpGet.host", "10.0.0.1"), "Host Probes / Lifecycle Hooks"),
    (_set("c.livenessProbe", {"tcpSocket": {"port": 1, "host": "h"}}), "Host Probes"),
    (_set("c.lifecycle", {"preStop": {"httpGet": {"port": 1, "host": "h"}}}), "Host Probes"),
    (_set("c.securityContext.appArmorProfile", {"type": "Unconfined"}), "AppArmor"),
    (
        _set(
            "metadata.annotations",
            {"container.apparmor.security.beta.kubernetes.io/model": "unconfined"},
        ),
        "AppArmor",
    ),
    (_set("spec.securityContext.seLinuxOptions", {"type": "spc_t"}), "SELinux"),
    (_set("c.securityContext.seLinuxOptions", {"user": "system_u"}), "SELinux"),
    (_set("c.securityContext.procMount", "Unmasked"), "/proc Mount Type"),
    (_set("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]), "Sysctls"),
    (_set("c.securityContext.allowPrivilegeEscalation", None), "Privilege Escalation"),
    (_set("i.securityContext.allowPrivilegeEscalation", True), "Privilege Escalation"),
    (_set("spec.securityContext.runAsNonRoot", None), "Running as Non-root"),
    (_set("spec.securityContext.runAsNonRoot", False), "Running as Non-root"),
    (_set("c.securityContext.runAsNonRoot", False), "Running as Non-root"),
    (_set("spec.securityContext.runAsUser", 0), "Running as Non-root user"),
    (_set("c.securityContext.runAsUser", 0), "Running as Non-root user"),
    (_set("spec.securityContext.seccompProfile", None), "Seccomp"),
    (_set("spec.securityContext.seccompProfile", {"type": "Unconfined"}), "Seccomp"),
    (_set("c.securityContext.seccompProfile", {"type": "Unconfined"}), "Seccomp"),
]


@pytest.mark.parametrize(("change", "control"), REFUSED, ids=[c for _, c in REFUSED])
def test_each_control_refuses_what_the_published_table_refuses(change, control):
    assert restricted_violations(compliant()) == []
    pod = compliant()
    change(pod)
    found = restricted_violations(pod)
    assert any(f.startswith(control) for f in found), found
    # and no other control, but a hostPath volume, which is not a volume type allowed either
    assert all(f.startswith((control, "Volume Types")) for f in found), found


def _ephemeral(pod: dict[str, Any]) -> None:
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]


#: what the tables allow, or where a field may be left out
ADMITTED = [
    _set("spec.hostNetwork", False),
    _set("c.securityContext.privileged", False),
    _set("c.securityContext.seccompProfile", {"type": "Localhost", "localhostProfile": "p"}),
    _set("c.securityContext.appArmorProfile", {"type": "RuntimeDefault"}),
    _set(
        "metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/m": "localhost/p"}
    ),
    _set("c.securityContext.seLinuxOptions", {"type": "container_t", "level": "s0:c1"}),
    _set("c.securityContext.procMount", "Default"),
    _set("spec.volumes", [{"name": "e", "ephemeral": {"volumeClaimTemplate": {}}}]),
    _set("spec.volumes", [{"name": "x", "csi": {"driver": "d"}}]),
    _set("spec.securityContext.runAsUser", None),
    # container fields may be unset under a pod-level runAsNonRoot: true / seccomp ...
    _set("c.securityContext.runAsNonRoot", None),
    # ... and the pod-level ones when every container sets its own
    lambda pod: (
        _set("spec.securityContext.seccompProfile", None)(pod),
        _set("c.securityContext.seccompProfile", {"type": "RuntimeDefault"})(pod),
        _set("i.securityContext.seccompProfile", {"type": "RuntimeDefault"})(pod),
    ),
    # Windows pods: privilege escalation, seccomp and capabilities are Linux-only controls
    lambda pod: (
        _set("spec.os", {"name": "windows"})(pod),
        _set("spec.securityContext.seccompProfile", None)(pod),
        _set("c.securityContext", {"runAsNonRoot": True})(pod),
        _set("i.securityContext", {})(pod),
    ),
]


@pytest.mark.parametrize("change", ADMITTED)
def test_what_the_tables_allow_is_admitted(change):
    pod = compliant()
    change(pod)
    assert restricted_violations(pod) == []


def test_ephemeral_and_init_containers_are_checked_too():
    pod = compliant()
    _ephemeral(pod)
    found = restricted_violations(pod)
    assert {f.split(":")[0] for f in found} == {
        "Running as Non-root",
        "Privilege Escalation",
        "Seccomp",
        "Capabilities",
    } - {"Running as Non-root", "Seccomp"}  # the pod-level fields cover those two
    assert all("spec.ephemeralContainers[0]" in f for f in found), found


def test_the_published_version_is_named():
    assert "v1.34" in PROFILE_SOURCE and "pod-security-standards" in PROFILE_SOURCE


# ------------------------------------------------- every manifest of the backend
def test_every_catalog_key_has_a_sample_that_a_protocol_takes():
    assert not uncovered_keys(), (
        "tests/helpers/pod_manifests.py SAMPLES has no value for these catalog keys: add "
        f"one, so the pods they shape are checked against the restricted profile: "
        f"{sorted(uncovered_keys())}"
    )
    assert applied_samples() == set(SAMPLES)


def test_every_pod_the_backend_can_make_passes_the_restricted_profile():
    checked = 0
    for name, manifest in every_manifest():
        assert restricted_violations(manifest) == [], name
        checked += 1
    assert checked >= 400


# ------------------------------------------------------------- the namespace
@pytest.mark.parametrize(
    ("labels", "restricted", "words"),
    [
        (
            {"pod-security.kubernetes.io/enforce": "restricted"},
            True,
            "enforces restricted (version latest)",
        ),
        (
            {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "v1.30",
            },
            True,
            "enforces restricted (version v1.30)",
        ),
        (
            {"pod-security.kubernetes.io/enforce": "baseline"},
            False,
            "does not enforce restricted: pod-security.kubernetes.io/enforce is 'baseline'",
        ),
        (
            {"pod-security.kubernetes.io/warn": "restricted"},  # warns, admits all the same
            False,
            "no pod-security.kubernetes.io/enforce label",
        ),
        ({}, False, "no pod-security.kubernetes.io/enforce label"),
    ],
)
def test_what_a_namespace_enforces_is_read_from_its_labels(labels, restricted, words):
    found = namespace_security("c", "scoring", {"metadata": {"name": "scoring", "labels": labels}})
    assert found.restricted is restricted
    assert words in found.describe()
    if not restricted:
        assert (
            "kubectl label --overwrite namespace scoring "
            "pod-security.kubernetes.io/enforce=restricted "
            "pod-security.kubernetes.io/warn=restricted "
            "pod-security.kubernetes.io/audit=restricted"
        ) in found.describe()


def test_a_namespace_that_cannot_be_read_is_not_taken_as_restricted():
    found = unknown("c", "scoring", "HTTP 403")
    assert not found.restricted
    assert found.describe().startswith("cannot tell whether it enforces restricted: HTTP 403")
