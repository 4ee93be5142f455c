import json
from pathlib import Path

import pytest

from scorefleet.settings import ConfigError, describe_markdown, load
from tests.helpers import REPO

BASE = {
    "SCOREFLEET_INPUT_URI": "s3://data/in",
    "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "123.dkr.ecr.eu-west-1.amazonaws.com/models/",
}


def test_defaults_and_normalisation():
    s = load(BASE)
    assert str(s.storage.input_uri) == "s3://data/in/"
    assert str(s.storage.error_uri) == "s3://data/out/"  # defaults to the output prefix
    assert str(s.storage.state_uri) == "s3://data/scorefleet-state/"
    assert s.scoring.max_payload_bytes == 1024 * 1024
    assert s.broker.tls is True and s.launch.backend == "local"
    assert s.kubernetes.default_namespace == "scoring"


def test_missing_required_variables_are_all_named():
    with pytest.raises(ConfigError) as err:
        load({})
    text = str(err.value)
    for name in (
        "SCOREFLEET_INPUT_URI",
        "SCOREFLEET_OUTPUT_URI",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES",
    ):
        assert name in text


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("SCOREFLEET_INPUT_URI", "data/in", "must start with s3://"),
        ("SCOREFLEET_OUTPUT_URI", "s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("SCOREFLEET_MAX_IN_FLIGHT", "zero", "is not an integer"),
        ("SCOREFLEET_MAX_IN_FLIGHT", "0", "allowed range"),
        ("SCOREFLEET_BROKER_TLS", "maybe", "true or false"),
        ("SCOREFLEET_LAUNCH_BACKEND", "local process", "lowercase letters"),
        ("SCOREFLEET_CSV_HEADER", "sometimes", "auto, present, absent"),
        ("SCOREFLEET_DEFAULT_K8S_NAMESPACE", "Not_A_Namespace", "DNS-1123"),
        ("SCOREFLEET_QUEUE", "has spaces", "valid SQS queue name"),
        ("SCOREFLEET_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/other", "same queue"),
        ("SCOREFLEET_MODEL_CATALOG", "/no/such/catalog.json", "no such file"),
        ("SCOREFLEET_MODEL_CATALOG", '{"img": {"max_rejected_rows": -1}}', "img: max_rejected"),
        ("SCOREFLEET_RETRY_BACKOFF_MAX", "3600", "allowed range"),
    ],
)
def test_bad_values_name_the_variable(name, value, needle):
    with pytest.raises(ConfigError) as err:
        load({**BASE, name: value})
    problems = err.value.problems
    assert len(problems) == 1, problems
    assert name.removeprefix("SCOREFLEET_") in problems[0]
    assert needle in problems[0]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("SCOREFLEET_LAUNCH_BACKEND", "docker", "one of local, kubernetes"),
        ("SCOREFLEET_LAUNCH_BACKEND", "kubernetis", "did you mean 'kubernetes'"),
        ("SCOREFLEET_MODEL_CATALOG", '{"img": {"command": "serve --port 80"}}', "{port}"),
    ],
)
def test_what_names_an_extension_is_checked_by_the_worker(name, value, needle):
    """The core (the Lambda's) takes any backend name and any command: the backends
    are listed by the worker's registry, which checks them (workers.settings.load)."""
    from workers.settings import load as load_worker

    load({**BASE, name: value})
    with pytest.raises(ConfigError) as err:
        load_worker({**BASE, name: value})
    problems = err.value.problems
    assert len(problems) == 1, problems
    assert name.removeprefix("SCOREFLEET_") in problems[0]
    assert needle in problems[0]


def test_output_inside_input_is_refused():
    with pytest.raises(ConfigError, match="would be scored again"):
        load({**BASE, "SCOREFLEET_OUTPUT_URI": "s3://data/in/out/"})


def test_model_catalog_lookup(tmp_path: Path):
    cat = tmp_path / "catalog.json"
    cat.write_text(
        '{"reg/iris:1": {"command": "x --port {port}", "response_header": true},'
        ' "reg/*": {"send_header": false, "cpu": "2"}, "*": {"port": 9000}}'
    )
    s = load({**BASE, "SCOREFLEET_MODEL_CATALOG": str(cat)})
    exact = s.models.spec("reg/iris:1")
    assert exact.extra == {"command": "x --port {port}", "response_header": True}
    pattern = s.models.spec("reg/other:2")
    assert pattern.extra == {"send_header": False, "cpu": "2"}
    assert s.models.spec("elsewhere/x").extra == {"port": 9000}
    # the sagemaker options, read by the protocol (at the top level, as catalogs have them)
    from workers.scoring.protocols import protocol_for

    options = protocol_for(exact.protocol).options_of
    assert options(exact).response_header and options(exact).send_header
    assert options(pattern).send_header is False


