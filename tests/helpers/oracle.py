"""The values oracle's parts (tests/unit/test_values_oracle.py): echo models of both
protocol families on loopback, the formats' reference readers, and what "the same
value" means across a crossing (docs/formats.md, "Values")."""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyarrow.parquet as pq

from workers.scoring.values import json_number

# ------------------------------------------------------------------ models


@dataclass
class Echo:
    """Both echo models on one server: ``POST /invocations`` (the SageMaker CSV
    contract: answers the data rows it was sent, header dropped) and ``POST
    /predict`` (JSON: answers ``{"predictions": instances}``). Each request body is
    kept, in arrival order."""

    port: int = 0
    csv_bodies: list[bytes] = field(default_factory=list)
    json_bodies: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.csv_bodies.clear()
        self.json_bodies.clear()


def first_record_end(data: bytes) -> int:
    pos, in_quotes = 0, False
    while (nl := data.find(b"\n", pos)) >= 0:
        if data.count(b'"', pos, nl) % 2:
            in_quotes = not in_quotes
        if not in_quotes:
            return nl + 1
        pos = nl + 1
    return len(data)


def echo_server() -> Iterator[Echo]:
    echo = Echo()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, ctype: str, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send("text/plain", b"pong")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/invocations":
                with lock:
                    echo.csv_bodies.append(body)
                self._send("text/csv", body[first_record_end(body) :])
                return
            request = json.loads(body)
            with lock:
                echo.json_bodies.append(request)
            answer = {"predictions": request["instances"]}
            self._send("application/json", json.dumps(answer).encode())

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    echo.port = srv.server_port
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield echo
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def received(echo: Echo, family: str, columns: list[str]) -> list[list[Any]]:
    """What the model was sent, row by row, in order (one request at a time): CSV
    cells as text (the csv module), JSON values (the json module)."""
    rows: list[list[Any]] = []
    if family == "csv":
        for body in echo.csv_bodies:
            records = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
            rows += records[1:]
        return rows
    for request in echo.json_bodies:
        rows += [[r.get(c) for c in columns] for r in request["instances"]]
    return rows


def json_requests(echo: Echo, columns: list[str]) -> list[list[list[Any]]]:
    return [[[r.get(c) for c in columns] for r in req["instances"]] for req in echo.json_bodies]


# ---------------------------------------------------------- reference readers
def reference(data: bytes, fmt: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The file's columns and rows as its format's reference reader reads them."""
    if fmt == "csv":
        text = data.decode("utf-8-sig")
        records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        names = records[0]
        return names, [dict(zip(names, r, strict=True)) for r in records[1:]]
    if fmt == "jsonl":
        objects = [json.loads(line) for line in data.split(b"\n") if line.strip()]
        names = list(dict.fromkeys(k for o in objects for k in o))
        return names, [{n: o.get(n) for n in names} for o in objects]
    table = pq.read_table(io.BytesIO(data))
    return table.column_names, table.to_pylist()


def read_output(data: bytes, fmt: str) -> tuple[list[str] | None, list[list[Any]]]:
    """The output's column names (None: a CSV without a header) and rows."""
    if fmt == "csv":
        records = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        return None, records  # the caller knows whether the first one is a header
    if fmt == "jsonl":
        objects = [json.loads(line) for line in data.split(b"\n") if line.strip()]
        names = list(objects[0]) if objects else []
        return names, [list(o.values()) for o in objects]
    table = pq.read_table(io.BytesIO(data))
    return table.column_names, [list(r.values()) for r in table.to_pylist()]


# ------------------------------------------------------------- sameness
def same_number(a: Any, b: Any) -> bool:
    """Two numbers of equal value: exact (a 64-bit id is not 'close'), the sign of a
    zero kept between floats, NaN equal to NaN."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return False
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if (isinstance(a, float) and not math.isfinite(a)) or (
        isinstance(b, float) and not math.isfinite(b)
    ):
        return False
    return Fraction(a) == Fraction(b)


def same(a: Any, b: Any) -> bool:
    """The same JSON/Arrow value (numbers by :func:`same_number`)."""
    if isinstance(a, int | float) and not isinstance(a, bool):
        return same_number(a, b)
    return type(a) is type(b) and a == b


def text_means(text: str, value: Any) -> bool:
    """``text`` (a CSV cell) is how ``value`` is written as CSV: empty for null,
    true/false, digits, a float's text that reads back to it, a string as it is."""
    if value is None:
        return text == ""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int):
        if text == str(value):
            return True
        try:  # in a column of doubles (beside fractions, within 2**53): 1e+10
            return same_number(float(text), value)
        except ValueError:
            return False
    if isinstance(value, float):
        try:
            return same_number(float(text), value)
        except ValueError:
            return False
    if isinstance(value, bytes):
        return text == value.decode("utf-8")
    return text == value


def json_means(got: Any, text: str) -> bool:
    """``got`` (a JSON value) is a CSV cell's ``text`` by the typing rule: the text,
    the number json reads from it, or null for an empty cell."""
    if text == "" and got is None:
        return True
    if isinstance(got, str):
        return got == text
    number = json_number(text)
    return number is not None and same_number(got, number)
