"""Input and output formats (workers/scoring/formats/): each format read and written in
process, with and without kept columns, through the real scoring loop; bad input
refused with the message a user needs. The same paths on the local stack:
tests/e2e/test_formats_e2e.py and the bad-input corpus."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorefleet.errors import BadInput
from workers.scoring.batches import Batch, Scores
from workers.scoring.engine import score_stream
from workers.scoring.formats import (
    FORMATS,
    Columns,
    Format,
    ReadLimits,
    ranged_reader,
    stream_reader,
)
from workers.scoring.formats.base import csv_bytes
from workers.scoring.formats.options import check_catalog_entry, resolve, split_names
from workers.scoring.formats.select import plan

BIG = ReadLimits(max_bytes=1 << 20, max_group_bytes=1 << 30)

CSV, JSONL, PARQUET = FORMATS["csv"], FORMATS["jsonl"], FORMATS["parquet"]


# ------------------------------------------------------------------ a model
def row_hash(fields: list[str]) -> str:
    return "h" + hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:10]


def hash_model(batch: Batch) -> Scores:
    """Like tests/fakemodel.py's hash mode: one answer per CSV record it is sent,
    ``<hash of its fields>,<field count>``: the same whatever the batching."""
    records = list(csv.reader(io.StringIO(batch.as_csv(header=False).decode(), newline="")))
    out = "".join(f"{row_hash(r)},{len(r)}\n" for r in records)
    return Scores(rows=len(records), csv=out.encode(), header=("hash", "fields"))


def expected_hashes(model_table: pa.Table) -> list[str]:
    text = csv_bytes(model_table).decode()
    return [row_hash(r) for r in csv.reader(io.StringIO(text, newline=""))]


# ------------------------------------------------------------------ files
def table_of(n: int) -> pa.Table:
    return pa.table(
        {
            "id": [f"id-{i:05d}" for i in range(n)],
            "x": [i * 0.25 for i in range(n)],
            "k": [i % 7 for i in range(n)],
            "name": [f"n,{i}" if i % 5 == 0 else f"n{i}" for i in range(n)],
        }
    )


def as_file(table: pa.Table, fmt: Format, row_group: int = 1000) -> bytes:
    if fmt is CSV:
        return csv_bytes(table, header=True)
    if fmt is JSONL:
        return b"".join(json.dumps(r).encode() + b"\n" for r in table.to_pylist())
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group)
    return buf.getvalue()


def read_output(data: bytes, fmt: Format) -> list[dict[str, Any]]:
    if fmt is CSV:
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    if fmt is JSONL:
        return [json.loads(line) for line in data.splitlines()]
    return pq.read_table(io.BytesIO(data)).to_pylist()


def reader_for(data: bytes, fmt: Format, columns: Columns, lim: ReadLimits = BIG) -> Any:
    if fmt.ranged is not None:  # read by ranges (Parquet): from a seekable file
        return ranged_reader(fmt, io.BytesIO(data), columns, lim)
    return stream_reader(fmt, [data[i : i + 4096] for i in range(0, len(data), 4096)], columns, lim)


def score_file(
    data: bytes, fmt: Format, columns: Columns, out: Format, lim: ReadLimits = BIG, in_flight=3
) -> tuple[list[dict[str, Any]], int, bytes]:
    sink = io.BytesIO()
    stats = score_stream(
        reader_for(data, fmt, columns, lim), hash_model, sink, out, max_in_flight=in_flight
    )
    return read_output(sink.getvalue(), out), stats.batches, sink.getvalue()


# ------------------------------------------------------------------ round trips
CHOICES = {
    "no join": (Columns(), ()),
    "keep some": (Columns(keep=("id",), drop=("id",)), ("id",)),
    "keep all": (Columns(keep=("*",)), ("id", "x", "k", "name")),
    "model_columns": (Columns(keep=("id", "name"), model=("x", "k")), ("id", "name")),
}


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
@pytest.mark.parametrize("choice", list(CHOICES))
def test_round_trip(fmt, choice):
    """Each format in, the same format out, for each column choice: output row i is
    input row i's kept values beside the model's answer for row i."""
    columns, kept = CHOICES[choice]
    table = table_of(3000)
    rows, batches, _ = score_file(
        as_file(table, fmt), fmt, columns, fmt, ReadLimits(10_000, 1 << 30)
    )
    assert batches >= 3  # several mini-batches, so order across them is tested
    p = plan(columns, table.column_names)
    want = expected_hashes(table.select(list(p.model)))
    assert [r["hash"] for r in rows] == want
    assert [str(r["fields"]) for r in rows] == [str(len(p.model))] * len(want)
    assert list(rows[0]) == [*kept, "hash", "fields"]  # the documented order
    source = table.to_pylist()
    for name in kept:
        got = [r[name] for r in rows]
        if fmt is CSV:  # CSV keeps the text as written
            assert got == [
                str(s[name]) if not isinstance(s[name], float) else got[i]
                for i, s in enumerate(source)
            ]
        else:
            assert got == [s[name] for s in source]


@pytest.mark.parametrize("src", list(FORMATS.values()), ids=lambda f: f.name)
@pytest.mark.parametrize("out", list(FORMATS.values()), ids=lambda f: f.name)
def test_output_format_can_differ(src, out):
    table = table_of(500)
    rows, _, _ = score_file(as_file(table, src), src, Columns(keep=("id",)), out)
    assert [r["id"] for r in rows] == table.column("id").to_pylist()
    assert len({r["hash"] for r in rows}) == 500


def test_parquet_output_is_typed():
    table = table_of(100)
    _, _, data = score_file(as_file(table, PARQUET), PARQUET, Columns(keep=("*",)), PARQUET)
    schema = pq.read_schema(io.BytesIO(data))
    assert schema.field("x").type == pa.float64()
    assert schema.field("k").type == pa.int64()
    assert schema.field("fields").type == pa.int64()


def test_csv_fast_path_passes_bytes_through():
    """No column choice: the model gets the file's own lines and the output is the
    model's bytes, nothing re-encoded (the CSV fast path)."""
    data = b"a,b\n007,1.50\n008,2.0\n"
    seen: list[bytes] = []

    def model(batch: Batch) -> Scores:
        seen.append(batch.as_csv(header=True))
        assert batch.table is None
        return Scores(rows=batch.rows, csv=b"x\n" * batch.rows, csv_header=b"score\n")

    sink = io.BytesIO()
    score_stream(reader_for(data, CSV, Columns()), model, sink, CSV, max_in_flight=1)
    assert seen == [data]
    assert sink.getvalue() == b"score\nx\nx\n"


