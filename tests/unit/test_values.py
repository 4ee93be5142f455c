"""Values come out exactly as they went in (issue 24): each defect of the issue,
its family, and each rule of workers/scoring/values.py on its own, so that faster
code (issue 25) can be checked against them. The whole data path, every format:
tests/unit/test_values_oracle.py."""

from __future__ import annotations

import csv
import io
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorefleet.errors import BadInput, ModelError, RowsRefused
from scorefleet.settings import ModelSpec
from tests.helpers.protocols import invoke, sagemaker
from tests.unit.test_protocol import serve
from workers.scoring.batches import Batch, Scores, span_of
from workers.scoring.engine import score_stream
from workers.scoring.formats import FORMATS, Columns, ReadLimits, ranged_reader, stream_reader
from workers.scoring.protocols import CallLimits
from workers.scoring.protocols.json_http import JsonProtocol
from workers.scoring.protocols.v2 import V2Protocol

CSV, JSONL, PARQUET = FORMATS["csv"], FORMATS["jsonl"], FORMATS["parquet"]
SMALL = ReadLimits(max_bytes=300, max_group_bytes=1 << 30)
ALL = Columns(keep=("*",))


def pieces(data: bytes, fmt=JSONL, columns=ALL, lim=SMALL) -> list:
    if fmt.ranged is not None:
        return list(ranged_reader(fmt, io.BytesIO(data), columns, lim))
    return list(
        stream_reader(fmt, [data[i : i + 97] for i in range(0, len(data), 97)], columns, lim)
    )


def kept(data: bytes, fmt=JSONL, **kw) -> list[dict]:
    return [r for p in pieces(data, fmt, **kw) for r in p.kept.to_pylist()]


def sent(data: bytes, fmt=JSONL, **kw) -> list[dict]:
    """What a JSON-speaking model is sent for each row."""
    return [r for p in pieces(data, fmt, **kw) for r in p.batch.as_records()]


def lines(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ------------------------------------------------- 1. JSON Lines integers
def test_1_jsonl_64bit_ids_stay_exact_after_the_first_mini_batch():
    ids = [9007199254741227 + 3 * i for i in range(400)]
    body = lines([{"id": i, "x": 0.5} for i in ids])
    assert len(pieces(body)) > 10
    assert [r["id"] for r in kept(body)] == ids
    assert [r["id"] for r in sent(body)] == ids


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        # an integer beside a fraction in one mini-batch: a double would round it
        (b'{"a": 9007199254740993}\n{"a": 2.5}\n', "line 1: the key 'a' holds the integer"),
        # beyond 64 bits: pyarrow reads a double
        (b'{"a": 1}\n{"a": 18446744073709551617}\n', "line 2: the key 'a' holds the integer"),
        (b'{"a": 1}\n{"a": NaN}\n', "line 2 holds NaN, which is not a JSON number"),
        (b'{"a": -Infinity}\n', "line 1 holds -Infinity"),
        (b'{"a": 1, "a": 2}\n', "line 1 has the key 'a' twice"),
        (b'{"a": 1e400}\n', "line 1 cannot be read: Number too big"),
        (b'{"a": "\\ud800"}\n', "line 1 cannot be read"),
    ],
)
def test_1_family_numbers_json_reads_otherwise_are_errors_naming_the_line(body, needle):
    with pytest.raises(BadInput) as exc:
        kept(body)
    assert needle in str(exc.value)


def test_1_family_fractions_after_integers_are_still_exact_numbers():
    body = lines([{"a": i} for i in range(100)] + [{"a": 2.5}, {"a": 3}])
    assert [r["a"] for r in kept(body)][-3:] == [99, 2.5, 3]


def test_1_family_a_negative_zero_after_integers_keeps_its_sign():
    """The values oracle's long run: a later mini-batch of an integer column holding
    -0.0 was cast back to integers, and the model was sent 0."""
    body = lines([{"a": i} for i in range(100)] + [{"a": -0.0}, {"a": 3}])
    got = [r["a"] for r in sent(body)][-2:]
    assert got == [-0.0, 3] and math.copysign(1.0, got[0]) == -1.0
    assert math.copysign(1.0, [r["a"] for r in kept(body)][-2]) == -1.0


