"""Every pod manifest the kubernetes backend can produce, for the restricted-profile
check (tests/unit/test_pod_security.py, bench/blast_radius.py).

"Every" as far as the configuration can make them differ: each model protocol (the
example catalog has one entry per protocol, and more for the probe variants), each
catalog key alone and all of them at once on every protocol they apply to, with the
``SCOREFLEET_K8S_*`` pod settings at their defaults and all set. A catalog key that
has no sample here fails :func:`uncovered_keys` (so a key added later, a replica
count or anything else that may shape a pod, is checked from the day it exists);
every combination is first checked with the worker's own catalog check, so no sample
is a value the worker would refuse.

Only names that exist since the manifest code has: the same script measures a
checkout from before the restricted check (bench/blast_radius.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from scorefleet.settings import load
from tests.helpers import REPO, make_job
from workers import catalog
from workers.backends.kubernetes.manifest import pod_manifest
from workers.scoring.protocols import PROTOCOLS

IMAGE = "reg.example/models/m:1"
ENV = {
    "SCOREFLEET_INPUT_URI": "s3://data-in/in/",
    "SCOREFLEET_OUTPUT_URI": "s3://data-out/out/",
    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "reg.example/models/",
    "SCOREFLEET_LAUNCH_BACKEND": "kubernetes",
    "SCOREFLEET_K8S_CLUSTERS": json.dumps({"default": {"in_cluster": True}}),
}
#: every pod setting of the environment, none at its default
POD_SETTINGS = {
    "SCOREFLEET_K8S_RESOURCES": '{"requests": {"cpu": "2", "memory": "4Gi"}, "limits": '
    '{"memory": "4Gi", "nvidia.com/gpu": 1}}',
    "SCOREFLEET_K8S_NODE_SELECTOR": '{"karpenter.sh/nodepool": "scoring"}',
    "SCOREFLEET_K8S_TOLERATIONS": '[{"key": "scoring", "operator": "Exists", '
    '"effect": "NoSchedule"}]',
    "SCOREFLEET_K8S_IMAGE_PULL_SECRETS": "regcred,other",
    "SCOREFLEET_K8S_SERVICE_ACCOUNT": "model-runner",
    "SCOREFLEET_K8S_ACTIVE_DEADLINE": "3600",
    "SCOREFLEET_WARM_IDLE_SECONDS": "60",
}

#: a good value of every catalog key that is not a protocol's (those come with BASES)
SAMPLES: dict[str, Any] = {
    # the core's
    "env": {"OMP_NUM_THREADS": "1", "MODEL_NAME": "iris"},
    "max_rejected_rows": "0.1%",
    # the backends'
    "args": ["serve", "--workers", "2"],
    "command": "{python} serve.py --host {host} --port {port}",
    "cwd": str(REPO),
    "launch_timeout": 600,
    "port": 9000,
    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 1}},
    "node_selector": {"gpu": "a10"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "image_pull_secrets": ["gpu-cred"],
    "service_account": "gpu-runner",
    "run_as_user": 1000,
    "replicas": 4,
    "min_mb_per_replica": 2.5,
    "local_aws": True,
    # the formats'
    "content_type": "csv",
    "output_format": "jsonl",
    "keep_columns": ["id"],
    "model_columns": ["a", "b"],
    "drop_columns": ["c"],
    "csv_header": "present",
    # the model's declared contract (it shapes no pod: checked before one is made)
    "inputs": {"columns": [{"name": "a", "type": "number"}], "closed": True},
    # the sagemaker protocol's options at the top level (on its entries only)
    "send_header": False,
    "response_header": True,
    "response_format": "json",
}

#: more entries than the example catalog's, for the readiness probes they make
PROBE_VARIANTS: list[dict[str, Any]] = [
    {"protocol": "v2", "v2": {"model_name": "iris", "model_version": "3"}},
    {"protocol": "json", "json": {"path": "/predict", "ready_method": "POST"}},
    {"protocol": "json", "json": {"path": "/predict"}},
    {"protocol": "lambda", "lambda": {"probe_event": {"rows": []}}},
    {"protocol": "sagemaker", "sagemaker": {"response_format": "csv"}},
]


def bases() -> list[dict[str, Any]]:
    """One entry per protocol (the example catalog), and the probe variants."""
    examples = json.loads((REPO / "examples" / "catalog.json").read_text())
    return [dict(e) for e in examples.values()] + [dict(v) for v in PROBE_VARIANTS]


def protocol_keys() -> set[str]:
    """The catalog keys the bases bring: each protocol's name, options and options key."""
    keys = {"protocol"}
    for protocol in PROTOCOLS.values():
        keys |= {protocol.options_key, *protocol.option_names}
    return keys


def uncovered_keys() -> set[str]:
    """Catalog keys with no sample here (each should have one)."""
    return set(catalog.known_keys()) - set(SAMPLES) - protocol_keys()


def _entries() -> Iterator[tuple[str, dict[str, Any]]]:
    for i, base in enumerate(bases()):
        name = f"{base.get('protocol', 'sagemaker')}#{i}"
        yield name, base
        valid = [k for k in SAMPLES if not catalog.entry_problems(IMAGE, {**base, k: SAMPLES[k]})]
        for key in valid:
            yield f"{name}+{key}", {**base, key: SAMPLES[key]}
        every = dict(base)  # as many at once as go together (not model_ and drop_columns)
        for key in valid:
            if not catalog.entry_problems(IMAGE, {**every, key: SAMPLES[key]}):
                every[key] = SAMPLES[key]
        yield f"{name}+all", every


def every_manifest() -> Iterator[tuple[str, dict[str, Any]]]:
    """(what it is, the pod manifest) of every configuration above."""
    job = make_job("sf-0123456789abcdef0123", k8s_cluster="default", k8s_namespace="scoring")
    for settings_name, extra in (("defaults", {}), ("K8S_* set", POD_SETTINGS)):
        for name, entry in _entries():
            problems = catalog.entry_problems(IMAGE, entry)
            assert not problems, f"{name}: a sample the worker refuses: {problems}"
            env = {**ENV, **extra, "SCOREFLEET_MODEL_CATALOG": json.dumps({IMAGE: entry})}
            settings = load(env)
            spec = settings.models.spec(IMAGE)
            manifest = pod_manifest(job, spec, settings, fleet="scorefleet", worker="w-1")
            yield f"{name} ({settings_name})", manifest
            if entry.get("replicas"):  # another replica's pod (issue 25): the same checks
                other = pod_manifest(
                    job, spec, settings, fleet="scorefleet", worker="w-1", replica=3
                )
                yield f"{name} replica 3 ({settings_name})", other


def applied_samples() -> set[str]:
    """The sample keys that some base took (a sample no base takes checks nothing)."""
    return {name.split("+", 1)[1] for name, _ in _entries() if "+" in name} - {"all"}
