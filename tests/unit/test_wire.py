"""Issue 25: the fast conversions (workers/scoring/protocols/wire.py: pyarrow and
orjson) give exactly what the reference conversions give -- Batch.as_rows/as_records,
V2Protocol.request, JsonProtocol.request_body, json.loads -- value for value and type
for type, or step aside (Fallback) for the reference to do it. Hypothesis generates
the mini-batches, with the cells where Python and the fast rules could differ."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorefleet.settings import ModelSpec
from workers.scoring.batches import Batch
from workers.scoring.protocols import CallLimits, open_protocol, wire
from workers.scoring.protocols.aws_lambda import wrap

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1 is not 1.0 nor True; floats bit for bit)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# ------------------------------------------------------------------ batches
#: cells where Python's int()/float() and a strict reading could part ways
TRICKY = [
    "",
    "0",
    "-0",
    "007",
    "+5",
    " 7",
    "7 ",
    "1_000",
    "1e5",
    "1E-7",
    ".5",
    "5.",
    "-.5",
    "inf",
    "-Infinity",
    "nan",
    "NaN",
    "1e400",
    "-1e400",
    "\u0661\u0662",
    "9" * 25,
    "9" * 5000,  # beyond Python's integer-string limit: json.loads refuses it (text)
    "\ufeffbom",  # U+FEFF opening a mini-batch: pyarrow drops it as a byte-order mark
    "0.0",
    "7.50",
    "-0.0",
    "9007199254740993",
    str(2**63),
    str(-(2**63)),
    str(2**63 - 1),
    "abc",
    "true",
    "null",
    "0x10",
    "1.5.2",
    "é",
    "12abc",
    "-",
    "e5",
    "5e",
    "1,5",
]
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.6e}"),
)
cells = st.one_of(
    numbers, st.sampled_from(TRICKY), st.text(alphabet="abc ,-.0123456789eE\u00e9", max_size=6)
)


@st.composite
def batches(draw: Any) -> Batch:
    width = draw(st.integers(1, 4))
    kinds = [draw(st.sampled_from(["int", "float", "mixed", "any"])) for _ in range(width)]
    rows = draw(st.integers(1, 12))

    def cell(kind: str) -> str:
        if kind == "int":
            return draw(st.one_of(st.integers(-(2**40), 2**40).map(str), st.just("")))
        if kind == "float":
            return draw(st.one_of(numbers, st.just("")))
        if kind == "mixed":
            return draw(st.one_of(numbers, st.sampled_from(TRICKY)))
        return draw(cells)

    records = [[cell(k) for k in kinds] for _ in range(rows)]
    lines = []
    for rec in records:
        fields = []
        for value in rec:
            if any(c in value for c in ',"\n\r'):
                value = '"' + value.replace('"', '""') + '"'
            fields.append(value)
        lines.append(",".join(fields) + "\n")
    names = tuple(draw(st.sampled_from(["a", "b", "c", "d", ""])) for _ in range(width))
    return Batch(1, rows, f"data rows 1-{rows}", names, csv="".join(lines).encode("utf-8"))


@SETTINGS
@given(batches())
def test_typed_columns_are_the_references_or_fall_back(batch: Batch) -> None:
    reference = batch.as_rows()
    try:
        fast = wire.rows_of(wire.values_of(wire.typed_columns(batch)))
    except wire.Fallback:
        return
    assert same(fast, reference), (batch.csv, fast, reference)


def plain(rows: int = 500) -> Batch:
    lines = "".join(f"{i},{i * 0.5 - 3.25},x{i}\n" for i in range(rows))
    return Batch(1, rows, "data rows", ("id", "x", "label"), csv=lines.encode())


def test_the_usual_batch_takes_the_fast_path():
    """Numbers, empty cells and text: no fallback, the reference's values."""
    lines = "".join(
        f"{i},{i * 0.5 - 3.25},{'' if i % 7 == 0 else i * 1e-9},x{i}\n" for i in range(500)
    )
    batch = Batch(1, 500, "data rows", ("id", "x", "y", "label"), csv=lines.encode())
    fast = wire.typed_columns(batch)
    assert [c.kind for c in fast] == ["int", "float", "float", "text"]
    assert [c.nulls for c in fast] == [False, False, True, False]
    assert same(wire.rows_of(wire.values_of(fast)), batch.as_rows())


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (["1", " 7"], "text"),  # int() reads ' 7'; JSON does not (issue 24)
        (["1.5", "1_0.5"], "text"),
        (["1", "inf"], "text"),
        (["1", "1e400"], "text"),  # not finite: no JSON number
        (["1", "2.5"], "float"),  # json reads 1 as an integer beside 2.5
        (["0", "0.0", "-1"], "float"),
    ],
)
def test_the_json_number_rule_is_the_fast_paths_own(column, kind):
    """Issue 24's rule (a column of JSON numbers, each as json.loads reads it, else
    text) needs no fallback: the fast path types these as the reference does."""
    batch = Batch(1, len(column), "r", ("a",), csv="".join(f"{c}\n" for c in column).encode())
    fast = wire.typed_columns(batch)
    assert fast[0].kind == kind
    assert same(wire.rows_of(wire.values_of(fast)), batch.as_rows())


