"""Pod Security Admission as the kubernetes backend meets it: the ``restricted`` profile
of the Pod Security Standards as a check of a pod manifest, and what a namespace's
``pod-security.kubernetes.io/*`` labels make the API server enforce.

**The profile** (:func:`restricted_violations`) is the published one: "Pod Security
Standards", kubernetes.io/docs/concepts/security/pod-security-standards, as of the
Kubernetes v1.34 documentation (the page that adds the "Host Probes / Lifecycle Hooks
(v1.34+)" control), i.e. what the label value ``restricted`` with version ``latest``
means on a v1.34 API server; every control of the Baseline table and of the
Restricted table, each over ``spec.containers``, ``spec.initContainers`` and
``spec.ephemeralContainers``, with the page's notes: a container field may be unset
when the pod-level field is set right (``runAsNonRoot``, seccomp); the privilege
escalation, seccomp and capabilities controls do not apply to ``spec.os.name:
windows``. Where the page and the admission controller's own code
(k8s.io/pod-security-admission, ``policy/check_*.go``) agree on a detail the page
leaves open, that is what is checked (an explicit container ``runAsNonRoot: false``
fails even under a pod-level ``true``). One relaxation is not taken: v1.35's
``runAsNonRoot`` exemption for pods in a user namespace (``hostUsers: false``);
scorefleet's pods do not use one, so the check here is the stricter.

This module needs nothing but the standard library: the tests and
``bench/blast_radius.py`` check every manifest the backend can produce with it, and
the backend checks its own before it creates a pod (a bug in the manifest code is
refused here even in a namespace that enforces nothing).

**The namespace** (:func:`namespace_security`): Pod Security Admission reads the
labels ``pod-security.kubernetes.io/<mode>`` and ``…/<mode>-version`` for the modes
``enforce`` (a violating pod is refused), ``warn`` (the client is warned) and
``audit`` (the audit log records it). Only ``enforce: restricted`` stops a
compromised worker; a namespace without the label gets the cluster's default
(``privileged`` unless its AdmissionConfiguration says otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: What the checks follow (docs/security.md names it too).
PROFILE = "restricted"
PROFILE_SOURCE = (
    "Pod Security Standards, kubernetes.io/docs/concepts/security/pod-security-standards "
    "(Kubernetes v1.34 documentation; label version latest)"
)

LABEL_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "warn", "audit")

# ------------------------------------------------------------- allowed values
#: Restricted "Capabilities": drop ALL, add back this one only.
_RESTRICTED_ADD = frozenset({"NET_BIND_SERVICE"})
_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
#: Restricted "Volume Types": every volume sets one of these.
_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_SECCOMP_RESTRICTED = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS = ("postStart", "preStop")
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(``spec.containers[0]``-style path, container) of every container of the pod."""
    for field in _CONTAINER_LISTS:
        for i, container in enumerate(_list(spec.get(field))):
            yield f"spec.{field}[{i}]", _map(container)


