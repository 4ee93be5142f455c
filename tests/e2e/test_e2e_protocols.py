"""Every model protocol end to end on the local stack (moto, the Lambda bridge, a
worker, model processes): a success, bad input answered 4xx, a server that dies.

The successes run real servers of each kind: MLServer (v2) and KServe's
ModelServer (json, v1 :predict) from their own virtualenvs (tests/helpers/servers/venvs.py),
a team's Flask app (json), a Lambda handler behind the Runtime-Interface-compatible
server (lambda), the SAS-style executions server (sas-executions), the iris example
(sagemaker). Under CI=true a server that cannot be installed fails the test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import Outcomes
from tests.helpers.servers import venvs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IRIS = (REPO / "examples" / "iris.csv").read_bytes()
# row 3's petal_length is text: every iris server refuses it (4xx), or the client does
BAD_IRIS = IRIS.replace(b"\n4.7,3.2,1.3,0.2\n", b"\n4.7,3.2,tall,0.2\n", 1)
PROTOCOLS = ("sagemaker", "v2", "json", "lambda", "sas-executions")

#: key -> (image, expected header of the .scoreout)
SUCCESSES = {
    "proto/sagemaker-iris.csv": ("scorefleet-examples/iris-sagemaker:1", "label,probability"),
    "proto/json-flask-iris.csv": ("scorefleet-examples/iris-flask:1", "label,probability"),
    "proto/lambda-iris.csv": ("scorefleet-examples/iris-lambda:1", "label,probability"),
    "proto/sas-iris.csv": ("scorefleet-examples/iris-sas:1", "I_label,P_probability"),
    "proto/v2-mlserver-iris.csv": (
        "scorefleet-examples/iris-v2:1",
        "predict_0,predict_proba_0,predict_proba_1,predict_proba_2",
    ),
    "proto/json-kserve-iris.csv": (
        "scorefleet-examples/iris-kserve:1",
        "p_setosa,p_versicolor,p_virginica",
    ),
}
#: key -> (image, body, what the .error must say). The example servers declare their
#: contracts (a file that does not fit them stops before they see it:
#: tests/e2e/test_contract_e2e.py): a refusal is a fake server's of each protocol, and
#: KServe's (its entry declares none)
REFUSALS = {
    "proto/sagemaker-bad.csv": ("test/refuse-sagemaker:1", IRIS, "with HTTP 400: "),
    "proto/json-flask-bad.csv": ("test/refuse-json:1", IRIS, "with HTTP 400: "),
    "proto/json-kserve-bad.csv": ("scorefleet-examples/iris-kserve:1", BAD_IRIS, "with HTTP 400: "),
    "proto/lambda-bad.csv": ("test/refuse-lambda:1", IRIS, "expected a number"),
    "proto/sas-bad.csv": ("test/refuse-sas-executions:1", IRIS, "expected a number"),
    "proto/v2-refuse.csv": ("test/refuse-v2:1", IRIS, "with HTTP 400: "),
}
DEATHS = {f"proto/die-{p}.csv": f"test/die-{p}:1" for p in PROTOCOLS}
#: iris as Parquet and as JSON Lines, with an id the model is not sent and every
#: output row keeps: each protocol is sent what it takes (issue 14)
KEEP_ID = {"keep_columns": "id", "drop_columns": "id"}
TYPED = {
    f"{key.removesuffix('.csv')}.{ext}": (image, header)
    for key, (image, header) in SUCCESSES.items()
    for ext in ("parquet", "jsonl")
}


def iris_records() -> list[dict[str, object]]:
    rows = list(csv.DictReader(io.StringIO(IRIS.decode())))
    # an empty cell (iris.csv has some) is a null
    return [
        {"id": i, **{k: float(v) if v else None for k, v in r.items()}}
        for i, r in enumerate(rows, 1)
    ]


def typed_body(ext: str) -> bytes:
    records = iris_records()
    if ext == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records).encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), out, row_group_size=64)
    return out.getvalue()


def typed_rows(ext: str, body: bytes) -> list[dict[str, object]]:
    if ext == "jsonl":
        return [json.loads(line) for line in body.decode().splitlines()]
    import pyarrow.parquet as pq

    rows: list[dict[str, object]] = pq.read_table(io.BytesIO(body)).to_pylist()
    return rows


def expected_labels() -> list[str]:
    sys.path.insert(0, str(REPO / "examples" / "iris"))
    from model import build_model

    rows = list(csv.reader(io.StringIO(IRIS.decode())))[1:]
    values = [[float(v) if v else float("nan") for v in r] for r in rows]
    return [str(x) for x in build_model().predict(values)]


@pytest.fixture(scope="module")
def third_party() -> None:
    """MLServer's and KServe's virtualenvs, created once (in parallel) if missing."""
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(venvs.ensure, venvs.NAMES))
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            raise  # never a skip in CI
        pytest.skip(f"third-party model servers unavailable: {exc}")


@pytest.fixture(scope="module")
def dropped(outcomes: Outcomes, third_party: None) -> None:
    for key, (image, _) in SUCCESSES.items():
        outcomes.put(key, IRIS, {"model_image": image})
    for key, (image, body, _) in REFUSALS.items():
        outcomes.put(key, body, {"model_image": image})
    for key, image in DEATHS.items():
        outcomes.put(key, IRIS, {"model_image": image})
    for key, (image, _) in TYPED.items():
        outcomes.put(key, typed_body(key.rsplit(".", 1)[1]), {"model_image": image, **KEEP_ID})


@pytest.mark.parametrize("key", list(SUCCESSES))
def test_each_protocol_scores_iris(outcomes: Outcomes, dropped: None, key: str) -> None:
    image, header = SUCCESSES[key]
    suffix, body, tags = outcomes.wait(key, timeout=420)
    text = body.decode()
    assert suffix == ".scoreout", text
    lines = text.splitlines()
    assert lines[0] == header and len(lines) == 151, lines[:3]
    assert tags["model_image"] == image and tags["rows"] == "150"
    check_labels(header, list(csv.reader(lines[1:])))


def check_labels(header: str, rows: list[list[str]]) -> None:
    if header.startswith(("label", "I_label", "predict_0")):
        assert [r[0] for r in rows] == expected_labels()
    else:  # probabilities per class: the most likely class is the model's label
        names = ["setosa", "versicolor", "virginica"]
        best = [names[max(range(3), key=lambda k: float(r[k]))] for r in rows]
        assert best == expected_labels()


@pytest.mark.parametrize("key", list(TYPED))
def test_each_protocol_scores_parquet_and_json_lines_keeping_an_id(
    outcomes: Outcomes, dropped: None, key: str
) -> None:
    """Parquet in -> Parquet out, JSON Lines in -> JSON Lines out, whatever the
    protocol takes (CSV, v2 tensors, JSON records): the id first, then the answer."""
    image, header = TYPED[key]
    ext = key.rsplit(".", 1)[1]
    suffix, body, tags = outcomes.wait(key, timeout=420)
    assert suffix == ".scoreout", body.decode(errors="replace")
    assert tags["model_image"] == image and tags["rows"] == "150"
    if ext == "parquet":
        assert body[:4] == b"PAR1"
    rows = typed_rows(ext, body)
    assert len(rows) == 150 and list(rows[0]) == ["id", *header.split(",")], list(rows[0])
    assert [r["id"] for r in rows] == list(range(1, 151))
    check_labels(header, [[str(v) for k, v in r.items() if k != "id"] for r in rows])


@pytest.mark.parametrize("key", list(REFUSALS))
def test_bad_input_answered_4xx_is_an_error(outcomes: Outcomes, dropped: None, key: str) -> None:
    _, _, needle = REFUSALS[key]
    suffix, body, tags = outcomes.wait(key, timeout=420)
    text = body.decode()
    assert suffix == ".error", text
    assert tags["error_step"] == "score" and "ModelError" in text, text
    assert needle in text, text
    assert "celery -A workers.app call tasks.rescore" in text
    assert outcomes.versions(key + ".scoreout") == 0


@pytest.mark.parametrize("key", list(DEATHS))
def test_a_server_that_dies_is_an_error_with_its_log(
    outcomes: Outcomes, dropped: None, key: str
) -> None:
    suffix, body, tags = outcomes.wait(key, timeout=180)
    text = body.decode()
    assert suffix == ".error", text
    assert tags["error_step"] == "score", text
    assert "ModelUnavailable" in text, text
    assert "loading weights failed: out of memory" in text  # the model's own log line
    assert outcomes.versions(key + ".scoreout") == 0
