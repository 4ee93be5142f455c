"""The model's input contract (workers/scoring/contract/): what a catalog declares, an
MLflow signature, and the check of a file's first rows against it -- every misfit
listed beside the file's columns and what the model takes, with what would fix it."""

from __future__ import annotations

import json

import pytest

from scorefleet.errors import ContractMismatch, ModelError
from workers.scoring.batches import Batch
from workers.scoring.contract import (
    Column,
    Contract,
    declared,
    problems,
    require,
    sample_of,
    sample_of_schema,
)
from workers.scoring.contract import mlflow as mlflow_signature
from workers.scoring.formats import ReadLimits, registry
from workers.scoring.formats.select import Columns
from workers.scoring.formats.source import sample_head

IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
LIM = ReadLimits(max_bytes=1 << 20, max_group_bytes=1 << 26)


def iris(**flags: bool) -> Contract:
    return Contract(
        tuple(Column(n, "number") for n in IRIS),
        source="the test's contract",
        remedy="change the test",
        **flags,
    )


def csv_sample(text: str, columns: Columns | None = None, *, complete: bool = True):
    """What the launch preflight samples of a CSV file's first bytes."""
    fmt = registry.FORMATS["csv"]
    found = sample_head(fmt, text.encode(), complete, columns or Columns(), LIM)
    assert found is not None
    plan, named, batches, _ = found
    return sample_of(plan.input, plan.model, batches, named=named)


def jsonl_sample(lines: list[dict]):
    fmt = registry.FORMATS["jsonl"]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    plan, named, batches, _ = sample_head(fmt, data, True, Columns(), LIM)
    return sample_of(plan.input, plan.model, batches, named=named)


def whats(contract: Contract, sample) -> list[tuple[str, str]]:
    return [(p.what, p.column) for p in problems(contract, sample)]


def test_a_fitting_file_has_no_problem():
    sample = csv_sample("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,\n")
    assert problems(iris(closed=True, ordered=True), sample) == []
    require(iris(), sample)  # no raise


def test_a_missing_column_and_a_mistyped_one_are_both_named():
    sample = csv_sample("sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n4.9,abc,1.4\n")
    assert whats(iris(), sample) == [("missing", "petal_width"), ("mistyped", "sepal_width")]
    with pytest.raises(ContractMismatch) as err:
        require(iris(), sample)
    text = err.value.message
    assert "missing:  petal_width (the file has no such column)" in text
    assert "mistyped: sepal_width: 'abc' on data row 2 is not a number" in text
    assert "the file's columns: sepal_length, sepal_width, petal_length" in text
    assert "the model takes:    sepal_length (number), sepal_width (number)" in text
    assert "add petal_width to the file" in text and "change the test" in text
    assert err.value.kind == "ContractMismatch"


def test_extra_columns_only_when_the_contract_is_closed():
    sample = csv_sample("id,sepal_length,sepal_width,petal_length,petal_width\n7,1,2,3,4\n")
    assert problems(iris(), sample) == []
    assert whats(iris(closed=True), sample) == [("extra", "id")]
    with pytest.raises(ContractMismatch, match=r"tag the file drop_columns=id \(or model_columns="):
        require(iris(closed=True), sample)


def test_a_dropped_column_is_named_as_left_out_and_the_fix_is_the_tag():
    sample = csv_sample(
        "sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n",
        Columns(drop=("petal_width",)),
    )
    (p,) = problems(iris(), sample)
    assert p.what == "missing" and "leaves it out" in p.detail
    with pytest.raises(ContractMismatch) as err:
        require(iris(), sample)
    assert "stop leaving out petal_width" in err.value.message
    assert "the model is sent:  sepal_length, sepal_width, petal_length" in err.value.message


def test_order_matters_only_to_a_model_that_reads_by_position():
    sample = csv_sample("petal_width,sepal_length,sepal_width,petal_length\n4,1,2,3\n")
    assert problems(iris(), sample) == []
    assert whats(iris(ordered=True), sample) == [("order", "")]
    with pytest.raises(ContractMismatch, match="model_columns=sepal_length sepal_width"):
        require(iris(ordered=True), sample)


