"""Each setting is declared once (scorefleet/settings/sections.py), and the Lambda's
settings carry no Kubernetes checks: those are the kubernetes backend's
(workers/backends/kubernetes/config.py), run by workers and `scorefleet config`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from scorefleet import settings as core
from scorefleet.settings import SECTIONS, VARIABLES, ConfigError, Settings
from scorefleet.settings.declare import variables
from tests.helpers import REPO
from workers import settings as worker

BASE = {
    "SCOREFLEET_INPUT_URI": "s3://data/in",
    "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "reg/",
}


def test_every_field_of_every_section_is_one_variable():
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names == list(SECTIONS)
    declared = [
        (section, field, v) for section in SECTIONS.values() for field, v in variables(section)
    ]
    for section in SECTIONS.values():
        # nothing in a section that is not read from its variable
        assert [f.name for f in dataclasses.fields(section)] == [f for f, _ in variables(section)]
    envs = [v.env for _, _, v in declared]
    assert len(envs) == len(set(envs)) == len(VARIABLES)
    shown = [name for name, _ in core.load(BASE).shown()]
    assert len(shown) == len(set(shown)) == len(VARIABLES)


def test_sections_are_typed_and_frozen():
    s = core.load({**BASE, "SCOREFLEET_RETRY_MAX": "7", "SCOREFLEET_QUEUE": "fleet"})
    assert (
        s.retries.max == 7 and s.broker.queue == "fleet" and s.broker.steps_queue == "fleet-steps"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.retries.max = 1  # type: ignore[misc]


ENDPOINT_WITHOUT_CA = {
    **BASE,
    "SCOREFLEET_K8S_CLUSTERS": json.dumps(
        {"blue": {"endpoint": "https://e", "eks_cluster_name": "blue", "namespaces": ["a"]}}
    ),
    "SCOREFLEET_K8S_TOLERATIONS": '[{"operator": "In"}]',
    "SCOREFLEET_MODEL_CATALOG": '{"reg/x:1": {"run_as_user": 0}}',
}


def test_the_core_checks_only_what_the_lambda_needs():
    """Cluster names and namespaces, yes; how to reach a cluster or run a pod, no."""
    s = core.load(ENDPOINT_WITHOUT_CA)
    assert s.kubernetes.namespaces_of("blue") == ("a",)
    with pytest.raises(ConfigError, match="is not a cluster map"):
        core.load({**BASE, "SCOREFLEET_K8S_CLUSTERS": '{"bad name!": {"in_cluster": true}}'})
    with pytest.raises(ConfigError, match="namespaces must be a non-empty list"):
        core.load(
            {**BASE, "SCOREFLEET_K8S_CLUSTERS": '{"b": {"in_cluster": true, "namespaces": []}}'}
        )


def test_workers_check_the_kubernetes_settings_in_depth_all_at_once():
    with pytest.raises(ConfigError) as err:
        worker.load({**ENDPOINT_WITHOUT_CA, "SCOREFLEET_RETRY_MAX": "x"})
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert any(p.startswith("SCOREFLEET_RETRY_MAX=") for p in problems)  # the core's
    assert any("ca_data or ca_file is required" in p for p in problems)
    assert any("operator must be Equal or Exists" in p for p in problems)
    assert any("run_as_user: expected a non-root user id" in p for p in problems)


def test_the_lambda_loads_no_kubernetes_checks():
    code = (
        "import sys, lambda_enqueue.handler; "
        "print(sorted(m for m in sys.modules if m.startswith(('workers', 'kubernetes'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
