"""What each protocol sends and how it reads answers: request shapes, layouts,
pointers and columns, without a server (the contract test covers the wire)."""

from __future__ import annotations

import json

import pytest

from scorefleet.errors import ModelError, RowsRefused
from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch, span_of
from workers.scoring.protocols import CallLimits
from workers.scoring.protocols.aws_lambda import LambdaProtocol, wrap
from workers.scoring.protocols.calls import ServerError
from workers.scoring.protocols.json_http import JsonProtocol
from workers.scoring.protocols.v2 import V2Protocol

URL = "http://127.0.0.1:1"
IRIS = b"5.1,3.5,1.4,0.2\n4.9,,1.4,0.2\n"
COLS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def batch(data: bytes = IRIS, columns: tuple[str, ...] = COLS, first_row: int = 1) -> Batch:
    rows = data.count(b"\n")
    return Batch(first_row, rows, span_of(first_row, rows), columns, csv=data)


def make(cls, name, options):
    return cls(URL, ModelSpec(image="m", protocol=name, extra=cls.as_entry(options)), CallLimits())


# -------------------------------------------------------------------- v2
def test_v2_tensor_layout_sends_one_2d_tensor_and_empty_cells_as_null():
    p = make(V2Protocol, "v2", {"model_name": "iris", "datatype": "FP32"})
    req = p.request(batch())
    (t,) = req["inputs"]
    assert t == {
        "name": "input-0",
        "shape": [2, 4],
        "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2, 4.9, None, 1.4, 0.2],
    }
    assert "NaN" not in json.dumps(req)


def test_v2_columns_layout_sends_a_tensor_per_column_with_its_datatype():
    p = make(
        V2Protocol,
        "v2",
        {
            "model_name": "m",
            "layout": "columns",
            "datatypes": {"kind": "BYTES", "n": "INT64"},
            "parameters": {"content_type": "pd"},
            "outputs": ["y"],
        },
    )
    req = p.request(batch(b"1.5,a,3\n2.5,b,4\n", ("x", "kind", "n")))
    assert [(t["name"], t["datatype"], t["shape"], t["data"]) for t in req["inputs"]] == [
        ("x", "FP64", [2], [1.5, 2.5]),
        ("kind", "BYTES", [2], ["a", "b"]),
        ("n", "INT64", [2], [3, 4]),
    ]
    assert req["outputs"] == [{"name": "y"}] and req["parameters"] == {"content_type": "pd"}


@pytest.mark.parametrize(
    ("data", "datatype", "needle"),
    [
        (b"1,tall\n", "FP64", "data row 8, column 'b': 'tall' is not a number"),
        (b"1,2.5\n", "INT64", "column 'b': 2.5 is not an integer"),
        (b"1,\n", "INT64", "column 'b': an empty cell cannot go into a INT64 tensor"),
    ],
)
def test_v2_refuses_a_cell_its_tensor_cannot_hold(data, datatype, needle):
    p = make(V2Protocol, "v2", {"model_name": "m", "datatype": datatype})
    with pytest.raises(RowsRefused) as err:
        p.request(batch(data, ("a", "b"), first_row=8))
    assert needle in str(err.value)


def test_v2_output_tensors_become_columns_and_2d_ones_expand():
    p = make(V2Protocol, "v2", {"model_name": "m"})
    answer = {
        "outputs": [
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            {"name": "p", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.9, 0.8, 0.2]},
        ]
    }
    s = p.scores(answer, batch())
    assert s.header == ("label", "p_0", "p_1") and s.as_csv() == b"a,0.1,0.9\nb,0.8,0.2\n"
    wrong = {"outputs": [{"name": "label", "shape": [3], "data": ["a", "b", "c"]}]}
    with pytest.raises(RowsRefused, match="answered 3 result rows"):
        p.scores(wrong, batch())
    torn = {"outputs": [{"name": "p", "shape": [2, 2], "data": [0.1, 0.9, 0.8]}]}
    with pytest.raises(ModelError, match=r"has shape \[2, 2\] but 3 values"):
        p.scores(torn, batch())


