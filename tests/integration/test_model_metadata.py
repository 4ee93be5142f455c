"""A model's own contract, read once it is ready (the v2 protocol's metadata,
``GET /v2/models/{name}``), and checked against the first mini-batch before it is
sent; and a declared contract from an MLflow model's MLmodel file in S3.

The v2 server here is a few lines of stdlib on 127.0.0.1 that counts the inference
requests it gets (the end-to-end tests run MLServer itself: tests/e2e/test_contract_e2e.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scorefleet.errors import ContractMismatch, ModelError
from scorefleet.settings import ModelSpec
from workers.scoring.contract import Column
from workers.scoring.contract import mlflow as mlflow_signature
from workers.scoring.engine import score_stream
from workers.scoring.formats import ReadLimits, registry, stream_reader
from workers.scoring.formats.select import Columns
from workers.scoring.preview import first_batch_check
from workers.scoring.protocols import CallLimits
from workers.scoring.protocols.v2 import V2Protocol

TENSOR = [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]


class Model:
    """What the fake v2 server answers to GET /v2/models/m, and what it was asked."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] | None = {"name": "m", "inputs": TENSOR}
        self.infers = 0
        self.gets: list[str] = []


@pytest.fixture
def v2() -> Iterator[tuple[str, Model]]:
    model = Model()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            model.gets.append(self.path)
            if self.path == "/v2/models/m" and model.metadata is not None:
                self._send(200, model.metadata)
            elif self.path.endswith("/ready"):
                self._send(200, {})
            else:
                self._send(404, {"error": "no such model"})

        def do_POST(self) -> None:
            model.infers += 1
            length = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(length))
            rows = req["inputs"][0]["shape"][0]
            self._send(200, {"outputs": [{"name": "p", "shape": [rows], "data": [1] * rows}]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", model
    finally:
        server.shutdown()
        server.server_close()


def client(url: str, **options: Any) -> V2Protocol:
    spec = ModelSpec(image="reg/m:1", protocol="v2", extra={"v2": {"model_name": "m", **options}})
    return V2Protocol(url, spec, CallLimits(timeout=5))


def test_a_tensor_input_is_a_positional_contract(v2):
    url, model = v2
    contract = client(url).model_contract()
    assert contract is not None and contract.positional and contract.closed
    assert contract.columns == (Column("", "number"),) * 4
    assert "GET /v2/models/m" in contract.source
    assert model.gets == ["/v2/models/m"]


def test_columns_inputs_are_matched_by_name(v2):
    url, model = v2
    model.metadata = {
        "inputs": [
            {"name": "age", "datatype": "INT64", "shape": [-1]},
            {"name": "city", "datatype": "BYTES", "shape": [-1]},
        ]
    }
    c = client(url, layout="columns", datatypes={"age": "INT64", "city": "BYTES"})
    contract = c.model_contract()
    assert contract is not None and not contract.positional
    assert contract.columns == (Column("age", "integer", nullable=False), Column("city", "any"))


@pytest.mark.parametrize(
    ("metadata", "options", "needle"),
    [
        (
            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}]},
            {},
            "lists its inputs 'x', not 'input-0'",
        ),
        (
            {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]},
            {},
            "is FP32, but the model catalog sends FP64 for reg/m:1: set v2.datatype to FP32",
        ),
        (
            {"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1]}]},
            {"layout": "columns"},
            "set v2.datatypes.a to FP32",
        ),
    ],
)
def test_metadata_that_contradicts_the_catalog_says_which_option_to_set(
    v2, metadata, options, needle
):
    url, model = v2
    model.metadata = metadata
    with pytest.raises(ContractMismatch, match=needle.replace(".", r"\.").replace("(", r"\(")):
        client(url, **options).model_contract()


@pytest.mark.parametrize("metadata", [None, {"name": "m", "inputs": []}, {"inputs": TENSOR[:0]}])
def test_no_inputs_no_contract(v2, metadata):
    url, model = v2
    model.metadata = metadata
    assert client(url).model_contract() is None


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@pytest.mark.parametrize(
    ("body", "fits"), [(b"a,b,c\n1,2,3\n", False), (b"a,b,c,d\n1,2,3,4\n", True)]
)
def test_a_file_that_does_not_fit_is_stopped_before_the_first_mini_batch(v2, body, fits):
    """The score step's check (workers/scoring/preview.py): the first mini-batch is
    checked against the model's metadata before it is sent, so the model never sees it."""
    url, model = v2
    lim = ReadLimits(max_bytes=1 << 20, max_group_bytes=1 << 26)
    reader = stream_reader(registry.FORMATS["csv"], [body], Columns(), lim)
    proto = client(url)
    contract = proto.model_contract()
    assert contract is not None
    try:
        run = lambda: score_stream(  # noqa: E731
            reader,
            proto.score,
            Sink(),
            registry.FORMATS["csv"],
            max_in_flight=2,
            before_first=first_batch_check([contract], reader),
        )
        if fits:
            assert run().rows == 1 and model.infers == 1
        else:
            with pytest.raises(ContractMismatch, match="takes 4 column"):
                run()
            assert model.infers == 0
    finally:
        proto.close()


def test_an_mlmodel_in_s3(s3, bucket):
    text = 'signature:\n  inputs: \'[{"type": "double", "name": "x"}]\'\n'
    s3.put_object(Bucket=bucket, Key="mlflow/1/abc/artifacts/model/MLmodel", Body=text.encode())
    ref = f"s3://{bucket}/mlflow/1/abc/artifacts/model"
    c = mlflow_signature.load(ref, image="r/m:1", s3=s3)
    assert c.names == ("x",) and f"s3://{bucket}/mlflow/1/abc/artifacts/model/MLmodel" in c.source
    with pytest.raises(ModelError, match="NoSuchKey"):
        mlflow_signature.load(f"s3://{bucket}/nothing/MLmodel", image="r/m:1", s3=s3)
