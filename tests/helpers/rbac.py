"""Every Kubernetes permission a rendered chart gives, as a table: who (a
ServiceAccount), where (a namespace, or ``*`` cluster-wide), on what (a resource,
with the names it is limited to), which verbs. Used by
tests/deploy/test_chart_security.py and bench/blast_radius.py (which also renders a
checkout from before: only the standard library and PyYAML here)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml


class Permission(NamedTuple):
    subject: str  # ServiceAccount <namespace>/<name>
    namespace: str  # where it holds; "*" for a ClusterRoleBinding
    resource: str  # "pods", "pods/log", "namespaces[scoring]", "apps/deployments", ...
    verbs: tuple[str, ...]


def rbac_table(docs: Iterable[Mapping[str, Any]]) -> list[Permission]:
    """Every (subject, namespace, resource, verbs) the Roles and ClusterRoles of
    ``docs`` grant through their bindings, sorted."""
    docs = list(docs)
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d.get("kind") in ("Role", "ClusterRole")
    }
    rows: list[Permission] = []
    for binding in docs:
        kind = binding.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ns = binding["metadata"].get("namespace") if kind == "RoleBinding" else "*"
        ref = binding["roleRef"]
        role_ns = ns if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        rules = role["rules"] if role else [{"resources": [f"<{ref['kind']} {ref['name']}>"]}]
        for subject in binding.get("subjects") or []:
            who = f"{subject['kind']} {subject.get('namespace', '')}/{subject['name']}"
            for rule in rules:
                names = rule.get("resourceNames") or []
                for group in rule.get("apiGroups") or [""]:
                    for resource in rule.get("resources") or []:
                        what = f"{group}/{resource}" if group else resource
                        if names:
                            what += f"[{','.join(names)}]"
                        verbs = tuple(rule.get("verbs") or ())
                        rows.append(Permission(who, ns, what, verbs))
    return sorted(rows)


def service_accounts(docs: Iterable[Mapping[str, Any]], namespace: str) -> dict[str, bool]:
    """{ServiceAccount <namespace>/<name>: does a pod running as it get an API token?}
    for every pod template of ``docs`` (the pod's setting wins over the account's)."""
    docs = list(docs)
    accounts = {
        d["metadata"]["name"]: d.get("automountServiceAccountToken", True)
        for d in docs
        if d.get("kind") == "ServiceAccount"
    }
    out: dict[str, bool] = {}
    for d in docs:
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec")
        if not pod:
            continue
        name = pod.get("serviceAccountName", "default")
        mounted = pod.get("automountServiceAccountToken", accounts.get(name, True))
        out[f"ServiceAccount {namespace}/{name}"] = bool(mounted)
    return out


def render_with_helm(
    helm: str, chart: Path, values: Mapping[str, Any], tmp: Path, *, release: str, namespace: str
) -> list[dict[str, Any]]:
    """``helm template`` of ``chart`` with ``values``: its documents."""
    vfile = tmp / "values.json"
    vfile.write_text(json.dumps(values))
    argv = [helm, "template", release, str(chart), "--namespace", namespace, "-f", str(vfile)]
    out = subprocess.run(
        [*argv, "--kube-version", "1.30.0", "--api-versions", "keda.sh/v1alpha1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def format_table(rows: list[Permission], tokens: Mapping[str, bool]) -> str:
    """The table as text; an account without a permission gets a line saying so."""
    lines = [f"{'subject':44} {'namespace':12} {'resource':28} verbs"]
    for who, mounted in sorted(tokens.items()):
        mine = [r for r in rows if r.subject == who]
        token = "" if mounted else " (no API token mounted)"
        if not mine:
            lines.append(f"{who:44} {'-':12} {'-':28} none{token}")
        for r in mine:
            lines.append(f"{r.subject:44} {r.namespace:12} {r.resource:28} {','.join(r.verbs)}")
    for r in rows:  # bound to an account no pod of the chart runs as
        if r.subject not in tokens:
            lines.append(f"{r.subject:44} {r.namespace:12} {r.resource:28} {','.join(r.verbs)}")
    return "\n".join(lines)
