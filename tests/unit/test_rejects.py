"""Rejected rows (workers/scoring/rejects.py): the bisection finds exactly the refused rows,
within its bound of extra calls, never treats a transient failure as a refusal, and
stops at the file's budget; the .rejected rows in the input's format."""

from __future__ import annotations

import io
import math

import pytest

from scorefleet.errors import ModelUnavailable, RowsRefused
from scorefleet.settings import RejectBudget
from workers.scoring.batches import Batch, Scores
from workers.scoring.rejects import (
    Bisector,
    OverBudget,
    RejectedWriter,
    bisect_calls_per_row,
    extra_call_bound,
)


def csv_batch(first: int, rows: int) -> Batch:
    data = b"".join(f"{i},{i * 2}\n".encode() for i in range(first, first + rows))
    return Batch(
        first_row=first,
        rows=rows,
        span=f"data rows {first}-{first + rows - 1}",
        columns=("a", "b"),
        csv=data,
        csv_header=b"a,b\n",
    )


class Model:
    """Refuses (400) any batch holding a bad row; counts its calls."""

    def __init__(self, bad: set[int], flaky_at: int | None = None) -> None:
        self.bad = bad
        self.calls = 0
        self.flaky_at = flaky_at

    def score(self, batch: Batch) -> Scores:
        self.calls += 1
        if self.flaky_at is not None and self.calls == self.flaky_at:
            raise ModelUnavailable("connection reset")
        rows = range(batch.first_row, batch.first_row + batch.rows)
        hit = sorted(self.bad.intersection(rows))
        if hit:
            raise RowsRefused(f"400 Bad Request: row {hit[0]} has a bad value\nmore detail")
        return Scores(rows=batch.rows, csv=b"".join(f"{r}\n".encode() for r in rows))


def scored_rows(parts) -> list[int]:
    return [int(x) for p in parts for x in p.csv.decode().split()]


@pytest.mark.parametrize(
    ("rows", "bad"),
    [
        (1000, {1}),
        (1000, {1000}),
        (1000, {537}),
        (1000, {3, 4, 900}),
        (7, {1, 2, 3, 4, 5, 6, 7}),
        (1, {1}),
    ],
)
def test_bisection_finds_exactly_the_refused_rows(rows, bad):
    model = Model(bad)
    b = Bisector(model.score, RejectBudget(count=1000), lambda: rows)
    out = b(csv_batch(1, rows))
    assert sorted(r.row for r in out.refused) == sorted(bad)
    assert scored_rows(out.parts) == [r for r in range(1, rows + 1) if r not in bad]
    for r in out.refused:
        assert f"row {r.row} has a bad value" in r.message  # the model's own message
        assert r.batch.rows == 1 and r.batch.first_row == r.row
    assert out.extra_calls <= len(bad) * bisect_calls_per_row(rows)


def test_one_bad_row_costs_at_most_two_calls_per_level():
    for rows in (2, 3, 10, 1000, 4096, 50_000):
        levels = math.ceil(math.log2(rows))
        for bad in {1, rows // 3 + 1, rows}:
            model = Model({bad})
            out = Bisector(model.score, RejectBudget(count=5), lambda n=rows: n)(csv_batch(1, rows))
            assert out.extra_calls <= 2 * levels, (rows, bad, out.extra_calls)
            assert model.calls == out.calls
        # in the right half: one call per level, and the row's own
        model = Model({rows})
        out = Bisector(model.score, RejectBudget(count=5), lambda n=rows: n)(csv_batch(1, rows))
        assert out.extra_calls <= levels + 1, (rows, out.extra_calls)


def test_without_a_budget_the_refusal_fails_the_file_as_before():
    model = Model({5})
    with pytest.raises(RowsRefused, match="row 5") as info:
        Bisector(model.score, RejectBudget(), lambda: 10)(csv_batch(1, 10))
    assert not isinstance(info.value, OverBudget) and model.calls == 1


def test_a_transient_failure_is_never_a_rejection():
    model = Model({5}, flaky_at=3)  # the third call (inside the bisection) is reset
    with pytest.raises(ModelUnavailable):
        Bisector(model.score, RejectBudget(count=10), lambda: 10)(csv_batch(1, 10))


def test_over_budget_fails_with_the_first_refused_rows_and_bounded_calls():
    bad = set(range(1, 1001, 7))  # 143 bad rows
    model = Model(bad)
    b = Bisector(model.score, RejectBudget(count=3), lambda: 1000)
    with pytest.raises(OverBudget) as info:
        b(csv_batch(1, 1000))
    text = str(info.value)
    assert "more than this file may lose (max_rejected_rows=3" in text
    assert "data row 1: 400 Bad Request: row 1 has a bad value" in text
    assert "more detail" not in text  # first lines only
    assert len(info.value.refused) == 4
    assert b.extra_calls <= extra_call_bound(3, 1000)
    assert isinstance(info.value, RowsRefused)  # a permanent ModelError: the file's .error


def test_a_fraction_budget_is_checked_against_the_rows_expected_and_at_the_end():
    model = Model({2, 3})
    b = Bisector(model.score, RejectBudget.parse("0.01"), lambda: 1000)
    out = b(csv_batch(1, 100))  # 2 of an expected 1000: within 1%
    assert len(out.refused) == 2
    b.check_final(1000)
    with pytest.raises(OverBudget):
        b.check_final(100)  # the file had 100 rows after all: 2% is over


def test_rejected_rows_in_the_inputs_format():
    model = Model({2, 4})
    out = Bisector(model.score, RejectBudget(count=5), lambda: 5)(csv_batch(1, 5))
    sink = io.BytesIO()
    w = RejectedWriter(sink)
    w.write(out.refused)
    assert sink.getvalue().decode().splitlines() == [
        "scorefleet_row,a,b,scorefleet_message",
        "2,2,4,400 Bad Request: row 2 has a bad value",
        "4,4,8,400 Bad Request: row 4 has a bad value",
    ]
    assert w.rows == 2


def test_a_message_with_commas_and_quotes_stays_one_field():
    import csv

    batch = csv_batch(1, 1)

    def refuse(b):
        raise RowsRefused('bad "value", see docs')

    out = Bisector(refuse, RejectBudget(count=5), lambda: 1)(batch)
    sink = io.BytesIO()
    RejectedWriter(sink).write(out.refused)
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode())))
    assert rows[1] == ["1", "1", "2", 'bad "value", see docs']