# ------------------------------------------------------------------ json
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"instances": [[1, "x"], [2, None]]}),
        ({"instances_as": "objects"}, {"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": None}]}),
        ({"request": "records"}, [{"a": 1, "b": "x"}, {"a": 2, "b": None}]),
        (
            {"request": "dataframe_split"},
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, None]]}},
        ),
    ],
)
def test_json_request_shapes(options, expected):
    p = make(JsonProtocol, "json", {"path": "/p", **options})
    assert p.request_body(batch(b"1,x\n2,\n", ("a", "b"))) == expected


@pytest.mark.parametrize(
    ("options", "preds", "header", "csv"),
    [
        ({}, [0.5, 0.7], ("prediction",), b"0.5\n0.7\n"),
        ({}, [[0.1, 0.9], [1, 0]], ("prediction_0", "prediction_1"), b"0.1,0.9\n1,0\n"),
        ({"names": ["no", "yes"]}, [[0.1, 0.9], [1, 0]], ("no", "yes"), b"0.1,0.9\n1,0\n"),
        ({}, [{"l": "a", "p": 1}, {"l": "b", "p": 0}], ("l", "p"), b"a,1\nb,0\n"),
        (
            {"columns": ["out.label", "scores.1"]},
            [
                {"out": {"label": "a"}, "scores": [0, 0.9]},
                {"out": {"label": "b"}, "scores": [1, 0.2]},
            ],
            ("label", "1"),
            b"a,0.9\nb,0.2\n",
        ),
    ],
)
def test_json_predictions_become_columns(options, preds, header, csv):
    p = make(JsonProtocol, "json", {"path": "/p", **options})
    s = p._rows(preds, 1)
    assert s.header == header and s.as_csv() == csv


def test_json_a_prediction_unlike_the_first_is_an_error_naming_its_row():
    p = make(JsonProtocol, "json", {"path": "/p"})
    with pytest.raises(ModelError, match="prediction for data row 12 has 1 values"):
        p._rows([[1, 2], [3]], 11)


# ---------------------------------------------------------------- lambda
def test_lambda_events_wrap_the_record_as_the_image_expects():
    rec = {"a": 1.5, "b": None}
    assert wrap(rec, "body-string") == {"body": '{"a":1.5,"b":null}'}
    assert wrap(rec, "body-object") == {"body": rec}
    assert wrap(rec, "bare") == rec


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (
            {"statusCode": 200, "body": '{"prediction": {"label": "a"}}'},
            {"prediction": {"label": "a"}},
        ),
        ({"statusCode": 201, "body": {"x": 1}}, {"x": 1}),
        ({"statusCode": 200, "body": "setosa"}, "setosa"),
        ({"label": "a"}, {"label": "a"}),
        (
            {"statusCode": 400, "body": '{"message": "no petals"}'},
            RowsRefused('rejected data row 4 with 400: {"message": "no petals"}'),
        ),
        (
            {"statusCode": 503, "body": "busy"},
            # transient (a ModelUnavailable), unless the same 500 comes twice (issue 28)
            ServerError("answered 503 for data row 4: busy", status=503, answer="busy"),
        ),
        (
            {"errorMessage": "boom", "errorType": "KeyError"},
            RowsRefused("raised KeyError for data row 4: boom"),
        ),
        ({"statusCode": "ok", "body": ""}, ModelError("statusCode 'ok'")),
    ],
)
def test_lambda_answers_are_unwrapped(answer, outcome):
    if isinstance(outcome, Exception):
        with pytest.raises(type(outcome)) as err:
            LambdaProtocol._unwrap(answer, "data row 4")
        assert type(err.value) is type(outcome) and str(outcome) in str(err.value)
    else:
        assert LambdaProtocol._unwrap(answer, "data row 4") == outcome