def test_catalog_patterns_match_at_a_boundary():
    """Reported: `…/iris*` also matched `…/iris-evil:1` (a bare startswith). A pattern's
    prefix now matches as an allowed image prefix does (scorefleet/images.py)."""
    catalog = {
        "reg/iris*": {"port": 1},
        "reg/iris/v2*": {"port": 2},
        "reg/models/*": {"port": 3},
        "reg/tagged:1*": {"port": 4},
        "*": {"port": 9},
    }
    s = load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog)})
    digest = "sha256:" + "a" * 64
    for image, port in (
        ("reg/iris", 1),
        ("reg/iris:1.0", 1),
        (f"reg/iris@{digest}", 1),
        ("reg/iris/sub:1", 1),
        ("reg/iris/v2:3", 2),  # the longest match wins
        ("reg/models/anything:1", 3),
        ("reg/tagged:1", 4),
        (f"reg/tagged:1@{digest}", 4),
        ("reg/iris-evil:1", 9),
        ("reg/irisx:1", 9),
        ("reg/iris.evil:1", 9),
        ("reg/iris_evil:1", 9),
        ("reg/models-evil/x:1", 9),
        ("reg/tagged:10", 9),
        ("elsewhere/x", 9),
    ):
        assert s.models.spec(image).extra["port"] == port, image


@pytest.mark.parametrize("pattern", ["reg/iris-*", "reg/iris.*", "Reg/*", "reg/*/x*", "a**"])
def test_an_ambiguous_catalog_pattern_stops_start_up(pattern):
    with pytest.raises(ConfigError, match="SCOREFLEET_MODEL_CATALOG") as err:
        load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps({pattern: {"port": 1}})})
    assert "at a boundary" in str(err.value)


def test_allowed_prefixes():
    s = load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "a/, b/"})
    assert s.models.image_allowed("a/x:1") and s.models.image_allowed("b/y")
    assert not s.models.image_allowed("c/a/x")
    assert load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "*"}).models.image_allowed("anything")


def test_configuration_docs_match_the_code():
    doc = REPO / "docs" / "configuration.md"
    assert describe_markdown() in doc.read_text(), (
        "docs/configuration.md is out of date: regenerate the table with "
        "`scorefleet config --markdown`"
    )


def test_worker_refuses_to_start_with_a_bad_configuration():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREFLEET_")}
    env.update({**BASE, "SCOREFLEET_MAX_PAYLOAD_MB": "lots"})
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "SCOREFLEET_MAX_PAYLOAD_MB='lots' is not a number" in proc.stderr


def test_steps_queue_is_derived_from_the_task_queue():
    s = load(
        {
            **BASE,
            "SCOREFLEET_QUEUE": "fleet",
            "SCOREFLEET_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/fleet",
        }
    )
    assert s.broker.steps_queue == "fleet-steps"
    assert (
        s.broker.steps_queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/fleet-steps"
    )
    assert load(BASE).broker.steps_queue_url == ""


def test_later_steps_are_routed_to_the_steps_queue():
    from scorefleet.celeryconf import make_app

    app = make_app(load(BASE))
    for name, queue in (
        ("tasks.launch", "scorefleet"),
        ("tasks.rescore", "scorefleet"),
        ("tasks.score", "scorefleet-steps"),
        ("tasks.upload", "scorefleet-steps"),
        ("tasks.teardown", "scorefleet-steps"),
    ):
        assert app.amqp.router.route({}, name)["queue"].name == queue, name


def test_the_dead_letter_queue_url_is_known_beside_the_queue_url():
    """What Flower's Broker tab reads without GetQueueUrl (its role on AWS may only read
    the depths of the task, steps and dead-letter queues)."""
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/scorefleet"
    s = load({**BASE, "SCOREFLEET_QUEUE": "scorefleet", "SCOREFLEET_QUEUE_URL": url})
    assert (
        s.broker.dead_letter_queue_url == url + "-dlq"
        and s.broker.steps_queue_url == url + "-steps"
    )
    own = "https://sqs.eu-west-1.amazonaws.com/123456789012/elsewhere"
    s = load({**BASE, "SCOREFLEET_QUEUE": "scorefleet", "SCOREFLEET_DEAD_LETTER_QUEUE": own})
    assert s.broker.dead_letter_queue_url == own
    assert load({**BASE, "SCOREFLEET_QUEUE": "scorefleet"}).broker.dead_letter_queue_url == ""