@pytest.mark.parametrize("column", [[str(2**64), "1"], [str(2**64), "1.5"], ["9" * 5000, "1"]])
def test_an_integer_beyond_64_bits_is_left_to_the_reference(column):
    batch = Batch(1, len(column), "r", ("a",), csv="".join(f"{c}\n" for c in column).encode())
    with pytest.raises(wire.Fallback, match="beyond 64 bits"):
        wire.typed_columns(batch)


# -------------------------------------------------------------- protocols
def proto(protocol: str, options: dict[str, Any]) -> Any:
    spec = ModelSpec(image="t", protocol=protocol, extra={protocol: options})
    return open_protocol("http://127.0.0.1:1", spec, CallLimits())


V2_OPTIONS = [
    {"model_name": "m"},
    {"model_name": "m", "datatype": "FP32", "outputs": ["p"], "parameters": {"x": 1}},
    {"model_name": "m", "datatype": "INT64"},
    {"model_name": "m", "datatype": "BYTES"},
    {"model_name": "m", "layout": "columns", "datatypes": {"b": "BYTES", "a": "INT64"}},
]


@SETTINGS
@given(batches(), st.sampled_from(V2_OPTIONS))
def test_the_v2_request_is_the_references(batch: Batch, options: dict[str, Any]) -> None:
    p = proto("v2", options)
    try:
        fast = json.loads(p.fast_request(batch))
    except wire.Fallback:
        return
    reference = json.loads(json.dumps(p.request(batch), allow_nan=False))
    assert same(fast, reference), (batch.csv, fast, reference)


JSON_OPTIONS = [
    {"path": "/p"},
    {"path": "/p", "instances_as": "objects"},
    {"path": "/p", "request": "records"},
    {"path": "/p", "request": "dataframe_split"},
]


@SETTINGS
@given(batches(), st.sampled_from(JSON_OPTIONS))
def test_the_json_request_is_the_references(batch: Batch, options: dict[str, Any]) -> None:
    p = proto("json", options)
    try:
        fast = json.loads(wire.dumps(p.fast_body(batch)))
    except wire.Fallback:
        return
    reference = json.loads(json.dumps(p.request_body(batch)))
    assert same(fast, reference), (batch.csv, fast, reference)
    records, fast = p.records(batch)
    assert fast
    ours = [json.loads(wire.dumps(r)) for r in records]
    assert same(ours, json.loads(json.dumps(batch.as_records())))


def test_the_fast_requests_are_taken_for_the_usual_batch():
    batch = plain()
    v2 = proto("v2", {"model_name": "m", "layout": "columns", "datatypes": {"label": "BYTES"}})
    assert same(json.loads(v2.fast_request(batch)), json.loads(json.dumps(v2.request(batch))))
    j = proto("json", {"path": "/p", "instances_as": "objects"})
    assert same(json.loads(wire.dumps(j.fast_body(batch))), j.request_body(batch))


# ------------------------------------------------------------------ answers
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(json_values)
def test_an_answer_reads_as_the_json_module_reads_it(value: Any) -> None:
    for body in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        assert same(wire.loads(body), json.loads(body))
    assert same(json.loads(wire.dumps(value)), json.loads(json.dumps(value)))


def test_what_orjson_refuses_the_json_module_reads_or_refuses():
    assert math.isnan(wire.loads(b"[NaN]")[0])
    assert wire.loads(b"123456789012345678901234567890") == 123456789012345678901234567890
    with pytest.raises(ValueError):
        wire.loads(b"{not json")


@SETTINGS
@given(json_values.filter(lambda v: isinstance(v, dict)))
def test_a_lambda_event_carries_the_record_the_reference_carries(record: dict[str, Any]) -> None:
    ours = wrap(record, "body-string", lambda v: wire.dumps(v).decode())
    assert same(json.loads(ours["body"]), json.loads(wrap(record, "body-string")["body"]))


def test_a_number_beyond_fp32_is_left_to_the_reference_which_names_it():
    """The fast path sends a number column as it is only when the tensor's type holds
    every number (found by the generated batches after merging issue 24's FP32 check)."""
    from scorefleet.errors import RowsRefused

    p = proto("v2", {"model_name": "m", "datatype": "FP32"})
    batch = Batch(1, 1, "data rows 1-1", ("a", "b"), csv=b"0,3.402823466385289e+38\n")
    with pytest.raises(wire.Fallback):
        p.fast_request(batch)
    with pytest.raises(RowsRefused, match=r"column 'b'.*beyond the range of FP32"):
        p.request(batch)
    fits = Batch(1, 1, "data rows 1-1", ("a", "b"), csv=b"0,3.4028234663852886e+38\n")
    assert same(json.loads(p.fast_request(fits)), json.loads(json.dumps(p.request(fits))))


def test_a_value_opening_with_u_feff_is_left_to_the_reference():
    """The values oracle's long run found the fast path dropping U+FEFF from a
    mini-batch's first value (pyarrow takes it for a byte-order mark); the reference
    keeps it (issue 24's csvsplit.keep_bom)."""
    batch = Batch(1, 2, "data rows 1-2", ("a",), csv="\ufeffbom\nx\n".encode())
    with pytest.raises(wire.Fallback, match="U\\+FEFF"):
        wire.typed_columns(batch)
    assert batch.as_rows() == [["\ufeffbom"], ["x"]]
