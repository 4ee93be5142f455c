"""workers/scoring/batches.py: the types between formats, protocols and writers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.scoring.batches import Batch, Scores, record_starts, scores_from_rows, span_of

CSV = b'5.1,3.5,,setosa\n4.9,"3,0",1.4,"a\nb"\n6.2,2.9,4.3,x\n'


def batch(data=CSV, first_row=7, columns=("a", "b", "c", "d"), header=b"a,b,c,d\n"):
    rows = len(record_starts(data))
    return Batch(first_row, rows, span_of(first_row, rows), columns, csv=data, csv_header=header)


def test_exactly_one_of_csv_and_table():
    with pytest.raises(ValueError, match="exactly one"):
        Batch(1, 1, "data row 1", ("a",))


def test_as_csv_with_and_without_the_header_is_the_files_bytes():
    b = batch()
    assert b.as_csv(header=False) is CSV  # the fast path: no copy, no parse
    assert b.as_csv(header=True) == b"a,b,c,d\n" + CSV
    assert batch(header=None).as_csv(header=True) == CSV


def test_rows_and_records_are_typed_per_column_and_empty_is_null():
    b = batch()
    assert b.as_rows() == [
        [5.1, "3.5", None, "setosa"],
        [4.9, "3,0", 1.4, "a\nb"],
        [6.2, "2.9", 4.3, "x"],
    ]
    assert b.as_records()[0] == {"a": 5.1, "b": "3.5", "c": None, "d": "setosa"}


def test_integers_stay_integers_and_nan_stays_text():
    b = batch(b"1,nan\n2,1.5\n", columns=("", ""), header=None)
    assert b.as_rows() == [[1, "nan"], [2, "1.5"]]
    # a CSV without a header: records keyed by position
    assert b.as_records() == [{"0": 1, "1": "nan"}, {"0": 2, "1": "1.5"}]


def test_slice_keeps_the_files_numbering_and_bytes():
    b = batch()
    part = b.slice(1, 2)
    assert part.first_row == 8 and part.rows == 2 and part.span == "data rows 8-9"
    assert part.csv == b'4.9,"3,0",1.4,"a\nb"\n6.2,2.9,4.3,x\n'
    assert part.csv_header == b.csv_header
    assert b.slice(0, 1).span == "data row 7"
    with pytest.raises(ValueError):
        b.slice(2, 2)


@given(st.lists(st.lists(st.text(min_size=0, max_size=5), min_size=1, max_size=3), min_size=1))
def test_slices_put_back_together_are_the_batch(rows):
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    data = out.getvalue().encode()
    starts = record_starts(data)
    if len(starts) != len(rows):  # csv writes [""] as an empty line: not a record here
        return
    b = batch(data, columns=("",) * 3, header=None)
    cut = len(rows) // 2
    if cut == 0:
        return
    assert b.slice(0, cut).csv + b.slice(cut, len(rows) - cut).csv == data


def test_scores_header_line():
    assert Scores(rows=1, csv=b"1\n", csv_header=b'"p",x\n').header_line() == b'"p",x\n'
    assert Scores(rows=1, csv=b"1\n", header=("a,b", "c")).header_line() == b'"a,b",c\n'
    assert Scores(rows=1, csv=b"1\n").header_line() is None


def test_scores_from_json_values():
    s = scores_from_rows([["a", 0.5, None, True, {"k": [1]}]], header=["l", "p", "n", "b", "o"])
    assert s.rows == 1 and s.as_csv() == b'a,0.5,,true,"{""k"":[1]}"\n'
    # typed as the model answered (workers/scoring/values.py), not re-read from text
    assert s.table is not None and s.table.to_pylist() == [
        {"l": "a", "p": 0.5, "n": None, "b": True, "o": '{"k":[1]}'}
    ]
    assert s.header == ("l", "p", "n", "b", "o")
