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


# -------------------------------------------------------- images by digest only
DIGEST = "sha256:" + "0123456789abcdef" * 4
ECR12 = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        (f"test/ok@{DIGEST}", True),
        (f"test/ok:1@{DIGEST}", True),  # the tag is a comment: the runtime pulls the digest
        (f"localhost:5000/team/m@{DIGEST}", True),
        ("test/ok:1", False),
        ("test/ok", False),  # :latest
        (f"test/ok@{DIGEST[:-1]}", False),  # 63 hex
        (f"test/ok@{DIGEST.upper()}", False),  # a digest is lowercase hex
        (f"test/ok@sha512:{'a' * 128}", False),  # not the algorithm registries name images by
        (f"test/ok@{DIGEST}\n", False),
        (f"test/ok@{DIGEST}:1", False),
    ],
)
def test_a_pinned_image_names_its_bytes(image, pinned):
    assert images.is_pinned(image) is pinned


def _digest_only(**extra: str):
    return load(
        {
            **BASE,
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": f"test/,{ECR12}/models/",
            "SCOREFLEET_REQUIRE_IMAGE_DIGEST": "true",
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("image", "how"),
    [
        ("test/ok:1", "`crane digest test/ok:1`"),
        ("test/ok", "`crane digest test/ok:latest`"),
        (
            f"{ECR12}/models/iris:2.1",
            "`aws ecr describe-images --region eu-west-1 --registry-id 123456789012 "
            "--repository-name models/iris --image-ids imageTag=2.1 "
            "--query 'imageDetails[0].imageDigest' --output text`",
        ),
        (f"{ECR12}/models/iris", "--image-ids imageTag=latest"),
    ],
)
def test_with_digests_required_a_tag_is_refused_saying_how_to_find_its_digest(image, how):
    fine = {"bucket": "data", "k8s_cluster": "default", "k8s_namespace": "scoring"}
    with pytest.raises(Rejected) as err:
        validate(_digest_only(), make_job(**fine, model_image=image))
    text = str(err.value)
    assert "is not pinned by digest" in text and "SCOREFLEET_REQUIRE_IMAGE_DIGEST" in text
    assert how in text, text
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    assert f"model_image={repository}@sha256:<64 hex>" in text


def test_with_digests_required_a_pinned_image_passes_and_by_default_a_tag_does():
    fine = {"bucket": "data", "k8s_cluster": "default", "k8s_namespace": "scoring"}
    validate(_digest_only(), make_job(**fine, model_image=f"test/ok@{DIGEST}"))
    validate(_digest_only(), make_job(**fine, model_image=f"test/ok:1@{DIGEST}"))
    settings = load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/"})
    assert settings.models.require_digest is False
    validate(settings, make_job(**fine, model_image="test/ok:1"))
    # the allowlist still applies to a pinned image
    with pytest.raises(Rejected, match="not allowed here"):
        validate(_digest_only(), make_job(**fine, model_image=f"evil/miner@{DIGEST}"))


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            {"SCOREFLEET_DEFAULT_MODEL_IMAGE": "test/ok:1"},
            "SCOREFLEET_DEFAULT_MODEL_IMAGE='test/ok:1' is not pinned by digest, and "
            "SCOREFLEET_REQUIRE_IMAGE_DIGEST is on",
        ),
        ({"SCOREFLEET_REQUIRE_IMAGE_DIGEST": "maybe"}, "SCOREFLEET_REQUIRE_IMAGE_DIGEST='maybe'"),
    ],
)
def test_digests_required_stop_start_up_on_a_tagged_default_image(extra, needle):
    with pytest.raises(ConfigError) as err:
        _digest_only(**extra)
    (problem,) = err.value.problems
    assert problem.startswith(needle), problem
    _digest_only(SCOREFLEET_DEFAULT_MODEL_IMAGE=f"test/ok@{DIGEST}")  # pinned: fine
