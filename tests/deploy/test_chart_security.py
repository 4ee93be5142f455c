"""The chart's blast radius on Kubernetes, rendered with Helm (both renderers of
test_chart.py): every permission the worker, beat and Flower have, the Pod Security
Admission labels of the scoring namespaces the chart creates (and the install note
for those it does not), and the chart's own pods under the restricted profile."""

from __future__ import annotations

import pytest

from tests.deploy.test_chart import (  # the renderers, as a fixture
    CHART,
    NAMESPACE,
    RELEASE,
    RenderError,
    by_kind,
    ci_values,
    merged,
    render,
    unavailable,
)
from tests.helpers.rbac import Permission, rbac_table, service_accounts
from workers.backends.kubernetes.podsecurity import restricted_violations

__all__ = ["render"]  # the fixture, imported for its name

WORKER = f"ServiceAccount {NAMESPACE}/scorefleet-worker"
BEAT = f"ServiceAccount {NAMESPACE}/scorefleet-beat"
FLOWER = f"ServiceAccount {NAMESPACE}/scorefleet-flower"
POD_VERBS = ("create", "get", "list", "watch", "delete")
PSA = [
    f"pod-security.kubernetes.io/{mode}{suffix}"
    for mode in ("enforce", "warn", "audit")
    for suffix in ("", "-version")
]


def expected(namespaces: list[str], pod_verbs: tuple[str, ...] = POD_VERBS) -> list[Permission]:
    """The workers' permissions: in each scoring namespace, the model pods, their logs,
    and that namespace itself (read). Nothing else, for anyone."""
    rows = []
    for ns in namespaces:
        rows += [
            Permission(WORKER, ns, "pods", pod_verbs),
            Permission(WORKER, ns, "pods/log", ("get",)),
            Permission(WORKER, ns, f"namespaces[{ns}]", ("get",)),
        ]
    return sorted(rows)


@pytest.mark.parametrize("values_file", ["keda", "hpa"])
def test_every_permission_the_worker_beat_and_flower_have(render, values_file):
    values = ci_values(values_file)
    docs = render(values)
    namespaces = values["kubernetes"]["namespaces"]
    assert rbac_table(docs) == expected(namespaces)
    # beat and Flower run without an API token at all; only the workers have one
    tokens = service_accounts(docs, NAMESPACE)
    flower = {FLOWER: False} if values.get("flower", {}).get("enabled", True) else {}
    assert tokens == {WORKER: True, BEAT: False, **flower}
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(by_kind(docs))


def test_warm_mode_adds_patch_and_nothing_else(render):
    values = merged(ci_values("keda"), {"config": {"SCOREFLEET_WARM_IDLE_SECONDS": "60"}})
    assert rbac_table(render(values)) == expected(["scoring", "team-a"], (*POD_VERBS, "patch"))


def test_without_rbac_the_chart_grants_nothing(render):
    values = merged(ci_values("keda"), {"rbac": {"create": False}})
    docs = render(values)
    assert rbac_table(docs) == []
    assert not {"Role", "RoleBinding"} & set(by_kind(docs))


# ------------------------------------------------------------ Pod Security Admission
def test_the_namespaces_the_chart_creates_enforce_restricted(render):
    values = ci_values("keda")
    assert values["kubernetes"]["createNamespaces"] is True
    created = by_kind(render(values))["Namespace"]
    assert [n["metadata"]["name"] for n in created] == ["scoring", "team-a"]
    for ns in created:
        labels = ns["metadata"]["labels"]
        assert {k: labels[k] for k in PSA} == {
            k: "latest" if k.endswith("-version") else "restricted" for k in PSA
        }
        # uninstalling the release leaves the namespace (and what else runs there)
        assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pinned = merged(values, {"kubernetes": {"podSecurityVersion": "v1.30"}})
    for ns in by_kind(render(pinned))["Namespace"]:
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"] == "v1.30"


def test_namespaces_the_chart_does_not_own_are_left_alone(render):
    assert "Namespace" not in by_kind(render(ci_values("hpa")))
    own = merged(ci_values("keda"), {"kubernetes": {"namespaces": ["scoring", NAMESPACE]}})
    with pytest.raises(
        RenderError, match=f'kubernetes.createNamespaces: "{NAMESPACE}" is the release'
    ):
        render(own)


def _notes(values: dict) -> str:
    try:
        import helm_python as helm
    except ImportError:
        unavailable("helm-python-sdk not installed: the install notes were not rendered")
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def test_the_install_notes_say_how_to_label_the_namespaces_the_chart_does_not_own():
    notes = _notes(ci_values("hpa"))  # not created by the chart, not readable (no cluster)
    assert "WARNING: namespace scoring (not readable from here) may not enforce" in notes
    assert (
        "kubectl label --overwrite namespace scoring "
        "pod-security.kubernetes.io/enforce=restricted "
        "pod-security.kubernetes.io/warn=restricted pod-security.kubernetes.io/audit=restricted"
    ) in notes
    assert "WARNING" not in _notes(ci_values("keda"))  # it creates and labels them


@pytest.mark.parametrize("values_file", ["keda", "hpa"])
def test_the_charts_own_pods_pass_the_restricted_profile(render, values_file):
    """So the release's namespace can enforce restricted too."""
    docs = render(ci_values(values_file))
    templates = [d for d in docs if ((d.get("spec") or {}).get("template") or {}).get("spec")]
    assert {d["metadata"]["name"] for d in templates} >= {f"{RELEASE}-worker", f"{RELEASE}-beat"}
    for d in templates:
        pod = d["spec"]["template"]
        assert restricted_violations(pod) == [], d["metadata"]["name"]