def test_types_of_a_typed_file_are_its_own():
    """JSON Lines keeps types: a number given as a string is text, not a number."""
    contract = Contract((Column("x", "number"), Column("n", "integer"), Column("s", "string")))
    ok = jsonl_sample([{"x": 1.5, "n": 2, "s": "a"}])
    assert problems(contract, ok) == []
    bad = jsonl_sample([{"x": "1.5", "n": 2.5, "s": 3}])
    assert whats(contract, bad) == [("mistyped", "x"), ("mistyped", "n"), ("mistyped", "s")]


def test_csv_values_are_text_the_model_reads():
    """In CSV every value is text: a number fits a string input, 'true' a boolean one,
    'nan' a number (the model parses it), '1.5' no integer."""
    contract = Contract(
        (
            Column("s", "string"),
            Column("b", "boolean"),
            Column("x", "number"),
            Column("n", "integer"),
        )
    )
    assert problems(contract, csv_sample("s,b,x,n\n7,true,nan,3\n")) == []
    assert whats(contract, csv_sample("s,b,x,n\n7,yes,1,1.5\n")) == [
        ("mistyped", "b"),
        ("mistyped", "n"),
    ]


def test_an_empty_value_where_the_model_takes_none():
    contract = Contract((Column("a", "integer", nullable=False), Column("b", "number")))
    sample = csv_sample("a,b\n1,\n,2\n")
    (p,) = problems(contract, sample)
    assert (p.what, p.column, p.detail) == ("empty", "a", "empty on data row 2")


def test_optional_columns_may_be_missing():
    contract = Contract((Column("a", "number"), Column("b", "number", required=False)))
    assert problems(contract, csv_sample("a\n1\n")) == []


def test_a_headerless_file_is_matched_by_position():
    sample = csv_sample("1,2,3\n4,5,x\n")
    assert not sample.named
    (count, typed) = problems(iris(), sample)
    assert count.what == "count" and "takes 4 column(s), the file gives 3" in count.detail
    assert (typed.what, typed.column) == ("mistyped", "column 3")
    with pytest.raises(ContractMismatch, match="give the file a header row") as err:
        require(iris(), sample)
    assert "the file's columns: 3, unnamed (no header row)" in err.value.message


def test_a_tensor_is_matched_by_position():
    tensor = Contract((Column("", "number"),) * 4, closed=True, positional=True)
    assert problems(tensor, csv_sample("a,b,c,d\n1,2,3,4\n")) == []
    assert whats(tensor, csv_sample("a,b,c\n1,2,3\n")) == [("count", "")]
    assert whats(tensor, csv_sample("a,b,c,d,e\n1,2,3,4,5\n")) == [("count", "")]
    with pytest.raises(ContractMismatch) as err:
        require(tensor, csv_sample("a,b,c\n1,2,3\n"))
    assert "the model takes:    4 column(s) by position, each (number)" in err.value.message


def test_a_parquet_footer_gives_types_and_empty_counts():
    import pyarrow as pa

    schema = pa.schema([("x", pa.string()), ("n", pa.int64()), ("y", pa.float32())])
    sample = sample_of_schema(["x", "n", "y"], ["x", "n", "y"], schema, {"n": 3})
    contract = Contract(
        (Column("x", "number"), Column("n", "number", nullable=False), Column("y", "number"))
    )
    assert whats(contract, sample) == [("mistyped", "x"), ("empty", "n")]


def test_the_first_bytes_are_cut_to_whole_rows():
    """The first 64 KiB end inside a row (inside a quoted field here): only whole rows
    are sampled."""
    text = 'a,b\n1,"x\ny"\n2,"cut'
    sample = csv_sample(text, complete=False)
    assert sample.rows == 1 and sample.values[1] == ((1, "x\ny"),)
    jsonl = registry.FORMATS["jsonl"]
    found = sample_head(jsonl, b'{"a": 1}\n{"a": 2}\n{"a": ', False, Columns(), LIM)
    assert found is not None and sum(b.rows for b in found[2]) == 2