def test_kept_csv_values_are_the_files_text():
    data = b'id,a\n007,"1,5"\n"x ""y""",2\n'
    rows, _, raw = score_file(data, CSV, Columns(keep=("id", "a"), model=("a",)), CSV)
    assert [r["id"] for r in rows] == ["007", 'x "y"']
    assert [r["a"] for r in rows] == ["1,5", "2"]
    assert raw.startswith(b"id,a,hash,fields\n007,")


def test_gzip_jsonl_through_decompression():
    from workers.scoring.formats.compression import Limits, decompress

    table = table_of(200)
    body = gzip.compress(as_file(table, JSONL))
    reader = stream_reader(
        JSONL, decompress([body], Limits(1 << 30, 1000)), Columns(keep=("id",)), BIG
    )
    sink = io.BytesIO()
    score_stream(reader, hash_model, sink, JSONL, max_in_flight=2)
    assert [r["id"] for r in read_output(sink.getvalue(), JSONL)] == table.column("id").to_pylist()


# ------------------------------------------------------------------ property
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 400),
    fmt=st.sampled_from(list(FORMATS.values())),
    out=st.sampled_from(list(FORMATS.values())),
    max_bytes=st.integers(150, 5000),
    row_group=st.integers(1, 300),
    in_flight=st.integers(1, 5),
    seed=st.integers(0, 10**6),
)
def test_output_row_i_belongs_to_input_row_i(n, fmt, out, max_bytes, row_group, in_flight, seed):
    import random

    rnd = random.Random(seed)
    table = pa.table(
        {
            "id": list(range(n)),
            "v": [rnd.choice([rnd.random(), rnd.randint(-5, 5) * 1.0, None]) for _ in range(n)],
            "s": [rnd.choice(["a", "b,c", 'q"', "é", ""]) for _ in range(n)],
        }
    )
    data = as_file(table, fmt, row_group)
    rows, _, _ = score_file(
        data, fmt, Columns(keep=("id",)), out, ReadLimits(max_bytes, 1 << 30), in_flight
    )
    assert [int(r["id"]) for r in rows] == list(range(n))
    reread = reader_for(data, fmt, Columns())
    model_rows: list[str] = []
    for piece in reread:  # what the model is sent for each row, batching aside
        model_rows += (
            expected_hashes(piece.batch.as_table())
            if piece.batch.table is not None
            else [
                row_hash(r) for r in csv.reader(io.StringIO(piece.batch.csv.decode(), newline=""))
            ]
        )
    assert [r["hash"] for r in rows] == model_rows


