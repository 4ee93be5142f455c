"""deploy/aws.yaml: cfn-lint, least-privilege IAM, and agreement with the code, the
chart and docs/flower.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lambda_enqueue import build
from scorefleet.settings import VARIABLES, load
from tests.helpers import REPO
from tests.helpers.cloudformation import TEMPLATE, template
from workers.monitoring import monitor

#: Actions IAM cannot scope to a resource (the sweeper's listings).
UNSCOPABLE = {"sqs:ListQueues", "sns:ListTopics"}


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # the cfn-lint command (exit 0 only without errors and warnings)
        [sys.executable, "-c", "from cfnlint.runner.cli import main; main()", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cfn_lint_passes():
    proc = cfn_lint(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_is_really_checking(tmp_path):
    broken = TEMPLATE.read_text().replace("Runtime: python3.11", "Runtime: python2.0")
    (tmp_path / "broken.yaml").write_text(broken)
    assert cfn_lint(tmp_path / "broken.yaml").returncode != 0


# -------------------------------------------------------------------------- IAM
def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(where, policy document) for every IAM and resource policy of the template."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for name, res in template()["Resources"].items():
        props = res.get("Properties", {})
        trust = props.get("AssumeRolePolicyDocument")
        if isinstance(trust, dict) and "Fn::Sub" in trust:
            trust = json.loads(re.sub(r"\$\{[^}]+\}", "X", trust["Fn::Sub"]))
        if trust:
            docs.append((f"{name} trust", trust))
        for policy in props.get("Policies", []):
            docs.append((f"{name} {policy['PolicyName']}", policy["PolicyDocument"]))
        if "PolicyDocument" in props:
            docs.append((name, props["PolicyDocument"]))
    return docs


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def _statements() -> list[tuple[str, dict[str, Any]]]:
    return [(where, st) for where, doc in _documents() for st in _list(doc["Statement"])]


def test_every_policy_is_found():
    where = {w.split()[0] for w, _ in _documents()}
    roles = {"EnqueueRole", "WorkerRole", "FlowerRole", "BeatRole", "KedaScalerRole"}
    assert {*roles, "S3EventsQueuePolicy"} <= where


def test_no_wildcard_actions_and_no_wildcard_resources_where_one_can_be_named():
    for where, st in _statements():
        if st["Effect"] != "Allow":
            continue  # the buckets' TLS-only Deny covers s3:* on purpose
        actions = _list(st.get("Action", []))
        resources = _list(st.get("Resource", []))
        for action in actions:
            assert action != "*" and not action.endswith(":*"), f"{where}: {action}"
            assert "*" not in action, f"{where}: wildcard action {action}"
        if "*" in resources:
            assert set(actions) <= UNSCOPABLE, f"{where}: {actions} on *"
        if "Principal" not in st:  # identity policies: every resource named (or patterned)
            assert resources, f"{where}: no resource"


def _documented(role: str) -> set[str]:
    """The monitoring actions docs/flower.md lists for one role (Workers or Flower)."""
    text = (REPO / "docs" / "flower.md").read_text()
    section = text.split("## AWS permissions", 1)[1].split("\n## ", 1)[0]
    block = section.split(f"**{role}**", 1)[1].split("\n**", 1)[0]
    documented = set()
    for service in ("SNS", "SQS"):
        para = re.search(rf"\* {service} on `[^`]+`:(.*?)(?:\n\*|\n\n|$)", block, re.S)
        assert para, (role, service)
        documented |= {f"{service.lower()}:{a}" for a in re.findall(r"`(\w+)`", para.group(1))}
    return documented


def _granted(role: str) -> set[str]:
    return {
        a
        for where, st in _statements()
        if where.startswith(f"{role} ") and "trust" not in where
        for a in _list(st["Action"])
    }


def test_worker_role_covers_what_docs_flower_md_lists():
    documented = _documented("Workers")
    assert documented <= _granted("WorkerRole"), sorted(documented - _granted("WorkerRole"))


def test_flowers_role_is_exactly_the_monitoring_docs_flower_md_lists():
    """Flower only watches: the <queue>-mon-* queues and topics, and the depths of the
    task queues (below); nothing that sends to or receives from them (its task API
    cannot start work), no S3, no listing."""
    assert _granted("FlowerRole") == _documented("Flower")
    policies = {w.split()[1] for w, _ in _statements() if w.startswith("FlowerRole ")}
    assert policies == {"trust", "monitoring", "broker-tab"}
    resources = [
        r
        for where, st in _statements()
        if where.startswith("FlowerRole monitoring")
        for r in _list(st["Resource"])
    ]
    assert resources and all("${QueueName}-mon-*" in r["Fn::Sub"] for r in resources)


def test_flowers_broker_tab_reads_only_the_depths_of_the_task_queues():
    """Reported: Flower's Broker tab (issue 12) was empty on AWS, its role reaching only
    the -mon-* queues. It may read the depths (GetQueueAttributes, read-only) of the
    task, steps and dead-letter queues, and nothing else there; docs/flower.md says so."""
    (tab,) = [st for where, st in _statements() if where.startswith("FlowerRole broker-tab")]
    assert _list(tab["Action"]) == ["sqs:GetQueueAttributes"]
    queues = [r["Fn::GetAtt"] for r in _list(tab["Resource"])]
    assert queues == [[q, "Arn"] for q in ("TaskQueue", "StepsQueue", "TaskDeadLetterQueue")]
    text = (REPO / "docs" / "flower.md").read_text().split("## AWS permissions", 1)[1]
    flower = text.split("**Flower**", 1)[1].split("\n**", 1)[0]
    assert re.search(
        r"\* SQS on the task queue, the steps queue and the dead-letter queue: "
        r"`GetQueueAttributes`\s+\(the Broker tab's depths\), nothing else",
        flower,
    )


def test_beats_role_only_sends_to_the_task_queue():
    (st,) = [st for where, st in _statements() if where.startswith("BeatRole schedule")]
    assert set(_list(st["Action"])) == {"sqs:SendMessage", "sqs:GetQueueAttributes"}
    assert st["Resource"] == {"Fn::GetAtt": ["TaskQueue", "Arn"]}


@pytest.mark.parametrize(
    ("role", "param", "path"),
    [
        ("WorkerRole", "WorkerServiceAccount", ("serviceAccount",)),
        ("FlowerRole", "FlowerServiceAccount", ("flower", "serviceAccount")),
        ("BeatRole", "BeatServiceAccount", ("beat", "serviceAccount")),
    ],
)
def test_irsa_trust_names_the_charts_service_account(role, param, path):
    props = template()["Resources"][role]["Properties"]
    trust = props["AssumeRolePolicyDocument"]["Fn::Sub"]
    assert f"system:serviceaccount:${{WorkerNamespace}}:${{{param}}}" in trust
    assert ':aud": "sts.amazonaws.com"' in trust
    params = template()["Parameters"]
    values = yaml.safe_load((REPO / "helm/scorefleet/values.yaml").read_text())
    for part in path:
        values = values[part]
    assert params[param]["Default"] == values["name"]
    assert f"{role}Arn" in template()["Outputs"]


def test_monitoring_names_fit_the_iam_patterns():
    """The policy is scoped to <QueueName>-mon-*: true for every name the template accepts."""
    pattern = template()["Parameters"]["QueueName"]["AllowedPattern"]
    longest = "q" * 28
    assert re.fullmatch(pattern, longest) and not re.fullmatch(pattern, longest + "q")
    for name in ("scorefleet", longest, "a"):
        ns = monitor.namespace(name)
        assert ns == f"{name}-mon"
        for topic in monitor.topic_names(ns):
            assert topic.startswith(f"{name}-mon-")
        for kind in monitor.KINDS:
            assert f"{ns}-{kind}-x".startswith(f"{name}-mon-")


# --------------------------------------------------- agreement with the code
def _defaults() -> dict[str, str]:
    return {k: str(v.get("Default", "")) for k, v in template()["Parameters"].items()}


def test_queues_match_the_settings_defaults_and_the_chart():
    res = template()["Resources"]
    defaults = {v.name: v.default for v in VARIABLES}
    assert _defaults()["VisibilityTimeout"] == defaults["VISIBILITY_TIMEOUT"]
    values = yaml.safe_load((REPO / "helm/scorefleet/values.yaml").read_text())
    assert str(values["queue"]["visibilityTimeout"]) == defaults["VISIBILITY_TIMEOUT"]
    assert values["queue"]["name"] == _defaults()["QueueName"] == defaults["QUEUE"]
    queue = res["TaskQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {"Ref": "VisibilityTimeout"}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["TaskDeadLetterQueue", "Arn"]
    }
    # `scorefleet dlq` finds <QUEUE>-dlq by default
    assert res["TaskDeadLetterQueue"]["Properties"]["QueueName"] == {"Fn::Sub": "${QueueName}-dlq"}
    # the steps queue the workers derive (Settings.steps_queue), same timeout and DLQ
    steps = res["StepsQueue"]["Properties"]
    assert steps["QueueName"] == {"Fn::Sub": "${QueueName}-steps"}
    assert steps["VisibilityTimeout"] == queue["VisibilityTimeout"]
    assert steps["RedrivePolicy"] == queue["RedrivePolicy"]
    worker_policy = json.dumps(res["WorkerRole"]["Properties"]["Policies"])
    assert '"StepsQueue", "Arn"' in worker_policy


def test_lambda_matches_the_package_and_its_settings_load():
    res = template()["Resources"]
    fn = res["EnqueueFunction"]["Properties"]
    assert fn["Handler"] == build.ENTRY + ".handler"
    assert fn["Runtime"] == "python" + build.TARGET["python_version"]
    esm = res["EnqueueEventSource"]["Properties"]
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["S3EventsQueue", "Arn"]}
    env = fn["Environment"]["Variables"]
    names = {v.env for v in VARIABLES}
    assert set(env) <= names, set(env) - names
    params = {
        **_defaults(),
        "InputBucketName": "data-in",
        "OutputBucketName": "data-out",
        "AllowedImagePrefixes": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/",
    }

    def resolve(v: Any) -> str:
        if isinstance(v, dict) and "Ref" in v:
            ref = v["Ref"]
            return (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/scorefleet"
                if ref == "TaskQueue"
                else params[ref]
            )
        if isinstance(v, dict) and "Fn::Sub" in v:
            return re.sub(r"\$\{(\w+)\}", lambda m: params[m.group(1)], v["Fn::Sub"])
        return str(v)

    settings = load({k: resolve(v) for k, v in env.items()})
    assert str(settings.storage.input_uri) == "s3://data-in/in/"
    assert settings.broker.visibility_timeout == 300
    # the namespaces files may name: the default one, or the chart's list
    assert settings.kubernetes.namespaces_of("default") == ("scoring",)
    params["K8sNamespaces"] = "scoring,team-a"
    settings = load({k: resolve(v) for k, v in env.items()})
    assert settings.kubernetes.namespaces_of("default") == ("scoring", "team-a")


def test_input_notification_goes_through_sqs_with_prefix_and_suffix_filters():
    res = template()["Resources"]
    (conf,) = res["InputBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert conf["Event"] == "s3:ObjectCreated:*"
    assert conf["Queue"] == {"Fn::GetAtt": ["S3EventsQueue", "Arn"]}
    with_suffix, prefix_only = conf["Filter"]["S3Key"]["Rules"]["Fn::If"][1:]
    assert [r["Name"] for r in with_suffix] == ["prefix", "suffix"]
    assert [r["Name"] for r in prefix_only] == ["prefix"]
    assert "S3EventsQueuePolicy" in _list(res["InputBucket"]["DependsOn"])


@pytest.mark.parametrize("resource", ["InputBucket", "OutputBucket"])
def test_buckets_are_private_encrypted_and_versioned(resource):
    props = template()["Resources"][resource]["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]


def test_the_lambda_requires_digests_when_the_stack_says_so():
    """RequireImageDigest reaches the Lambda as SCOREFLEET_REQUIRE_IMAGE_DIGEST, with the
    settings' default, and the Lambda's settings load reads it."""
    param = template()["Parameters"]["RequireImageDigest"]
    assert param["AllowedValues"] == ["true", "false"]
    default = next(v.default for v in VARIABLES if v.name == "REQUIRE_IMAGE_DIGEST")
    assert param["Default"] == default == "false"
    env = template()["Resources"]["EnqueueFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SCOREFLEET_REQUIRE_IMAGE_DIGEST"] == {"Ref": "RequireImageDigest"}
    lambda_group = next(
        g
        for g in template()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        if g["Label"]["default"] == "Lambda"
    )
    assert "RequireImageDigest" in lambda_group["Parameters"]
    base = {
        "SCOREFLEET_INPUT_URI": "s3://data-in/in/",
        "SCOREFLEET_OUTPUT_URI": "s3://data-out/out/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/",
    }
    for value in param["AllowedValues"]:
        settings = load({**base, "SCOREFLEET_REQUIRE_IMAGE_DIGEST": value})
        assert settings.models.require_digest is (value == "true")