# ---------------------------------------------------------------- the checks
def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every control of the ``restricted`` profile (Baseline's included) that the pod
    manifest ``pod`` (a Pod: ``metadata`` and ``spec``) fails, one line each:
    ``"<control>: <field> <what is wrong>"``. Empty: admitted under ``enforce:
    restricted``."""
    meta, spec = _map(pod.get("metadata")), _map(pod.get("spec"))
    found: list[str] = []
    found += _baseline(meta, spec)
    found += _restricted(spec)
    return found


def _baseline(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """The Baseline table, less its Capabilities and Seccomp controls: Restricted's
    replace them (as in the admission controller, whose restricted checks override
    the baseline ones, windows pods included)."""
    found: list[str] = []
    pod_sc = _map(spec.get("securityContext"))
    containers = list(_containers(spec))
    # HostProcess
    if _map(pod_sc.get("windowsOptions")).get("hostProcess") is True:
        found.append("HostProcess: spec.securityContext.windowsOptions.hostProcess is true")
    for path, c in containers:
        if _map(_map(c.get("securityContext")).get("windowsOptions")).get("hostProcess") is True:
            found.append(f"HostProcess: {path}.securityContext.windowsOptions.hostProcess is true")
    # Host Namespaces
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) not in (None, False):
            found.append(f"Host Namespaces: spec.{field} is {spec.get(field)!r}")
    for path, c in containers:
        sc = _map(c.get("securityContext"))
        # Privileged Containers
        if sc.get("privileged") not in (None, False):
            found.append(f"Privileged Containers: {path}.securityContext.privileged is true")
        # Host Ports
        for j, port in enumerate(_list(c.get("ports"))):
            if _map(port).get("hostPort") not in (None, 0):
                found.append(f"Host Ports: {path}.ports[{j}].hostPort is set")
        # Host Probes / Lifecycle Hooks (v1.34+)
        handlers = [(p, _map(c.get(p))) for p in _PROBES]
        handlers += [(f"lifecycle.{h}", _map(_map(c.get("lifecycle")).get(h))) for h in _HOOKS]
        for where, handler in handlers:
            for kind in ("httpGet", "tcpSocket"):
                if _map(handler.get(kind)).get("host") not in (None, ""):
                    found.append(
                        f"Host Probes / Lifecycle Hooks: {path}.{where}.{kind}.host is set"
                    )
        # /proc Mount Type
        if sc.get("procMount") not in (None, "Default"):
            found.append(
                f"/proc Mount Type: {path}.securityContext.procMount is {sc['procMount']!r}"
            )
    # HostPath Volumes
    for i, volume in enumerate(_list(spec.get("volumes"))):
        if _map(volume).get("hostPath") is not None:
            found.append(f"HostPath Volumes: spec.volumes[{i}].hostPath is set")
    # AppArmor
    contexts = [("spec", pod_sc)] + [(p, _map(c.get("securityContext"))) for p, c in containers]
    for path, sc in contexts:
        profile = _map(sc.get("appArmorProfile")).get("type")
        if profile is not None and profile not in _APPARMOR_TYPES:
            found.append(f"AppArmor: {path}.securityContext.appArmorProfile.type is {profile!r}")
    for key, value in _map(meta.get("annotations")).items():
        if str(key).startswith(_APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or str(value).startswith("localhost/")
        ):
            found.append(f"AppArmor: metadata.annotations[{key!r}] is {value!r}")
    # SELinux
    for path, sc in contexts:
        options = _map(sc.get("seLinuxOptions"))
        if options.get("type", "") not in _SELINUX_TYPES:
            found.append(
                f"SELinux: {path}.securityContext.seLinuxOptions.type is {options['type']!r}"
            )
        for field in ("user", "role"):
            if options.get(field, "") != "":
                found.append(f"SELinux: {path}.securityContext.seLinuxOptions.{field} is set")
    # Sysctls
    for sysctl in _list(pod_sc.get("sysctls")):
        name = _map(sysctl).get("name")
        if name not in _SAFE_SYSCTLS:
            found.append(f"Sysctls: spec.securityContext.sysctls names {name!r}")
    return found


def _restricted(spec: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    pod_sc = _map(spec.get("securityContext"))
    containers = list(_containers(spec))
    linux = _map(spec.get("os")).get("name") != "windows"
    # Volume Types
    for i, volume in enumerate(_list(spec.get("volumes"))):
        if not any(_map(volume).get(t) is not None for t in _VOLUME_TYPES):
            kinds = sorted(set(_map(volume)) - {"name"}) or ["none"]
            found.append(f"Volume Types: spec.volumes[{i}] is {', '.join(kinds)}")
    # Running as Non-root: pod-level true covers containers that leave it unset;
    # an explicit false anywhere fails
    pod_non_root = pod_sc.get("runAsNonRoot")
    if pod_non_root is False:
        found.append("Running as Non-root: spec.securityContext.runAsNonRoot is false")
    for path, c in containers:
        value = _map(c.get("securityContext")).get("runAsNonRoot")
        if value is False:
            found.append(f"Running as Non-root: {path}.securityContext.runAsNonRoot is false")
        elif value is None and pod_non_root is not True:
            found.append(
                f"Running as Non-root: neither spec.securityContext nor "
                f"{path}.securityContext sets runAsNonRoot: true"
            )
    # Running as Non-root user (v1.23+)
    contexts = [("spec", pod_sc)] + [(p, _map(c.get("securityContext"))) for p, c in containers]
    for path, sc in contexts:
        if sc.get("runAsUser") == 0:
            found.append(f"Running as Non-root user: {path}.securityContext.runAsUser is 0")
    if not linux:
        return found
    # Privilege Escalation (v1.8+): explicitly false
    for path, c in containers:
        if _map(c.get("securityContext")).get("allowPrivilegeEscalation") is not False:
            found.append(
                f"Privilege Escalation: {path}.securityContext.allowPrivilegeEscalation "
                "is not false"
            )
    # Seccomp (v1.19+): RuntimeDefault or Localhost, at pod level or on every container
    pod_seccomp = _map(pod_sc.get("seccompProfile")).get("type")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_RESTRICTED:
        found.append(f"Seccomp: spec.securityContext.seccompProfile.type is {pod_seccomp!r}")
    for path, c in containers:
        kind = _map(_map(c.get("securityContext")).get("seccompProfile")).get("type")
        if kind is not None and kind not in _SECCOMP_RESTRICTED:
            found.append(f"Seccomp: {path}.securityContext.seccompProfile.type is {kind!r}")
        elif kind is None and pod_seccomp is None:
            found.append(
                f"Seccomp: neither spec.securityContext nor {path}.securityContext sets "
                "seccompProfile.type (RuntimeDefault or Localhost)"
            )
    # Capabilities (v1.22+): drop ALL, add back NET_BIND_SERVICE at most
    for path, c in containers:
        caps = _map(_map(c.get("securityContext")).get("capabilities"))
        if "ALL" not in set(map(str, _list(caps.get("drop")))):
            found.append(f"Capabilities: {path}.securityContext.capabilities.drop lacks ALL")
        added = set(map(str, _list(caps.get("add")))) - _RESTRICTED_ADD
        if added:
            found.append(f"Capabilities: {path} adds {', '.join(sorted(added))}")
    return found


# -------------------------------------------------------------- the namespace
@dataclass(frozen=True)
class NamespaceSecurity:
    """What Pod Security Admission enforces in one namespace, from its labels (or why
    they could not be read)."""

    cluster: str
    namespace: str
    #: {mode: level} of the labels present (enforce, warn, audit)
    levels: Mapping[str, str]
    #: {mode: version} of the ``…-version`` labels present
    versions: Mapping[str, str]
    #: why the namespace could not be read (no permission, not there, no API): unknown
    error: str = ""

    @property
    def enforce(self) -> str | None:
        return self.levels.get("enforce")

    @property
    def restricted(self) -> bool:
        """Does the API server refuse every pod that fails the restricted profile here?"""
        return not self.error and self.enforce == PROFILE

    def describe(self) -> str:
        """One line: what is enforced, or what is wrong and what to do."""
        if self.restricted:
            return f"enforces {PROFILE} (version {self.versions.get('enforce', 'latest')})"
        if self.error:
            state = f"cannot tell whether it enforces {PROFILE}: {self.error}"
        elif self.enforce is None:
            state = (
                f"does not enforce {PROFILE}: no {LABEL_PREFIX}enforce label (the cluster's "
                "default applies: privileged unless its admission configuration says otherwise)"
            )
        else:
            state = f"does not enforce {PROFILE}: {LABEL_PREFIX}enforce is {self.enforce!r}"
        return f"{state}; {advice(self.namespace)}"


def label_command(namespace: str) -> str:
    """The kubectl command that makes ``namespace`` enforce, warn and audit restricted."""
    labels = " ".join(f"{LABEL_PREFIX}{mode}={PROFILE}" for mode in MODES)
    return f"kubectl label --overwrite namespace {namespace} {labels}"


def advice(namespace: str) -> str:
    return (
        "a compromised worker or a catalog mistake could run a privileged pod there; "
        f"label it: {label_command(namespace)} (docs/security.md)"
    )


def namespace_security(cluster: str, namespace: str, obj: Mapping[str, Any]) -> NamespaceSecurity:
    """What the Namespace object ``obj`` (as the API returns it) enforces."""
    labels = _map(_map(obj.get("metadata")).get("labels"))
    levels, versions = {}, {}
    for mode in MODES:
        if f"{LABEL_PREFIX}{mode}" in labels:
            levels[mode] = str(labels[f"{LABEL_PREFIX}{mode}"])
        if f"{LABEL_PREFIX}{mode}-version" in labels:
            versions[mode] = str(labels[f"{LABEL_PREFIX}{mode}-version"])
    return NamespaceSecurity(cluster, namespace, levels, versions)


def unknown(cluster: str, namespace: str, error: str) -> NamespaceSecurity:
    return NamespaceSecurity(cluster, namespace, {}, {}, error=error)