# ---------------------------------------------- 2. JSON Lines date strings
def test_2_jsonl_strings_that_look_like_dates_stay_the_strings_they_are():
    stamps = ["2026-03-02T11:30:00+02:00", "2026-03-02", "2026-03-02 11:30:00"]
    body = lines([{"t": stamps[i % 3], "n": {"when": "2026-01-01"}} for i in range(60)])
    body += lines([{"t": "n/a", "n": {"when": "later"}}])  # the key never changed type
    only_t = Columns(keep=("*",), model=("t",))
    got = kept(body, columns=only_t)
    assert [r["t"] for r in got] == [stamps[i % 3] for i in range(60)] + ["n/a"]
    assert got[0]["n"] == {"when": "2026-01-01"}
    assert sent(body, columns=only_t)[0] == {"t": stamps[0]}


# --------------------------------------------------------- 3. ragged CSV
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n", "data row 2 (line 3) has 2 fields, the header has 3"),
        (b'a,b,c\n1,"2,x",3\n4,5\n6,7,8,9\n', "data row 2 (line 3) has 2 fields"),
        (b"a,b\n1,2\n3\n4,5,\n", "data row 2 (line 3) has 1 fields"),
    ],
)
@pytest.mark.parametrize("columns", [Columns(), Columns(keep=("a",))], ids=["plain", "kept"])
def test_3_ragged_csv_rows_are_refused_even_when_their_commas_balance(body, needle, columns):
    with pytest.raises(BadInput) as exc:
        pieces(body, CSV, columns=columns, lim=ReadLimits(1 << 20, 1 << 30, "present"))
    assert needle in str(exc.value)


# ---------------------------------------------- 4. numeric-looking headers
def csv_rows(body: bytes, **kw) -> tuple[bytes | None, int]:
    from workers.scoring.formats.csvsplit import CsvBatcher

    b = CsvBatcher([body], 1 << 20, **kw)
    rows = sum(x.rows for x in b)
    return b.header, rows


#: one column of English sentences, some with commas (csv.Sniffer took a space for the
#: delimiter and the header for a record)
SENTENCES = (
    b'sentence\n"Home went, the and early to school park."\nEarly to john the went park dog '
    b'ran.\n"John dog mary and, went and home john."\nLeft a school early left went ran.\n'
    b'Sue cat to and dog ran and left.\n"The, school a john left ran ran and."\nPark park '
    b"early left.\nSue to late park the left and.\n"
)


@pytest.mark.parametrize(
    "body",
    [
        b"0,1,2,3\n5.1,3.5,1.4,0.2\n4.9,3.0,1.4,0.2\n",  # pd.DataFrame(array).to_csv(index=False)
        b"x,nan\n1,2\n3,4\n",  # a column named nan
        SENTENCES,  # 10.
        b",a,b\n0,1.5,x\n1,2.5,y\n",  # pandas' index column
    ],
)
def test_4_and_10_headers_with_numeric_or_plain_names_are_headers(body):
    header, rows = csv_rows(body)
    assert header == body.split(b"\n")[0] + b"\n"
    assert rows == body.count(b"\n") - 1


@pytest.mark.parametrize(
    "body", [b"region,2024,2025\nnorth,1.5,2.0\nsouth,2.5,3.0\n", b"name,city\nbob,paris\n"]
)
def test_4_a_header_that_cannot_be_told_from_data_is_an_error_with_the_words(body):
    with pytest.raises(BadInput, match="csv_header=present or csv_header=absent"):
        csv_rows(body)
    header, rows = csv_rows(body, header_mode="present")
    assert header is not None and rows == body.count(b"\n") - 1


def test_4_cr_only_line_ends_are_named():
    with pytest.raises(BadInput, match=r"carriage return \(CR\) alone, as old Mac OS"):
        csv_rows(b"a,b\r1,2\r3,4\r")


def test_4_nul_bytes_after_the_first_64k_are_refused_by_row():
    body = b"a,b\n" + b"1,2\n" * 20000 + b"3,\x004\n"
    with pytest.raises(BadInput, match=r"data row 20001 \(line 20002\) holds a NUL byte"):
        csv_rows(body)