def test_a_declared_contract_from_the_catalog():
    raw = {"columns": [{"name": "a", "type": "double"}, "b"], "closed": True}
    c = declared("reg/m:1", raw)
    assert c.columns == (Column("a", "number"), Column("b", "any")) and c.closed
    assert "reg/m:1" in c.source and "SCOREFLEET_MODEL_CATALOG" in c.remedy


# ------------------------------------------------------------------- MLflow
MLMODEL = """
artifact_path: model
flavors:
  python_function: {loader_module: mlflow.sklearn}
signature:
  inputs: '[{"type": "double", "name": "x", "required": true}, {"type": "long", "name":
    "n"}, {"type": "string", "name": "note", "required": false}, {"type": "boolean",
    "name": "flag", "optional": true}]'
  outputs: '[{"type": "long"}]'
"""


def test_an_mlflow_signature_is_a_contract():
    c = mlflow_signature.signature(MLMODEL, "m/MLmodel", "reg/m:1")
    assert c.columns == (
        Column("x", "number"),
        Column("n", "integer", nullable=False),
        Column("note", "string", required=False),
        Column("flag", "boolean", required=False, nullable=False),
    )
    assert not c.closed and not c.ordered and not c.positional
    assert "MLflow signature in m/MLmodel" in c.source


def test_an_mlflow_tensor_signature_is_positional():
    text = (
        'signature:\n  inputs: \'[{"type": "tensor", "tensor-spec": '
        '{"dtype": "float64", "shape": [-1, 3]}}]\'\n'
    )
    c = mlflow_signature.signature(text, "x", "reg/m:1")
    assert c.positional and c.columns == (Column("", "number"),) * 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("flavors: {}\n", "has no signature inputs"),
        ("signature: {inputs: '[{'}\n", "not JSON"),
        ("signature: [\n", "not YAML"),
    ],
)
def test_an_unreadable_mlmodel_names_the_catalog_entry(tmp_path, text, needle):
    path = tmp_path / "MLmodel"
    path.write_text(text)
    with pytest.raises(ModelError, match=needle) as err:
        mlflow_signature.load(str(path), image="reg/m:1")
    assert "inputs.mlflow for reg/m:1" in err.value.message
    with pytest.raises(ModelError, match="cannot be read"):
        mlflow_signature.load(str(tmp_path / "nowhere"), image="reg/m:1")


def test_an_mlmodel_is_found_in_its_folder_relative_to_cwd_and_read_again_when_changed(tmp_path):
    model = tmp_path / "models" / "iris"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text(MLMODEL)
    c = mlflow_signature.load("models/iris", image="reg/m:1", cwd=str(tmp_path))
    assert len(c.columns) == 4
    assert mlflow_signature.load("models/iris", image="reg/m:1", cwd=str(tmp_path)) is c
    (model / "MLmodel").write_text('signature:\n  inputs: \'[{"type": "long", "name": "n"}]\'\n')
    again = mlflow_signature.load("models/iris", image="reg/m:1", cwd=str(tmp_path))
    assert again.columns == (Column("n", "integer", nullable=False),)


def test_the_example_mlmodel_is_the_iris_models_features():
    from tests.helpers import REPO

    c = mlflow_signature.load(str(REPO / "examples" / "iris"), image="x")
    assert c.names == IRIS


def test_a_contract_survives_json():
    c = iris(closed=True, ordered=True)
    assert Contract.from_json(json.loads(json.dumps(c.to_json()))) == c


def test_a_batch_of_a_csv_without_header_is_sampled_by_position():
    batch = Batch(first_row=1, rows=2, span="data rows 1-2", columns=("", ""), csv=b"1,2\n3,4\n")
    sample = sample_of(("", ""), ("", ""), [batch], named=False)
    assert sample.values == (((1, 1), (2, 3)), ((1, 2), (2, 4)))
