"""The guarantees every model protocol shares, as one test parametrised over all.

Against tests/helpers/protocol_servers.py (one stdlib server speaking every protocol, with
ways to misbehave), each protocol must: answer one result row per input row in
order; sort a refusal of the rows (4xx, wrong row count) as RowsRefused with the
server's message, overload and death as ModelUnavailable; retry a transient failure;
keep the total deadline per mini-batch; cap the answer; keep at most pool_size
requests in flight; and tell ready from not ready.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3

from scorefleet.errors import ModelError, ModelUnavailable, RowsRefused, is_transient
from scorefleet.settings import ModelSpec
from workers.localstack.stack import free_port, stop_process, wait_http
from workers.scoring.batches import Batch, span_of
from workers.scoring.protocols import PROTOCOLS, CallLimits, open_protocol

SERVER = Path(__file__).resolve().parents[1] / "helpers" / "protocol_servers.py"

#: (case id, protocol, its catalog options, its options at the top level of the
#: entry (sagemaker's, as catalogs have always written them), the answer's
#: column names, whether the model sees one record per request)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], tuple[str, ...], bool]] = [
    ("sagemaker", "sagemaker", {}, {"response_header": True}, ("score", "fields"), False),
    ("v2", "v2", {"model_name": "fake", "datatype": "BYTES"}, {}, ("score", "fields_0"), False),
    (
        "json-instances",
        "json",
        {"path": "/predict", "ready_path": "/health", "instances_as": "objects"},
        {},
        ("score", "fields"),
        False,
    ),
    (
        "json-single",
        "json",
        {"path": "/predict-one", "request": "single", "response": "prediction"},
        {},
        ("score", "fields"),
        True,
    ),
    ("lambda", "lambda", {"response": "prediction"}, {}, ("score", "fields"), True),
    (
        "sas-executions",
        "sas-executions",
        {"columns": ["P_score", "fields"]},
        {},
        ("P_score", "fields"),
        False,
    ),
]
IDS = [c[0] for c in CASES]
BATCHES = [c for c in CASES if not c[5]]  # protocols that send many rows per request


def test_every_protocol_is_in_the_contract():
    assert {c[1] for c in CASES} == set(PROTOCOLS)


class Server:
    def __init__(self, mode: str, delay: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVER),
                "--port",
                str(self.port),
                "--mode",
                mode,
                "--delay",
                str(delay),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"{self.url}/", 10)

    def stats(self) -> dict[str, Any]:
        return json.loads(urllib3.request("GET", f"{self.url}/stats", timeout=5).data)

    def stop(self) -> None:
        stop_process(self.proc, grace=2)


@pytest.fixture
def server(request):
    mode, delay = request.param if isinstance(request.param, tuple) else (request.param, 0.0)
    srv = Server(mode, delay)
    yield srv
    srv.stop()


def protocol(case, url, **limits):
    _, name, options, spec_keys, _, _ = case
    entry = {**PROTOCOLS[name].as_entry(options), **spec_keys}
    spec = ModelSpec(image="test/fake:1", protocol=name, extra=entry)
    limits = {"timeout": 10.0, "pool_size": 4, "attempts": 3, "backoff": 0.01, **limits}
    return open_protocol(url, spec, CallLimits(**limits))


def batch(rows: int, first_row: int = 1) -> Batch:
    data = "".join(f"{i},{i % 3}.5,x{i}\n" for i in range(first_row, first_row + rows))
    return Batch(
        first_row,
        rows,
        span_of(first_row, rows),
        ("a", "b", "c"),
        csv=data.encode(),
        csv_header=b"a,b,c\n",
    )


def answer_rows(scores) -> list[list[str]]:
    return list(csv.reader(io.StringIO(scores.as_csv().decode())))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["ok"], indirect=True)
def test_one_result_row_per_input_row_in_order(case, server):
    p = protocol(case, server.url)
    try:
        assert p.ready(2.0)
        scores = p.score(batch(40, first_row=11))
    finally:
        p.close()
    assert scores.rows == 40
    rows = answer_rows(scores)
    assert [float(r[0]) for r in rows] == [10.0 * i for i in range(11, 51)]
    assert {r[1] for r in rows} == {"3"}
    assert tuple(scores.header or ()) == case[4]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["refuse"], indirect=True)
def test_a_4xx_is_the_rows_refused_with_the_servers_message(case, server):
    p = protocol(case, server.url)
    try:
        with pytest.raises(RowsRefused, match=r"(HTTP )?400: .*expected a number") as err:
            p.score(batch(5, first_row=21))
    finally:
        p.close()
    assert not is_transient(err.value)
    assert "data row" in str(err.value)
    # never retried (one record per request: the first refusal stops the rest)
    calls = server.stats()["calls"]
    assert 1 <= calls <= 5 if case[5] else calls == 1


@pytest.mark.parametrize("case", BATCHES, ids=[c[0] for c in BATCHES])
@pytest.mark.parametrize("server", ["few"], indirect=True)
def test_a_wrong_row_count_is_the_rows_refused(case, server):
    p = protocol(case, server.url)
    try:
        with pytest.raises(
            RowsRefused, match=r"answered 4 result rows for data rows 1-5 \(5 rows\)"
        ):
            p.score(batch(5))
    finally:
        p.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["fail-once"], indirect=True)
def test_a_transient_failure_is_retried(case, server):
    p = protocol(case, server.url)
    try:
        assert p.score(batch(3)).rows == 3
    finally:
        p.close()
    assert server.stats()["calls"] >= 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["down"], indirect=True)
def test_an_overloaded_model_is_transient_after_the_attempts(case, server):
    p = protocol(case, server.url, attempts=2)
    try:
        with pytest.raises(ModelUnavailable, match="503") as err:
            p.score(batch(1))
    finally:
        p.close()
    assert is_transient(err.value) and server.stats()["calls"] == 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_the_deadline_is_for_the_whole_mini_batch(case, server):
    p = protocol(case, server.url, timeout=1.0, attempts=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(ModelUnavailable, match=r"within 1s \(SCOREFLEET_MODEL_TIMEOUT"):
            p.score(batch(6))
    finally:
        p.close()
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["huge"], indirect=True)
def test_the_answer_is_capped(case, server):
    p = protocol(case, server.url, attempts=1)
    try:
        with pytest.raises(ModelError, match="SCOREFLEET_MAX_ANSWER_RATIO"):
            p.score(batch(2))
    finally:
        p.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", [("ok", 0.15)], indirect=True)
def test_requests_in_flight_are_bounded_by_the_pool(case, server):
    p = protocol(case, server.url, pool_size=2)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            assert p.score(batch(3, first_row=1 + 3 * k)).rows == 3
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        p.close()
    assert not errors, errors
    assert 1 <= server.stats()["max_in_flight"] <= 2


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("server", ["die"], indirect=True)
def test_a_server_that_dies_is_transient_and_not_ready(case, server):
    p = protocol(case, server.url, attempts=1)
    try:
        with pytest.raises(ModelUnavailable) as err:
            p.score(batch(2))
        assert is_transient(err.value)
        server.proc.wait(5)
        assert not p.ready(1.0)
    finally:
        p.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_nothing_listening_is_not_ready_and_transient(case):
    p = protocol(case, f"http://127.0.0.1:{free_port()}", attempts=1, timeout=2.0)
    try:
        assert not p.ready(1.0)
        with pytest.raises(ModelUnavailable):
            p.score(batch(1))
    finally:
        p.close()