# ------------------------------------------------------------------ options
def test_format_from_suffix_type_tag_and_catalog():
    assert resolve("in/a.parquet", "", {}, {}).input is PARQUET
    assert resolve("in/a.ndjson.gz", "", {}, {}).input is JSONL
    assert resolve("in/a.JSONL", "binary/octet-stream", {}, {}).input is JSONL
    assert resolve("in/a", "application/x-parquet", {}, {}).input is PARQUET
    assert resolve("in/a.txt", "text/plain", {}, {}).input is CSV
    assert resolve("in/a.csv", "", {"content_type": "jsonl"}, {}).input is JSONL
    assert resolve("in/a.csv", "", {}, {"content_type": "parquet"}).input is PARQUET
    # a tag overrides the catalog
    assert resolve("in/a", "", {"content_type": "csv"}, {"content_type": "parquet"}).input is CSV
    opts = resolve("in/a.parquet", "", {"output_format": "text/csv"}, {"output_format": "jsonl"})
    assert (opts.input, opts.output) == (PARQUET, CSV)
    assert resolve("in/a.jsonl", "", {}, {}).output is JSONL


@pytest.mark.parametrize(
    ("key", "ctype", "tags", "needle"),
    [
        (
            "a.csv",
            "application/vnd.apache.parquet",
            {},
            "suffix says CSV but the object's Content-Type",
        ),
        ("a", "application/xml", {}, "is not a format scorefleet reads"),
        ("a.csv", "", {"content_type": "excel"}, "the content_type tag 'excel' is not a format"),
        ("a.csv", "", {"output_format": "avro"}, "the output_format tag 'avro'"),
        ("a.parquet.gz", "", {}, "Parquet behind an outer .gz compression"),
        ("a.csv", "", {"model_columns": "a", "drop_columns": "b"}, "set one"),
        ("a.csv", "", {"keep_columns": "* id"}, "stands alone"),
        ("a.csv", "", {"keep_columns": "id id"}, "twice"),
    ],
)
def test_unknown_or_contradictory_formats(key, ctype, tags, needle):
    with pytest.raises(BadInput, match=None) as exc:
        resolve(key, ctype, tags, {})
    assert needle in str(exc.value)


def test_column_lists():
    assert split_names("id  customer_id\tx", "t") == ("id", "customer_id", "x")
    assert split_names(["a b", "c"], "t") == ("a b", "c")  # names with spaces: the catalog
    assert resolve("a.csv", "", {"keep_columns": "id"}, {"keep_columns": ["x"]}).columns.keep == (
        "id",
    )
    # model_columns/drop_columns are one setting: a tag replaces both of the catalog's
    cols = resolve("a.csv", "", {"drop_columns": "id"}, {"model_columns": ["x"]}).columns
    assert (cols.model, cols.drop) == (None, ("id",))
    check_catalog_entry({"content_type": "parquet", "keep_columns": ["id"], "drop_columns": "id"})
    for bad in (
        {"content_type": "xls"},
        {"keep_columns": [1]},
        {"model_columns": "a", "drop_columns": "b"},
    ):
        with pytest.raises(ValueError):
            check_catalog_entry(bad)


def test_missing_column_lists_the_files_columns():
    with pytest.raises(BadInput) as exc:
        plan(Columns(keep=("id", "nope")), ("a", "b", "id"))
    assert str(exc.value) == (
        "keep_columns names 'nope', which is not a column of the file; its columns are "
        "'a', 'b', 'id'"
    )
    with pytest.raises(BadInput, match="model_columns names 'q', 'r', which are not columns"):
        plan(Columns(model=("q", "r")), ("a",))
    with pytest.raises(BadInput, match="no header row"):
        plan(Columns(keep=("a",)), ("", ""), named=False)
    with pytest.raises(BadInput, match="leaves the model no column"):
        plan(Columns(drop=("a",)), ("a",))


def test_answer_names_never_hide_a_kept_column():
    p = plan(Columns(keep=("score", "id")), ("id", "score", "x"))
    assert p.output_names(("score", "label")) == ("score", "id", "score_score", "label")


def test_unnamed_answers_are_numbered():
    table = table_of(10)

    def model(batch: Batch) -> Scores:
        return Scores(rows=batch.rows, csv=b"1,2\n" * batch.rows)

    sink = io.BytesIO()
    score_stream(
        reader_for(as_file(table, JSONL), JSONL, Columns(keep=("id",))),
        model,
        sink,
        JSONL,
        max_in_flight=1,
    )
    assert json.loads(sink.getvalue().splitlines()[0]) == {
        "id": "id-00000",
        "score_0": 1,
        "score_1": 2,
    }


