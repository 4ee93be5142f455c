"""``scorefleet check`` and ``submit --check`` against moto: a local file or an object in
S3, judged by the launch's own preflight (workers/scoring/preview.py) without a model,
with an exit status and the message the file's .error would carry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import base_env
from workers.cli.commands import main
from workers.localstack.stack import emulator_client
from workers.scoring.contract import Column, Contract, seen

IRIS = "sepal_length,sepal_width,petal_length,petal_width"
MODEL = {
    "command": "{python} serve.py --port {port}",
    "inputs": {
        "columns": [{"name": n, "type": "number"} for n in IRIS.split(",")],
        "closed": True,
    },
}
CATALOG = {"reg/iris:1": MODEL, "reg/tensor:1": {"protocol": "v2", "v2": {"model_name": "m"}}}


@pytest.fixture
def env(moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = base_env(
        moto_endpoint,
        bucket,
        SCOREFLEET_ALLOWED_IMAGE_PREFIXES="reg/",
        SCOREFLEET_DEFAULT_MODEL_IMAGE="reg/iris:1",
        SCOREFLEET_MODEL_CATALOG=json.dumps(CATALOG),
        SCOREFLEET_MAX_PAYLOAD_MB="0.05",
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def check(*args: str) -> tuple[int, str, Any]:
    out = CliRunner().invoke(main, ["check", *args, "--json"])
    assert out.exception is None or isinstance(out.exception, SystemExit), out.output
    return out.exit_code, out.output, json.loads(out.output)


def test_a_local_file_that_fits(env, tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text(f"{IRIS}\n5.1,3.5,1.4,0.2\n4.9,,1.4,0.2\n")
    code, _, p = check(str(path))
    assert code == 0 and p["problem"] is None
    assert p["source"] == f"s3://{env['SCOREFLEET_INPUT_URI'][5:]}iris.csv"
    assert p["image"] == "reg/iris:1" and p["allowed"] and p["protocol"] == "sagemaker"
    assert p["catalog_entry"].startswith("sha256:") and p["format"] == "CSV"
    assert p["columns"] == IRIS.split(",") and p["model_columns"] == IRIS.split(",")
    assert p["rows"] == 2 and p["rows_exact"] and p["batches"] == 1
    assert "the model catalog's inputs for reg/iris:1" in p["contract"]
    assert p["output"].endswith("/out/iris.csv.scoreout")
    text = CliRunner().invoke(main, ["check", str(path)]).output
    assert "would be scored" in text and "contract       the model catalog" in text


def test_a_missing_column_fails_with_the_errors_message(env, bucket, tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("sepal_length,sepal_width,petal_length,customer\n5.1,abc,1.4,7\n")
    code, _, p = check(str(path))
    assert code == 1
    problem = p["problem"]
    assert problem["step"] == "launch" and problem["kind"] == "ContractMismatch"
    for needle in (
        "missing:  petal_width",
        "extra:    customer",
        "mistyped: sepal_width: 'abc' on data row 1 is not a number",
        "drop_columns=customer",
    ):
        assert needle in problem["message"], problem["message"]
    text = CliRunner().invoke(main, ["check", str(path)]).output
    assert "WOULD FAIL: fails at launch (no model started)" in text
    assert "ContractMismatch: the file's columns do not fit" in text
    # the same file once uploaded: the same verdict, word for word
    s3 = emulator_client("s3", env["AWS_ENDPOINT_URL"])
    s3.upload_file(str(path), bucket, "in/short.csv")
    code, _, uploaded = check(f"s3://{bucket}/in/short.csv")
    assert code == 1 and uploaded["problem"] == problem
    assert {**uploaded, "size": p["size"]} == p


def test_tags_as_options_and_an_object_in_s3_with_its_own_tags(env, bucket):
    s3 = emulator_client("s3", env["AWS_ENDPOINT_URL"])
    body = f"id,{IRIS}\n1,5.1,3.5,1.4,0.2\n".encode()
    s3.put_object(Bucket=bucket, Key="in/x.csv", Body=body, Tagging="drop_columns=id")
    code, _, p = check(f"s3://{bucket}/in/x.csv")
    assert code == 0 and p["model_columns"] == IRIS.split(","), p
    # an option overrides the object's own tag: the id goes to the model (closed: refused)
    code, _, p = check(f"s3://{bucket}/in/x.csv", "--drop-columns", "petal_width")
    assert code == 1 and "extra:    id" in p["problem"]["message"]
    code, _, p = check(f"s3://{bucket}/in/x.csv", "--model-image", "evil/miner:1")
    assert code == 1 and p["allowed"] is False
    assert p["problem"]["step"] == "enqueue" and p["problem"]["kind"] == "Rejected"
    missing = CliRunner().invoke(main, ["check", f"s3://{bucket}/in/none.csv"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_full_reads_what_the_first_bytes_do_not_show(env, tmp_path):
    rows = "".join(f"{i}.0,3.5,1.4,0.2\n" for i in range(6000))
    path = tmp_path / "long.csv"
    path.write_text(f"{IRIS}\n{rows}5.0,3.5,1.4\n")  # a short row after the first 64 KiB
    code, _, p = check(str(path))
    assert code == 0 and not p["rows_exact"] and p["rows"] > 1000, p
    code, _, p = check(str(path), "--full")
    assert code == 1 and p["problem"]["step"] == "score"
    assert "data row 6001 (line 6002) has 3 fields, the header has 4" in p["problem"]["message"]
    ok = tmp_path / "ok.csv"
    ok.write_text(f"{IRIS}\n{rows}")
    code, _, p = check(str(ok), "--full")
    assert code == 0 and p["rows"] == 6000 and p["rows_exact"] and p["batches"] > 1


def test_a_contract_the_model_reported_is_checked_too(env, tmp_path):
    """The v2 protocol's metadata is read by the score step, which keeps it under the
    state prefix: a later check knows it (and says whose it is)."""
    from scorefleet.settings import load

    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n")
    code, _, p = check(str(path), "--model-image", "reg/tensor:1")
    assert code == 0 and any("no worker has reported it yet" in n for n in p["notes"])
    reported = Contract(
        (Column("", "number"),) * 4,
        closed=True,
        positional=True,
        source="the model's own metadata, GET /v2/models/m",
    )
    s3 = emulator_client("s3", env["AWS_ENDPOINT_URL"])
    assert seen.remember(s3, load(), "reg/tensor:1", reported, "sf-00000000000000000042")
    assert not seen.remember(s3, load(), "reg/tensor:1", reported, "sf-00000000000000000042")
    code, _, p = check(str(path), "--model-image", "reg/tensor:1")
    assert code == 1 and p["problem"]["step"] == "score"
    assert "the model's own metadata, GET /v2/models/m" in p["problem"]["message"]
    assert any("sf-00000000000000000042" in n for n in p["notes"])


def test_submit_check_uploads_nothing_that_would_fail(env, bucket, tmp_path):
    s3 = emulator_client("s3", env["AWS_ENDPOINT_URL"])
    bad = tmp_path / "bad.csv"
    bad.write_text("sepal_length\n5.1\n")
    out = CliRunner().invoke(main, ["submit", str(bad), "--check"])
    assert out.exit_code == 1 and "not uploaded" in out.output, out.output
    assert "missing:  sepal_width" in out.output
    assert s3.list_objects_v2(Bucket=bucket, Prefix="in/").get("KeyCount") == 0
    good = tmp_path / "good.csv"
    good.write_text(f"{IRIS}\n5.1,3.5,1.4,0.2\n")
    out = CliRunner().invoke(main, ["submit", str(good), "--check"])
    assert out.exit_code == 0, out.output
    assert "it would be scored" in out.output
    assert s3.list_objects_v2(Bucket=bucket, Prefix="in/").get("KeyCount") == 1