def test_4_family_a_lone_carriage_return_outside_quotes_is_refused_by_row():
    with pytest.raises(BadInput, match=r"data row 2 \(line 3\) has a carriage return"):
        csv_rows(b"a,b\n1,2\n3\r,4\n", header_mode="present")
    _, rows = csv_rows(b'a,b\n1,"2\r3"\n', header_mode="present")  # quoted: a value
    assert rows == 1


# ------------------------------------------ 5. CSV text to JSON models
def csv_batch(data: bytes, columns: tuple[str, ...]) -> Batch:
    n = data.count(b"\n")
    return Batch(1, n, span_of(1, n), columns, csv=data)


@pytest.mark.parametrize(
    "text",
    ["1_000", "١٢", "１２", " 12", "007", "+5", "nan", "Infinity", "1e400", "0x10", "9" * 5000],
)
def test_5_csv_text_that_is_no_json_number_is_sent_as_text(text):
    row = [f'"{text}"' if "," in text else text]
    data = ("\n".join([*row, "2"]) + "\n").encode()
    assert csv_batch(data, ("a",)).as_records() == [{"a": text}, {"a": "2"}]


def test_5_json_numbers_are_sent_as_json_reads_them():
    data = b"7,7.50,-0.0,9007199254740993,1E5\n,1,2,3,4\n"
    assert csv_batch(data, ("a", "b", "c", "d", "e")).as_rows() == [
        [7, 7.5, -0.0, 9007199254740993, 100000.0],
        [None, 1, 2, 3, 4],
    ]


def make(cls, name, options):
    spec = ModelSpec(image="m", protocol=name, extra=cls.as_entry(options))
    return cls("http://127.0.0.1:1", spec, CallLimits())


@pytest.mark.parametrize(
    ("cell", "datatype", "needle"),
    [
        ("1_000", "FP64", "'1_000' is not a number"),
        ("١٢", "FP32", "is not a number"),
        ("9223372036854775808", "INT64", "beyond 64-bit integers"),
        ("1e39", "FP32", "beyond the range of FP32"),
        ("2.5", "INT64", "is not an integer"),
    ],
)
def test_5_family_v2_tensors_take_only_json_numbers_that_fit(cell, datatype, needle):
    p = make(V2Protocol, "v2", {"model_name": "m", "datatype": datatype})
    with pytest.raises(RowsRefused, match=needle):
        p.request(csv_batch(f"{cell}\nx\n".encode(), ("a",)))


def test_5_family_parquet_nan_goes_to_json_as_null_and_an_infinity_is_refused():
    table = pa.table({"x": [1.5, float("nan"), None]})
    b = Batch(1, 3, span_of(1, 3), ("x",), table=table)
    assert b.as_rows() == [[1.5], [None], [None]]
    inf = Batch(4, 1, span_of(4, 1), ("x",), table=pa.table({"x": [float("inf")]}))
    with pytest.raises(RowsRefused, match="data row 4, column 'x' holds an infinity"):
        inf.as_rows()


# ------------------------------------------------ 6. answer names, quoted
def test_6_a_json_answer_key_with_a_comma_is_one_csv_column():
    srv, _ = serve(
        lambda n, body: (
            200,
            "application/json",
            json.dumps([{"p(churn, 30d)": 0.5, "label": "x"}] * 2).encode(),
        )
    )
    client = sagemaker(f"http://127.0.0.1:{srv.server_port}", backoff=0.01)
    try:
        answer = invoke(client, b"h\n1\n2\n", 1, 2)
    finally:
        client.close()
        srv.shutdown()
        srv.server_close()
    text = (answer.header_line() or b"") + answer.as_csv()
    assert list(csv.reader(io.StringIO(text.decode()))) == [
        ["p(churn, 30d)", "label"],
        ["0.5", "x"],
        ["0.5", "x"],
    ]


@pytest.mark.parametrize(
    ("preds", "needle"),
    [
        ([{"a": 1}, {"b": 2}], "data row 2 has no 'a'"),
        ([{"a": 1}, {"a": 1, "b": 2}], "data row 2 has 'b', which the first prediction has not"),
        ([[1, 2], [1]], "data row 2 has 1 values where the first had 2"),
        ([1, {"a": 1}], "data row 2 is not a single value"),
    ],
)
def test_6_family_sagemaker_json_answers_of_another_shape_are_errors(preds, needle):
    from workers.scoring.protocols.sagemaker import json_rows

    with pytest.raises(ModelError, match=needle):
        json_rows({"predictions": preds})


