"""Image references and the allowlist: prefixes match only at a boundary, references
are ASCII to the end of the string, and an ambiguous prefix stops start-up. The same
rule in the chart's values.schema.json and deploy/aws.yaml's AllowedImagePrefixes."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from scorefleet import images
from scorefleet.errors import Rejected
from scorefleet.settings import ConfigError, load
from scorefleet.submission import validate
from tests.helpers import REPO, make_job
from tests.helpers.cloudformation import template

ECR = "123.dkr.ecr.eu-west-1.amazonaws.com"
BASE = {
    "SCOREFLEET_INPUT_URI": "s3://data/in/",
    "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
}


def allowed(prefixes: str, image: str) -> bool:
    return load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": prefixes}).models.image_allowed(image)


@pytest.mark.parametrize(
    ("prefixes", "image", "ok"),
    [
        # the cases: another registry, another repository
        (ECR, f"{ECR}.evil.example/models/x:1", False),
        (ECR, f"{ECR}/models/x:1", True),
        (f"{ECR}/models", f"{ECR}/models-evil/x:1", False),
        (f"{ECR}/models", f"{ECR}/models/x:1", True),
        (f"{ECR}/models", f"{ECR}/models:2", True),
        (f"{ECR}/models", f"{ECR}/models@sha256:{'a' * 64}", True),
        (f"{ECR}/models", f"{ECR}/models", True),
        (f"{ECR}/models/", f"{ECR}/models/x:1", True),
        (f"{ECR}/models/", f"{ECR}/models-evil/x:1", False),
        # a tagged prefix allows that tag (and its digests), not a longer tag
        (f"{ECR}/models/iris:1", f"{ECR}/models/iris:1", True),
        (f"{ECR}/models/iris:1", f"{ECR}/models/iris:1.2", False),
        (f"{ECR}/models/iris:1", f"{ECR}/models/iris:1@sha256:{'b' * 64}", True),
        (f"{ECR}/models/iris:", f"{ECR}/models/iris:anything", True),
        ("localhost:5000/", "localhost:5000/x:1", True),
        ("localhost:5000/", "localhost:50001/x:1", False),
        # references are checked in ASCII, to the end of the string
        ("test/", "test/ok:1\n", False),
        ("test/", "test/ok:1é", False),
        ("test/", "test/ok:١", False),  # an Arabic-Indic digit is \w, and \d, outside ASCII
        ("test/", "test/OK:1", False),
        ("test/", "test/ok:1 --privileged", False),
        ("*", "anything/at:all", True),
        ("*", "not an image", False),
    ],
)
def test_prefixes_match_only_at_a_boundary(prefixes, image, ok):
    assert allowed(prefixes, image) is ok


GOOD_PREFIXES = [
    f"{ECR}/models/",
    f"{ECR}/models",
    ECR,
    "localhost:5000/",
    "scorefleet-examples/",
    "test/",
    f"{ECR}/models/iris:",
    f"{ECR}/models/iris:1.0",
    f"{ECR}/models/iris@",
    f"{ECR}/models/iris@sha256:{'c' * 64}",
]
BAD_PREFIXES = [
    (f"{ECR}/models-", "ends inside a name component"),
    (f"{ECR}/models.", "ends inside a name component"),
    (f"{ECR}/Models/", "not the start of an image reference"),
    (f"{ECR}/mod\nels/", "characters no image reference can have"),
    (f"{ECR}/modèles/", "characters no image reference can have"),
    (f"{ECR}/mo dels/", "characters no image reference can have"),
    (f"{ECR}/*", "only allowed on its own"),
    ("localhost:5000", "ambiguous"),
    ("iris:1", "ambiguous"),
    (f"{ECR}//models/", "not the start of an image reference"),
]


@pytest.mark.parametrize("prefix", GOOD_PREFIXES)
def test_unambiguous_prefixes_are_accepted(prefix):
    assert load(
        {**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": prefix}
    ).models.allowed_image_prefixes == (prefix,)


@pytest.mark.parametrize(("prefix", "why"), BAD_PREFIXES)
def test_ambiguous_prefixes_stop_start_up_naming_the_variable(prefix, why):
    with pytest.raises(ConfigError) as err:
        load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": f"test/,{prefix}"})
    (problem,) = err.value.problems
    assert problem.startswith("SCOREFLEET_ALLOWED_IMAGE_PREFIXES=") and why in problem, problem


def _schema_items() -> dict:
    schema = json.loads((REPO / "helm" / "scorefleet" / "values.schema.json").read_text())
    return schema["properties"]["models"]["properties"]["allowedImagePrefixes"]["items"]


def _cfn_pattern() -> str:
    return str(template()["Parameters"]["AllowedImagePrefixes"]["AllowedPattern"])


def test_the_chart_and_the_template_use_the_same_rule():
    assert _schema_items()["pattern"] == f"^(?:{images.PREFIX_PATTERN})$"
    one = f"(?:{images.PREFIX_PATTERN})"
    assert _cfn_pattern() == f"^{one}(?:,{one})*$"


@pytest.mark.parametrize(
    ("prefix", "good"),
    [(p, True) for p in GOOD_PREFIXES]
    + [(p, False) for p, _ in BAD_PREFIXES]
    + [("*", False), ("test/\n", False)],  # Python's $ accepts a trailing newline
)
def test_the_chart_schema_and_the_template_agree_with_the_code(prefix, good):
    try:
        jsonschema.validate(prefix, _schema_items())
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    assert schema_ok is good, prefix
    cfn_ok = re.fullmatch(_cfn_pattern(), prefix) is not None and "\n" not in prefix
    assert cfn_ok is good or prefix == "*", prefix  # '*' is refused by the chart only
    assert re.fullmatch(_cfn_pattern(), f"test/,{prefix}") is not None or not good


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        # what a tag cannot carry but a rescore's kwargs or a crafted message can
        ("k8s_namespace", "scoring\n", "not a valid namespace"),
        ("k8s_cluster", "default\n", "not a valid cluster name"),
        ("model_image", "test/ok:1\n", "not a valid container image"),
        ("k8s_namespace", "kube-system", "'kube-system' is not enabled for cluster 'default'"),
    ],
)
def test_validation_reads_to_the_end_of_every_value(field, value, needle):
    settings = load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/"})
    fine = {"bucket": "data", "k8s_cluster": "default", "k8s_namespace": "scoring"}
    validate(settings, make_job(**fine))  # the job as it is is fine
    job = make_job(**{**fine, field: value})
    with pytest.raises(Rejected, match=re.escape(needle)):
        validate(settings, job)