# ------------------------------------------------------------------ bad input
PLAIN = Columns()


def run(data: bytes, fmt: Format, columns: Columns = PLAIN, lim: ReadLimits = BIG) -> list[dict]:
    return score_file(data, fmt, columns, fmt, lim)[0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"a": 1}\n[1, 2]\n', "line 2 is a list, not a JSON object"),
        (b'{"a": 1}\n7\n', "line 2 is a number, not a JSON object"),
        (b'{"a": 1}\n{"a": "x"}\n', "line 2: the key 'a' is a string here but a number on line 1"),
        (b'{"a": 1}\n{"a": 1\n', "line 2 is not valid JSON"),
        (b"a,b\n1,2\n", "line 1 is not valid JSON"),
        (b"", "the file is empty"),
        (b"\n\n", "the file has no data rows"),
    ],
)
def test_bad_jsonl(body, needle):
    with pytest.raises(BadInput) as exc:
        run(body, JSONL)
    assert needle in str(exc.value)


def test_jsonl_key_changes_type_across_mini_batches():
    body = b"".join(b'{"a": %d}\n' % i for i in range(200)) + b'{"a": "late"}\n'
    with pytest.raises(
        BadInput, match="line 201: the key 'a' is a string here but a number on line 1"
    ):
        run(body, JSONL, lim=ReadLimits(300, 1 << 30))


def test_jsonl_new_key_after_the_first_mini_batch():
    body = b"".join(b'{"a": %d}\n' % i for i in range(200)) + b'{"a": 1, "b": 2}\n'
    with pytest.raises(BadInput, match="line 201 has the key 'b', which the lines before it"):
        run(body, JSONL, lim=ReadLimits(300, 1 << 30))


def test_jsonl_missing_keys_are_null():
    rows = run(b'{"a": 1, "b": 2}\n{"a": 3}\n', JSONL, Columns(keep=("*",)))
    assert [(r["a"], r["b"]) for r in rows] == [(1, 2), (3, None)]