@pytest.mark.parametrize("text", ["0", "10", "0.001", "0.5%", "1e-4"])
def test_budgets_parse(text):
    RejectBudget.parse(text)


@pytest.mark.parametrize("text", ["-1", "1.5", "100%", "lots", "true"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ValueError):
        RejectBudget.parse(text)


def test_a_message_with_a_credential_is_masked_in_the_rejected_file():
    from tests.helpers.fakemodel import LEAKED_SECRET

    def refuse(b):
        raise RowsRefused(f"bad row; connecting with token={LEAKED_SECRET}")

    out = Bisector(refuse, RejectBudget(count=5), lambda: 1)(csv_batch(1, 1))
    sink = io.BytesIO()
    RejectedWriter(sink).write(out.refused)
    assert LEAKED_SECRET not in sink.getvalue().decode()
    assert "bad row; connecting with token=" in sink.getvalue().decode()


def table_batch(first: int, rows: int) -> Batch:
    import pyarrow as pa

    ids = list(range(first, first + rows))
    table = pa.table({"a": pa.array(ids, pa.int64()), "b": pa.array([f"v{i}" for i in ids])})
    return Batch(
        first_row=first,
        rows=rows,
        span=f"data rows {first}-{first + rows - 1}",
        columns=("a", "b"),
        table=table,
    )


class TableModel:
    def __init__(self, bad: set[int]) -> None:
        self.bad = bad

    def score(self, batch: Batch) -> Scores:
        ids = batch.as_table().column("a").to_pylist()
        hit = [i for i in ids if i in self.bad]
        if hit:
            raise RowsRefused(f"row {hit[0]} has a bad value")
        return Scores(rows=len(ids), csv=b"".join(b"1\n" for _ in ids))


def test_a_parquet_inputs_refused_rows_are_written_as_parquet_with_their_types():
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Bisector(TableModel({3, 7}).score, RejectBudget(count=5), lambda: 8)(table_batch(1, 8))
    sink = io.BytesIO()
    w = RejectedWriter(sink, parquet=True)
    w.write(out.refused[:1])
    w.write(out.refused[1:])
    assert sink.getvalue() == b""  # held until close: one Parquet file
    w.close()
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.column_names == ["scorefleet_row", "a", "b", "scorefleet_message"]
    assert table.schema.field("a").type == pa.int64() and w.rows == 2
    got = table.to_pydict()
    assert got["scorefleet_row"] == [3, 7] and got["b"] == ["v3", "v7"]
    assert got["scorefleet_message"] == ["row 3 has a bad value", "row 7 has a bad value"]


def test_a_json_lines_inputs_refused_rows_are_json_lines():
    import json

    out = Bisector(TableModel({2}).score, RejectBudget(count=5), lambda: 4)(table_batch(1, 4))
    sink = io.BytesIO()
    w = RejectedWriter(sink)
    w.write(out.refused)
    w.close()
    (line,) = sink.getvalue().decode().splitlines()
    assert json.loads(line) == {
        "scorefleet_row": 2,
        "a": 2,
        "b": "v2",
        "scorefleet_message": "row 2 has a bad value",
    }
