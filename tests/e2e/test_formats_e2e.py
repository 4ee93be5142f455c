"""Parquet, JSON Lines and CSV with kept columns, end to end on the local stack with
the iris model: tags and catalog settings reach the worker, the output keeps the
input's format (or the one asked for), ids sit beside their own scores."""

from __future__ import annotations

import csv
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.localstack.stack import BUCKET, IRIS_IMAGE

pytestmark = pytest.mark.slow

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_ROWS = [
    (5.1, 3.5, 1.4, 0.2, "setosa"),
    (7.0, 3.2, 4.7, 1.4, "versicolor"),
    (6.3, 3.3, 6.0, 2.5, "virginica"),
]


def iris_table(n: int) -> pa.Table:
    rows = [IRIS_ROWS[i % 3] for i in range(n)]
    cols = {"id": [f"c{i:04d}" for i in range(n)]}
    for j, name in enumerate(FEATURES):
        cols[name] = [r[j] for r in rows]
    return pa.table(cols)


def expected_labels(n: int) -> list[str]:
    return [IRIS_ROWS[i % 3][4] for i in range(n)]


def parquet_bytes(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


KEEP_ID = {"model_image": IRIS_IMAGE, "keep_columns": "id", "drop_columns": "id"}


def test_parquet_in_parquet_out_with_ids(outcomes):
    n = 5000
    outcomes.put("fmt/table.parquet", parquet_bytes(iris_table(n), row_group_size=1000), KEEP_ID)
    suffix, body, tags = outcomes.wait("fmt/table.parquet", timeout=120)
    assert suffix == ".scoreout", body[:2000]
    out = pq.read_table(io.BytesIO(body))
    assert out.column_names == ["id", "label", "probability"]
    assert out.schema.field("probability").type == pa.float64()
    assert out.column("id").to_pylist() == [f"c{i:04d}" for i in range(n)]
    assert out.column("label").to_pylist() == expected_labels(n)
    assert tags["rows"] == str(n)
    head = outcomes.s3.head_object(Bucket=BUCKET, Key="out/fmt/table.parquet.scoreout")
    assert head["ContentType"] == "application/vnd.apache.parquet"


def test_jsonl_gz_in_jsonl_out(outcomes):
    n = 800
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in iris_table(n).to_pylist())
    outcomes.put("fmt/events.ndjson.gz", gzip.compress(lines), KEEP_ID)
    suffix, body, _ = outcomes.wait("fmt/events.ndjson.gz", timeout=120)
    assert suffix == ".scoreout", body[:2000]
    rows = [json.loads(line) for line in body.splitlines()]
    assert [list(r) for r in rows[:1]] == [["id", "label", "probability"]]
    assert [r["id"] for r in rows] == [f"c{i:04d}" for i in range(n)]
    assert [r["label"] for r in rows] == expected_labels(n)
    assert isinstance(rows[0]["probability"], float)


def test_csv_with_model_columns_and_a_kept_id(outcomes):
    n = 300
    data = iris_table(n)
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["id", "note", *FEATURES])
    for r in data.to_pylist():
        w.writerow([r["id"], "a, b", *[r[f] for f in FEATURES]])
    tags = {
        "model_image": IRIS_IMAGE,
        "keep_columns": "note id",
        "model_columns": " ".join(FEATURES),
    }
    outcomes.put("fmt/plain.csv", text.getvalue().encode(), tags)
    suffix, body, _ = outcomes.wait("fmt/plain.csv", timeout=120)
    assert suffix == ".scoreout", body[:2000]
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert rows[0] == ["note", "id", "label", "probability"]
    assert [r[1] for r in rows[1:]] == [f"c{i:04d}" for i in range(n)]
    assert {r[0] for r in rows[1:]} == {"a, b"}
    assert [r[2] for r in rows[1:]] == expected_labels(n)


def test_parquet_in_csv_out_by_tag(outcomes):
    tags = {**KEEP_ID, "output_format": "csv"}
    outcomes.put("fmt/to-csv.parquet", parquet_bytes(iris_table(30)), tags)
    suffix, body, _ = outcomes.wait("fmt/to-csv.parquet", timeout=120)
    assert suffix == ".scoreout", body[:2000]
    assert body.startswith(b"id,label,probability\nc0000,setosa,")
    assert body.count(b"\n") == 31


def test_format_from_content_type_and_content_type_tag(outcomes):
    """No suffix: the object's Content-Type says JSON Lines; a wrong suffix: the
    content_type tag says what the file is."""
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in iris_table(9).to_pylist())
    outcomes.s3.put_object(
        Bucket=BUCKET,
        Key="in/fmt/typed-object",
        Body=lines,
        ContentType="application/x-ndjson",
        Tagging=f"model_image={IRIS_IMAGE}&drop_columns=id",
    )
    outcomes.put(
        "fmt/misnamed.csv",
        lines,
        {"model_image": IRIS_IMAGE, "content_type": "jsonl", "drop_columns": "id"},
    )
    for key in ("fmt/typed-object", "fmt/misnamed.csv"):
        suffix, body, _ = outcomes.wait(key, timeout=120)
        assert suffix == ".scoreout", body[:2000]
        assert [json.loads(x)["label"] for x in body.splitlines()] == expected_labels(9)


def test_empty_parquet_starts_no_model(outcomes):
    outcomes.put("fmt/empty.parquet", parquet_bytes(iris_table(0)), KEEP_ID)
    suffix, body, tags = outcomes.wait("fmt/empty.parquet", timeout=120)
    assert suffix == ".scoreout", body[:2000]
    out = pq.read_table(io.BytesIO(body))
    assert out.num_rows == 0
    assert out.column_names == ["id"]
    assert tags["rows"] == "0"
    head = outcomes.s3.head_object(Bucket=BUCKET, Key="out/fmt/empty.parquet.scoreout")
    assert "model-start-ms" not in head["Metadata"]  # no model was launched


def test_catalog_settings_and_a_tag_that_overrides_them(outcomes):
    """The catalog keeps id, hides it from the model and writes JSON Lines; a file's
    keep_columns tag replaces the catalog's list (its drop_columns still applies)."""
    body = b"id,a,b\n7,x,1\n8,y,2\n"
    outcomes.put("fmt/catalog.csv", body, {"model_image": "test/hash-keep:1"})
    outcomes.put(
        "fmt/catalog-tag.csv", body, {"model_image": "test/hash-keep:1", "keep_columns": "b id"}
    )
    suffix, out, _ = outcomes.wait("fmt/catalog.csv", timeout=120)
    assert suffix == ".scoreout", out[:2000]
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["id"] for r in rows] == ["7", "8"]
    assert [r["score_1"] for r in rows] == [2, 2]  # the model saw a and b only
    suffix, out, _ = outcomes.wait("fmt/catalog-tag.csv", timeout=120)
    assert suffix == ".scoreout", out[:2000]
    assert list(json.loads(out.splitlines()[0])) == ["b", "id", "score_0", "score_1"]