def parquet(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def test_parquet_corrupt_footer():
    data = bytearray(parquet(table_of(50)))
    data[-40:-8] = b"\xff" * 32
    with pytest.raises(BadInput, match=r"footer .* is corrupt"):
        run(bytes(data), PARQUET)


def test_parquet_truncated():
    data = parquet(table_of(500))
    with pytest.raises(BadInput, match="the Parquet file is truncated"):
        run(data[: len(data) // 2], PARQUET)


def test_parquet_that_is_really_csv():
    with pytest.raises(BadInput, match=r"not Parquet .* looks like text \(CSV\?\)"):
        run(b"a,b\n1,2\n" * 100, PARQUET)


def test_parquet_nested_column_the_model_cannot_take():
    table = pa.table({"id": [1, 2], "feats": [{"a": 1}, {"a": 2}], "tags": [[1], [2, 3]]})
    with pytest.raises(BadInput, match=r"the column 'feats' is nested .* drop_columns=feats"):
        run(parquet(table), PARQUET)
    # kept, not sent: fine (Parquet and JSON Lines outputs hold nested values)
    rows = run(parquet(table), PARQUET, Columns(keep=("*",), model=("id",)))
    assert [r["tags"] for r in rows] == [[1], [2, 3]]
    with pytest.raises(BadInput, match="CSV cannot hold"):
        score_file(parquet(table), PARQUET, Columns(keep=("tags",), model=("id",)), CSV)


def test_parquet_with_no_rows_is_an_empty_output_with_the_schema():
    table = table_of(0)
    _, _, data = score_file(parquet(table), PARQUET, Columns(keep=("id", "x")), PARQUET)
    out = pq.read_table(io.BytesIO(data))
    assert out.num_rows == 0
    assert out.schema.names == ["id", "x"]


def test_parquet_row_group_too_big_is_refused_before_reading():
    data = parquet(table_of(20_000), row_group_size=20_000)
    with pytest.raises(
        BadInput,
        match=r"row group 1 of 1 holds .* more than a worker reads at once .* smaller row groups",
    ):
        run(data, PARQUET, lim=ReadLimits(1 << 20, 100_000))
    # the same file in small row groups is fine
    assert (
        len(
            run(
                parquet(table_of(20_000), row_group_size=1000),
                PARQUET,
                lim=ReadLimits(1 << 20, 100_000),
            )
        )
        == 20_000
    )


def test_parquet_mini_batches_are_sized_like_csv_payloads():
    sizes: list[int] = []

    def model(batch: Batch) -> Scores:
        sizes.append(len(batch.as_csv(header=True)))
        return hash_model(batch)

    sink = io.BytesIO()
    reader = reader_for(parquet(table_of(20_000)), PARQUET, Columns(), ReadLimits(50_000, 1 << 30))
    score_stream(reader, model, sink, PARQUET, max_in_flight=1)
    assert len(sizes) > 10
    assert max(sizes) <= 50_000 * 1.1
    assert sum(sizes) / len(sizes) > 50_000 * 0.6


# ------------------------------------------------------------------ ranged reads
class FakeS3:
    """get_object with Range over one object, counting what is fetched."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[tuple[int, int]] = []

    def get_object(self, Bucket, Key, Range, **kw):
        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        self.ranges.append((start, end))
        return {"Body": io.BytesIO(self.data[start : end + 1])}


def test_parquet_is_read_in_ranges_one_row_group_at_a_time():
    from workers.scoring.formats.source import RangeFile

    data = parquet(table_of(200_000), row_group_size=20_000)
    s3 = FakeS3(data)
    f = RangeFile(s3, "b", "k", size=len(data), pin={}, block=256 * 1024)
    reader = ranged_reader(PARQUET, f, Columns(keep=("id",), model=("x",)), BIG, size=len(data))
    assert reader.num_rows == 200_000
    assert f.bytes_fetched < 300 * 1024  # the footer, not the file
    sink = io.BytesIO()
    score_stream(reader, hash_model, sink, PARQUET, max_in_flight=2)
    assert pq.read_table(io.BytesIO(sink.getvalue())).num_rows == 200_000
    assert max(end - start for start, end in s3.ranges) < len(data) / 4
    # the unread columns (k, name) are never fetched: less than the file in all
    assert f.bytes_fetched < len(data)


def test_a_bad_format_key_in_the_catalog_stops_the_worker():
    import os
    import subprocess
    import sys

    from tests.unit.test_settings import BASE

    catalog = {"reg/churn:*": {"keep_columns": ["id"], "content_type": "excel"}}
    env = {**os.environ, **BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog)}
    proc = subprocess.run(
        [sys.executable, "-c", "import workers.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "SCOREFLEET_MODEL_CATALOG=" in proc.stderr
    assert "(reg/churn:*: content_type 'excel' is not a format" in proc.stderr


def test_jsonl_integers_then_a_fraction_in_a_later_mini_batch():
    """Integers first, then 3.0 and 2.5 after the first mini-batch: read as numbers
    (JSON Lines out; Parquet out while its first row group is still open); once a
    written row group fixed an integer column, a Parquet output refuses 2.5 saying so."""
    ints = b"".join(b'{"a": %d}\n' % i for i in range(200))
    lim = ReadLimits(300, 1 << 30)
    body = ints + b'{"a": 3.0}\n{"a": 2.5}\n'
    rows = run(body, JSONL, Columns(keep=("a",)), lim)
    assert [r["a"] for r in rows][-3:] == [199, 3, 2.5]
    _, _, out = score_file(body, JSONL, Columns(keep=("a",)), PARQUET, lim)
    assert pq.read_table(io.BytesIO(out)).column("a").to_pylist()[-1] == 2.5
    late = b"".join(b'{"a": %d}\n' % i for i in range(100_000)) + b'{"a": 2.5}\n'
    with pytest.raises(BadInput, match=r"the output column 'a' changed type in data rows"):
        score_file(late, JSONL, Columns(keep=("a",)), PARQUET, ReadLimits(100_000, 1 << 30))


def test_the_row_group_limit_is_a_setting():
    from scorefleet.settings import ConfigError, load
    from tasks.inputs import read_limits

    env = {
        "SCOREFLEET_INPUT_URI": "s3://bucket-a/in/",
        "SCOREFLEET_OUTPUT_URI": "s3://bucket-a/out/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "reg/",
    }
    s = load({**env, "SCOREFLEET_MAX_ROW_GROUP_MB": "1"})
    assert read_limits(s, s.models.spec("reg/m:1")).max_group_bytes == 1 << 20
    assert load(env).scoring.max_row_group_bytes == 128 << 20
    with pytest.raises(ConfigError, match="SCOREFLEET_MAX_ROW_GROUP_MB"):
        load({**env, "SCOREFLEET_MAX_ROW_GROUP_MB": "lots"})