# ---------------------------------------------- 11. pointers into answers
CLASSIFIER = [{"label": "unacceptable", "score": 0.87}, {"label": "acceptable", "score": 0.13}]


def rows_of(options: dict, preds: list) -> tuple[tuple[str, ...], list[list]]:
    scores = make(JsonProtocol, "json", {"path": "/p", **options})._rows(preds, 1)
    table = scores.table if scores.table is not None else scores.as_table()
    return tuple(table.column_names), [list(r.values()) for r in table.to_pylist()]


def test_11_pointers_into_a_list_answer_pick_its_items():
    names, rows = rows_of({"columns": ["0.score", "1.score"]}, [CLASSIFIER, CLASSIFIER])
    assert names == ("0.score", "1.score") and rows == [[0.87, 0.13], [0.87, 0.13]]
    named = {"columns": ["0.score", "1.score"], "names": ["p_bad", "p_good"]}
    assert rows_of(named, [CLASSIFIER])[0] == ("p_bad", "p_good")


# every documented shape/columns/names against every answer shape a model gives
SCALAR, LIST, OBJECT, NESTED = 0.5, [0.1, 0.9], {"label": "a", "p": 0.5}, {"p": {"a": [1, 2]}}
CASES = [
    ({}, SCALAR, ("prediction",), [0.5]),
    ({}, LIST, ("prediction_0", "prediction_1"), [0.1, 0.9]),
    ({}, OBJECT, ("label", "p"), ["a", 0.5]),
    (
        {},
        CLASSIFIER,
        ("prediction_0", "prediction_1"),
        [json.dumps(c, separators=(",", ":")) for c in CLASSIFIER],
    ),
    ({}, NESTED, ("p",), ['{"a":[1,2]}']),
    ({"shape": "scalar"}, LIST, None, "is not a single value"),
    ({"shape": "list"}, OBJECT, None, "is not a list"),
    ({"shape": "object"}, LIST, None, "is not an object"),
    ({"columns": ["p"]}, OBJECT, ("p",), [0.5]),
    ({"columns": ["p.a.1"]}, NESTED, ("1",), [2]),
    ({"columns": ["p.a.5"]}, NESTED, None, "has nothing at 'p.a.5'"),
    ({"columns": ["1"]}, LIST, ("1",), [0.9]),
    ({"columns": ["2"]}, LIST, None, "has nothing at '2'"),
    ({"columns": ["0.label"]}, CLASSIFIER, ("label",), ["unacceptable"]),
    ({"columns": ["label"]}, CLASSIFIER, None, "has nothing at 'label'"),
    ({"columns": ["p"]}, SCALAR, None, "is a single value, but columns"),
    ({"shape": "list", "columns": ["0"]}, OBJECT, None, "is not a list"),
    ({"shape": "object", "columns": ["p"]}, OBJECT, ("p",), [0.5]),
    ({"names": ["x"]}, SCALAR, ("x",), [0.5]),
    ({"names": ["x"]}, LIST, None, "has 2 values where the first had 1"),
    ({"names": ["x", "y"]}, OBJECT, ("x", "y"), ["a", 0.5]),
]


@pytest.mark.parametrize(("options", "answer", "names", "want"), CASES)
def test_11_every_shape_and_option_against_every_answer_shape(options, answer, names, want):
    if names is None:
        with pytest.raises(ModelError, match=want):
            rows_of(options, [answer])
        return
    assert rows_of(options, [answer, answer]) == (names, [want, want])


def test_11_scalar_shape_with_columns_is_refused_in_the_catalog():
    with pytest.raises(ValueError, match="with shape scalar there is nothing to point into"):
        JsonProtocol.parse_options({"path": "/p", "shape": "scalar", "columns": ["a"]})


