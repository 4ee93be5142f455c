"""Rejected rows end to end on the local stack: a model that refuses rows holding
BAD (tests/fakemodel.py, mode refuse) and files with a budget (tag, catalog) or
without one."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from scorefleet.settings import load
from tests.helpers import Outcomes
from tests.helpers.fakemodel import hash_row
from workers.cli.runs import status_view
from workers.localstack.stack import BUCKET

pytestmark = pytest.mark.slow

ROWS = 3000


def rows_with(bad: set[int]) -> list[list[str]]:
    return [[str(i), "BAD" if i in bad else str(i % 7), str(i % 3)] for i in range(1, ROWS + 1)]


def as_csv(rows: list[list[str]]) -> bytes:
    return ("a,b,c\n" + "".join(",".join(r) + "\n" for r in rows)).encode()


def test_refused_rows_are_set_aside_and_the_rest_is_scored(outcomes: Outcomes, stack):
    bad = {100, 2501}
    rows = rows_with(bad)
    key = f"rejects-{uuid.uuid4().hex[:8]}.csv"
    outcomes.put(key, as_csv(rows), {"model_image": "test/refuse:1", "max_rejected_rows": "5"})
    suffix, body, tags = outcomes.wait(key, timeout=90)
    assert suffix == ".scoreout", body.decode()
    assert tags["rows"] == str(ROWS - 2) and tags["rejected_rows"] == "2"
    # every other row scored, in order (the model's answer depends on the row only)
    expect = b"".join(hash_row(r) for i, r in enumerate(rows, 1) if i not in bad)
    assert body == expect
    got_rejected = outcomes.s3.get_object(Bucket=BUCKET, Key=f"out/{key}.rejected")
    assert got_rejected["ContentType"] == "text/csv"
    # its provenance is the .scoreout's (issue 27)
    meta = got_rejected["Metadata"]
    scoreout = outcomes.s3.head_object(Bucket=BUCKET, Key=f"out/{key}.scoreout")["Metadata"]
    assert meta["model-image"] == "test/refuse:1" and meta["model-protocol"] == "sagemaker"
    for field in ("model-image-id", "catalog-entry", "scorefleet-version", "run-id"):
        assert meta[field] == scoreout[field], field
    lines = list(csv.reader(io.StringIO(got_rejected["Body"].read().decode())))
    assert lines[0] == ["scorefleet_row", "a", "b", "c", "scorefleet_message"]
    assert [line[:4] for line in lines[1:]] == [
        ["100", "100", "BAD", "1"],
        ["2501", "2501", "BAD", "2"],
    ]
    assert all("value BAD is not a number" in line[4] for line in lines[1:])
    v = status_view(load(stack.env), outcomes.s3, f"s3://{BUCKET}/in/{key}")
    assert (v.state, v.rows, v.rejected_rows) == ("published", ROWS - 2, 2)
    # scored again without the bad rows: the stale .rejected goes
    outcomes.put(key, as_csv(rows_with(set())), {"model_image": "test/refuse:1"})
    _wait_gone(outcomes, f"out/{key}.rejected")


def _wait_gone(outcomes: Outcomes, key: str, timeout: float = 90) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = outcomes.s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", [])
        if not listed:
            return
        time.sleep(0.3)
    raise AssertionError(f"{key} is still there")


def test_without_a_budget_one_refused_row_fails_the_file_as_before(outcomes: Outcomes):
    key = f"rejects-none-{uuid.uuid4().hex[:8]}.csv"
    outcomes.put(key, as_csv(rows_with({7})), {"model_image": "test/refuse:1"})
    suffix, body, _ = outcomes.wait(key, timeout=90)
    assert suffix == ".error"
    assert "HTTP 400" in body.decode() and "value BAD is not a number" in body.decode()
    assert "Contents" not in outcomes.s3.list_objects_v2(
        Bucket=BUCKET, Prefix=f"out/{key}.rejected"
    )


def test_over_budget_fails_with_the_first_refused_rows(outcomes: Outcomes):
    key = f"rejects-over-{uuid.uuid4().hex[:8]}.csv"
    bad = {10, 20, 1500, 2999}
    outcomes.put(
        key, as_csv(rows_with(bad)), {"model_image": "test/refuse:1", "max_rejected_rows": "2"}
    )
    suffix, body, _tags = outcomes.wait(key, timeout=90)
    text = body.decode()
    assert suffix == ".error", text
    assert "more than this file may lose (max_rejected_rows=2" in text
    assert "data row 10:" in text and "data row 20:" in text
    listed = outcomes.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"out/{key}.").get("Contents", [])
    assert [o["Key"] for o in listed] == [f"out/{key}.error"]  # no .scoreout, no .rejected


def test_the_catalog_gives_an_image_its_budget(outcomes: Outcomes):
    key = f"rejects-catalog-{uuid.uuid4().hex[:8]}.csv"
    outcomes.put(key, as_csv(rows_with({5, 6})), {"model_image": "test/refuse-budget:1"})
    suffix, body, tags = outcomes.wait(key, timeout=90)
    assert suffix == ".scoreout", body.decode()
    assert tags["rejected_rows"] == "2"  # 2 of 3000 rows: within the image's 0.5%


def test_a_bad_budget_tag_is_refused_up_front(outcomes: Outcomes):
    key = f"rejects-tag-{uuid.uuid4().hex[:8]}.csv"
    outcomes.put(
        key, as_csv(rows_with(set())), {"model_image": "test/refuse:1", "max_rejected_rows": "lots"}
    )
    suffix, body, tags = outcomes.wait(key, timeout=60)
    assert suffix == ".error" and tags["error_step"] == "enqueue"
    assert "max_rejected_rows 'lots' is not a row count" in body.decode()


def test_a_parquet_files_refused_rows_are_a_parquet_rejected(outcomes: Outcomes):
    """The .rejected is in the input's format: Parquet in, Parquet .rejected, the
    row's columns with the input's own types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = {42, 1999}
    rows = rows_with(bad)
    table = pa.table(
        {
            "a": pa.array([int(r[0]) for r in rows], pa.int64()),
            "b": pa.array([r[1] for r in rows]),
            "c": pa.array([int(r[2]) for r in rows], pa.int32()),
        }
    )
    data = io.BytesIO()
    pq.write_table(table, data, row_group_size=1000)
    key = f"rejects-{uuid.uuid4().hex[:8]}.parquet"
    outcomes.put(key, data.getvalue(), {"model_image": "test/refuse:1", "max_rejected_rows": "5"})
    suffix, body, tags = outcomes.wait(key, timeout=90)
    assert suffix == ".scoreout", body.decode(errors="replace")
    assert tags["rows"] == str(ROWS - 2) and tags["rejected_rows"] == "2"
    assert pq.read_table(io.BytesIO(body)).num_rows == ROWS - 2
    got_rejected = outcomes.s3.get_object(Bucket=BUCKET, Key=f"out/{key}.rejected")
    raw = got_rejected["Body"].read()
    assert raw[:4] == b"PAR1" and got_rejected["ContentType"] == "application/vnd.apache.parquet"
    rejected = pq.read_table(io.BytesIO(raw))
    assert rejected.column_names == ["scorefleet_row", "a", "b", "c", "scorefleet_message"]
    assert rejected.schema.field("a").type == pa.int64()
    assert rejected.schema.field("c").type == pa.int32()
    got = rejected.to_pydict()
    assert got["scorefleet_row"] == [42, 1999] and got["a"] == [42, 1999]
    assert got["b"] == ["BAD", "BAD"]
    assert all("value BAD is not a number" in m for m in got["scorefleet_message"])
