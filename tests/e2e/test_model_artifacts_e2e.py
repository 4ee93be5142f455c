"""Issue 25: a model that loads its own artifact from S3 at start (seed 001's Lambda
image, seed 003's pattern) on the local stack: the catalog's ``local_aws`` hands it
the emulator's endpoint and the models' own credential (SCOREFLEET_LOCAL_MODEL_AWS,
never the worker's); the handler downloads the model with boto3 at init, under
awslambdaric, and scores the file."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Outcomes
from workers.localstack.stack import BUCKET

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IRIS = (REPO / "examples" / "iris.csv").read_bytes()
IMAGE = "test/iris-lambda-s3:1"


def expected_labels() -> list[str]:
    sys.path.insert(0, str(REPO / "examples" / "iris"))
    from model import build_model

    rows = list(csv.reader(io.StringIO(IRIS.decode())))[1:]
    values = [[float(v) if v else float("nan") for v in r] for r in rows]
    return [str(x) for x in build_model().predict(values)]


def test_a_lambda_handler_loads_its_model_from_s3_with_the_models_own_credentials(
    outcomes: Outcomes, tmp_path: Path
) -> None:
    artifact = tmp_path / "model.joblib"
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "iris" / "train.py"), str(artifact)],
        check=True,
        timeout=120,
    )
    outcomes.s3.upload_file(str(artifact), BUCKET, "models/iris/model.joblib")
    outcomes.put("artifacts/iris.csv", IRIS, {"model_image": IMAGE})
    suffix, body, _ = outcomes.wait("artifacts/iris.csv", timeout=180)
    assert suffix == ".scoreout", body.decode(errors="replace")[:2000]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["label"] for r in rows] == expected_labels()
    # the model's environment held the models' credential and no other (the worker's
    # are never passed): tests/unit/test_local_backend.py, test_local_aws_*


def test_without_its_artifact_the_launch_fails_with_the_handlers_init_error(
    outcomes: Outcomes,
) -> None:
    """The same image, its artifact deleted: the runtime's init error (boto3's 404 at
    import) is in the .error, from the model's log."""
    outcomes.s3.delete_object(Bucket=BUCKET, Key="models/iris/model.joblib")
    outcomes.put("artifacts/missing.csv", IRIS, {"model_image": IMAGE})
    suffix, body, _ = outcomes.wait("artifacts/missing.csv", timeout=180)
    text = body.decode(errors="replace")
    assert suffix == ".error", text[:2000]
    # "with code 1" when this worker started the process; a launch that adopted the
    # process of an earlier delivery of the same step cannot read its exit status
    # (only the parent can): seen once under a loaded full run
    assert re.search(r"the model exited( with code 1)? before it answered", text), text
    assert "404" in text, text
