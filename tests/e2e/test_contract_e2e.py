"""The model's input contract end to end on the local stack, for every protocol family
(issue 27): a file missing a required column, one with a column of the wrong type, one
that fits. The example servers (examples/catalog.json) declare their contracts: the
SageMaker iris server an MLflow signature, the JSON, Lambda and SAS ones their columns;
MLServer publishes its own (v2 metadata, GET /v2/models/iris).

* declared contract: the first two get their .error at launch, and no model process
  was started for them (the local backend's log of model starts);
* the model's metadata: the first two get their .error from the score step once
  MLServer is ready, and MLServer's own access log (in the .error's model log lines)
  shows its metadata read and no inference request;
* the third is scored;
* ``scorefleet check`` on each of them, after: exit 0 for the third, and for the
  others the very message of the file's .error (for v2 from the metadata a worker kept);
* every outcome carries its provenance, which ``scorefleet status`` shows.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.helpers import REPO, Outcomes, run_cli
from tests.helpers.checks import as_written, error_line, in_process
from tests.helpers.servers import venvs
from workers.localstack.stack import BUCKET

pytestmark = pytest.mark.slow

IRIS = (REPO / "examples" / "iris.csv").read_bytes()
MISSING = b"sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n4.9,3.0,1.4\n"
# row 3's petal_length is text
WRONG_TYPE = IRIS.replace(b"\n4.7,3.2,1.3,0.2\n", b"\n4.7,3.2,tall,0.2\n", 1)
FILES = {"missing": MISSING, "wrong-type": WRONG_TYPE, "fits": IRIS}
#: protocol family -> (image, where its contract is checked)
FAMILIES = {
    "sagemaker": ("scorefleet-examples/iris-sagemaker:1", "launch"),
    "json": ("scorefleet-examples/iris-flask:1", "launch"),
    "lambda": ("scorefleet-examples/iris-lambda:1", "launch"),
    "sas-executions": ("scorefleet-examples/iris-sas:1", "launch"),
    "v2": ("scorefleet-examples/iris-v2:1", "score"),
}
CASES = [(family, kind) for family in FAMILIES for kind in FILES]
#: what the .error says, per kind of file
NEEDLES = {
    "missing": "missing:  petal_width (the file has no such column)",
    "wrong-type": "mistyped: petal_length: 'tall' on data row 3 is not a number",
}
V2_NEEDLES = {
    "missing": "count:    the model takes 4 column(s), the file gives 3",
    "wrong-type": NEEDLES["wrong-type"],
}


def key_of(family: str, kind: str) -> str:
    return f"contract/{family}-{kind}.csv"


@pytest.fixture(scope="module")
def dropped(outcomes: Outcomes) -> None:
    try:
        venvs.ensure("mlserver")
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            raise  # never a skip in CI
        pytest.skip(f"MLServer unavailable: {exc}")
    for family, kind in CASES:
        outcomes.put(key_of(family, kind), FILES[kind], {"model_image": FAMILIES[family][0]})


def models_started(stack, key: str) -> int:
    log = (stack.state_dir / "logs" / "worker0.log").read_text()
    return sum(1 for line in log.splitlines() if f"/in/{key}]" in line and "started model" in line)


@pytest.mark.parametrize(("family", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_each_family_stops_what_does_not_fit(outcomes, dropped, stack, family, kind):
    key = key_of(family, kind)
    image, where = FAMILIES[family]
    suffix, body, tags = outcomes.wait(key, timeout=420)
    text = body.decode()
    meta = outcomes.s3.head_object(Bucket=BUCKET, Key=f"out/{key}{suffix}")["Metadata"]
    assert meta["model-image"] == image and meta["model-protocol"] == family
    assert meta["catalog-entry"].startswith("sha256:") and meta["scorefleet-version"]
    if kind == "fits":
        assert suffix == ".scoreout", text
        assert tags["rows"] == "150"
        assert meta["model-image-id"] == meta["catalog-entry"]  # the local backend
        return
    assert suffix == ".error", text
    assert tags["error_step"] == where, text
    assert "ContractMismatch: the file's columns do not fit the model's inputs" in text
    assert (V2_NEEDLES if family == "v2" else NEEDLES)[kind] in text, text
    assert "(after" not in text  # never retried
    if where == "launch":
        assert models_started(stack, key) == 0, "a model was started for it"
        assert "model-image-id" not in meta  # none ran
        assert "Last lines the model wrote" not in text
    else:
        # MLServer's access log: its metadata was read, no mini-batch was sent
        assert 'GET /v2/models/iris HTTP/1.1" 200' in text, text
        assert "/infer" not in text, text
        assert "GET /v2/models/iris" in error_line(text)
        assert meta["model-image-id"] == meta["catalog-entry"]


@pytest.fixture(scope="module")
def checker(stack) -> Any:
    with in_process(stack) as check:
        yield check


@pytest.mark.parametrize(("family", "kind"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_check_says_what_the_error_says(outcomes, dropped, checker, family, kind):
    """The check in this process (what the command runs: one Python start per file
    would cost 15 s); the command itself on one file below."""
    key = key_of(family, kind)
    _, body, _ = outcomes.wait(key, timeout=420)
    p = checker(f"s3://{BUCKET}/in/{key}")
    if kind == "fits":
        assert p.problem is None, p.problem
        return
    assert p.problem is not None and as_written(p.problem.line) == error_line(body.decode()), (
        p.to_json()
    )
    assert p.problem.step == FAMILIES[family][1], p.to_json()


def test_the_check_command_says_it_too(outcomes, dropped, stack):
    """``scorefleet check --json`` as a user runs it, on the v2 file missing a column:
    the model's metadata as the worker kept it, the .error's message, exit status 1."""
    key = key_of("v2", "missing")
    _, body, _ = outcomes.wait(key, timeout=420)
    uri = f"s3://{BUCKET}/in/{key}"
    res = run_cli(["workers.cli", "check", uri, "--json"], {**os.environ, **stack.env}, timeout=180)
    said = f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    report = json.loads(res.stdout) if res.stdout.startswith("{") else {}
    assert res.returncode == 1 and report.get("problem"), said
    problem = report["problem"]
    assert as_written(f"{problem['kind']}: {problem['message']}") == error_line(body.decode()), said
    assert problem["step"] == "score", said
    assert any("as run sf-" in note for note in report["notes"]), said  # whose metadata


def test_status_shows_the_provenance(outcomes, dropped, stack):
    key = key_of("sagemaker", "fits")
    outcomes.wait(key, timeout=420)
    res = run_cli(["workers.cli", "status", f"s3://{BUCKET}/in/{key}"], {**os.environ, **stack.env})
    assert res.returncode == 0, res.stderr
    meta = outcomes.s3.head_object(Bucket=BUCKET, Key=f"out/{key}.scoreout")["Metadata"]
    for label, field in (
        ("image id", "model-image-id"),
        ("protocol", "model-protocol"),
        ("catalog", "catalog-entry"),
        ("scorefleet", "scorefleet-version"),
    ):
        assert f"{label:11} {meta[field]}" in res.stdout, res.stdout