# ----------------------------------------- answers typed as the model gave them
def test_json_answers_keep_their_types_in_typed_outputs():
    """A JSON model's "007", "true" and "" are strings: they are not re-read as a
    number, a boolean or a null on their way to JSON Lines or Parquet."""
    answer = make(JsonProtocol, "json", {"path": "/p"})._rows(
        [{"a": "007", "b": "true", "c": "", "d": 7, "e": None}], 1
    )
    from workers.scoring.formats.base import answer_table

    names = ("a", "b", "c", "d", "e")
    assert answer_table(answer, names, text=False).to_pylist() == [
        {"a": "007", "b": "true", "c": "", "d": 7, "e": None}
    ]


def test_a_number_too_long_for_python_is_text_wherever_it_crosses():
    """An integer of more than 4,300 digits is a JSON number by its grammar, but the
    json module refuses to read it (Python's integer-string limit): it is text, and
    neither a model's request, a dry run's sample nor a CSV answer stops on it
    (found by the bad-input corpus's 64 KiB case after the merge with issue 27)."""
    from workers.scoring.values import json_number, typed_text

    huge = "9" * 5000
    assert json_number(huge) is None
    data = f"{huge}\n1.5\n".encode()
    assert csv_batch(data, ("a",)).as_rows() == [[huge], ["1.5"]]  # the column is text
    column = typed_text(pa.array([huge, "1.5"]))
    assert column.to_pylist() == [huge, "1.5"]


def test_csv_answers_are_typed_by_the_json_number_rule():
    from workers.scoring.formats.base import answer_table

    scores = Scores(rows=2, csv=b"007,1,NA,true,1.5,\n008,2,x,false,2,\n")
    table = answer_table(scores, ("a", "b", "c", "d", "e", "f"), text=False)
    assert table.to_pylist() == [
        {"a": "007", "b": 1, "c": "NA", "d": "true", "e": 1.5, "f": None},
        {"a": "008", "b": 2, "c": "x", "d": "false", "e": 2.0, "f": None},
    ]


# ------------------------------------------------- Parquet binary columns
def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_parquet_binary_that_is_not_utf8_is_named_not_called_corrupt():
    data = parquet(pa.table({"id": [1, 2], "b": pa.array([b"ok", b"\xff\xfe"], pa.binary())}))
    with pytest.raises(BadInput) as exc:
        pieces(data, PARQUET, columns=Columns())
    assert "data row 2, column 'b' holds bytes that are not UTF-8" in str(exc.value)
    assert "corrupt" not in str(exc.value)
    # kept into Parquet: the bytes as they are
    sink = io.BytesIO()
    reader = ranged_reader(PARQUET, io.BytesIO(data), Columns(keep=("*",), model=("id",)), SMALL)
    score_stream(
        reader, lambda b: Scores(rows=b.rows, csv=b"1\n" * b.rows), sink, PARQUET, max_in_flight=1
    )
    assert pq.read_table(io.BytesIO(sink.getvalue())).column("b").to_pylist() == [
        b"ok",
        b"\xff\xfe",
    ]


def test_parquet_utf8_binary_goes_to_a_model_as_text():
    data = parquet(pa.table({"b": pa.array([b"caf\xc3\xa9", b"x"], pa.binary())}))
    (piece,) = pieces(data, PARQUET, columns=Columns())
    assert piece.batch.as_records() == [{"b": "café"}, {"b": "x"}]
    assert piece.batch.as_csv(header=False) == "café\nx\n".encode()


def test_a_json_answer_without_names_gets_no_csv_header_it_did_not_send():
    """A list or value answer names no column: a CSV output without kept columns is
    the answer alone, as before (its table's score_0... names stay inside)."""
    from workers.scoring.protocols.sagemaker import json_rows

    scores = json_rows({"predictions": [[1, 2.5], [3, 4.0]]})
    assert scores.header_line() is None and scores.as_csv() == b"1,2.5\n3,4\n"
    assert json_rows([0.5, 1]).header_line() is None


def test_a_cell_too_long_to_show_is_cut_in_the_error():
    p = make(V2Protocol, "v2", {"model_name": "m", "datatype": "FP64"})
    with pytest.raises(RowsRefused) as caught:
        p.request(csv_batch(("9" * 5000 + "\n").encode(), ("a",)))
    assert "'9999999999" in str(caught.value) and len(str(caught.value)) < 300
