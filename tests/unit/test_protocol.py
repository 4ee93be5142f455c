"""The model protocol client against real HTTP servers on loopback."""

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scorefleet.errors import ModelError, ModelUnavailable, RowsRefused, is_transient
from tests.helpers.protocols import invoke, sagemaker
from workers.scoring.protocols.sagemaker import count_records


def serve(respond: Callable[[int, bytes], tuple[int, str, bytes]]):
    calls = {"n": 0}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls["n"] += 1
            status, ctype, out = respond(calls["n"], body)
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, calls


@pytest.fixture
def server(request):
    srv, calls = serve(request.param)
    client = sagemaker(
        f"http://127.0.0.1:{srv.server_port}",
        timeout=5,
        pool_size=2,
        response_header=getattr(request, "header", False),
        backoff=0.01,
    )
    yield client, calls
    client.close()
    srv.shutdown()
    srv.server_close()


def echo(n, body):
    rows = [r for r in body.decode().splitlines() if r][1:]
    return 200, "text/csv", "".join(f"{i}\n" for i, _ in enumerate(rows)).encode()


@pytest.mark.parametrize("server", [echo], indirect=True)
def test_csv_answer(server):
    client, _ = server
    ans = invoke(client, b"h\n1\n2\n3\n", 1, 3)
    assert ans.rows == 3 and ans.csv == b"0\n1\n2\n" and ans.header is None
    assert client.ready(2.0)


def json_answer(n, body):
    return (
        200,
        "application/json",
        json.dumps({"predictions": [{"label": "a", "p": 0.5}, {"label": "b", "p": 1}]}).encode(),
    )


@pytest.mark.parametrize("server", [json_answer], indirect=True)
def test_json_answer_becomes_csv_with_header(server):
    client, _ = server
    ans = invoke(client, b"x\n1\n2\n", 1, 2)
    assert ans.as_csv() == b"a,0.5\nb,1\n" and ans.header == ("label", "p")
    assert ans.header_line() == b"label,p\n"


def fail_once(n, body):
    return (500, "text/plain", b"boom") if n == 1 else echo(n, body)


@pytest.mark.parametrize("server", [fail_once], indirect=True)
def test_5xx_is_retried_then_succeeds(server):
    client, calls = server
    assert invoke(client, b"h\n1\n", 1, 1).rows == 1
    assert calls["n"] == 2


def always_503(n, body):
    return 503, "text/plain", b"overloaded"


@pytest.mark.parametrize("server", [always_503], indirect=True)
def test_persistent_5xx_is_transient(server):
    client, calls = server
    with pytest.raises(ModelUnavailable, match="HTTP 503") as err:
        invoke(client, b"h\n1\n", 1, 1)
    assert is_transient(err.value) and calls["n"] == 3


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/main.py", line 42, in predict\n'
    "    x = float(row['petal_width'])\n"
    "ValueError: could not convert string to float: ''\n"
)


def raises_every_time(n, body):
    """A FastAPI/Flask model with a bug: its exception as a 500, every time (with
    what varies between two answers of one error: a request number, an address)."""
    return 500, "text/plain", f"request {n} at 0x7f{n:08x}\n{TRACEBACK}".encode()


@pytest.mark.parametrize("server", [raises_every_time], indirect=True)
def test_the_same_500_twice_is_a_model_bug_not_retried_with_its_traceback(server):
    """Issue 28, item 2: the same traceback six times, 52 s before the .error. Now the
    second identical answer ends it: permanent (no task retry), the whole traceback
    kept in its message (the .error's), one line first."""
    client, calls = server
    with pytest.raises(RowsRefused) as err:
        invoke(client, b"h\n1\n2\n", 1, 2)
    assert not is_transient(err.value) and calls["n"] == 2
    message = str(err.value)
    first, *rest = message.splitlines()
    assert "answered HTTP 500 twice in a row with the same error" in first
    assert rest[-1] == "ValueError: could not convert string to float: ''"
    assert "    x = float(row['petal_width'])" in rest


def different_500s(n, body):
    return 500, "text/plain", [b"database locked", b"out of memory", b"worker lost"][n % 3]


@pytest.mark.parametrize(
    "server", [always_503, different_500s, lambda n, b: (502, "", b"bad gateway")], indirect=True
)
def test_busy_answers_and_changing_errors_stay_transient(server):
    client, calls = server
    with pytest.raises(ModelUnavailable) as err:
        invoke(client, b"h\n1\n", 1, 1)
    assert is_transient(err.value) and calls["n"] == 3


def too_many_requests(n, body):
    return 429, "text/plain", b"slow down"


@pytest.mark.parametrize("server", [too_many_requests], indirect=True)
def test_429_stays_transient(server):
    client, calls = server
    with pytest.raises(ModelUnavailable, match="HTTP 429"):
        invoke(client, b"h\n1\n", 1, 1)
    assert calls["n"] == 3


def test_a_long_traceback_keeps_its_end():
    from workers.scoring.protocols.calls import MAX_ANSWER_KEPT, kept_answer

    answer = "\n".join(f"  frame {i}" for i in range(2000)) + "\nKeyError: 'x'"
    kept = kept_answer(answer)
    assert len(kept) <= MAX_ANSWER_KEPT + 40 and kept.endswith("KeyError: 'x'")
    assert kept.startswith("[... ") and "lines before]" in kept.splitlines()[0]


def test_connection_refused_while_scaling_stays_transient():
    client = sagemaker("http://127.0.0.1:1", timeout=2, pool_size=1, backoff=0.01)
    with pytest.raises(ModelUnavailable) as err:
        invoke(client, b"h\n1\n", 1, 1)
    assert is_transient(err.value)
    client.close()


def bad_request(n, body):
    return 400, "text/plain", b"row 2: expected 4 columns, got 3"


@pytest.mark.parametrize("server", [bad_request], indirect=True)
def test_4xx_is_permanent_and_quotes_the_model(server):
    client, calls = server
    with pytest.raises(
        ModelError, match="rejected data rows 11-12 with HTTP 400: row 2: expected 4"
    ) as err:
        invoke(client, b"h\n1\n2\n", 11, 2)
    assert not is_transient(err.value) and calls["n"] == 1
    # the model's "row 2" is relative to its mini-batch: the message says where that starts
    assert "its row 1 is data row 11 of the file" in str(err.value)


def too_few(n, body):
    return 200, "text/csv", b"1\n"


@pytest.mark.parametrize("server", [too_few], indirect=True)
def test_wrong_row_count_is_permanent(server):
    client, _ = server
    with pytest.raises(ModelError, match="answered 1 result rows for data rows 1-2"):
        invoke(client, b"h\n1\n2\n", 1, 2)


def test_unreachable_model_is_transient():
    client = sagemaker("http://127.0.0.1:1", timeout=1, pool_size=1, backoff=0.01)
    assert not client.ready(2.0)
    with pytest.raises(ModelUnavailable):
        invoke(client, b"1\n", 1, 1)


def test_count_records_respects_quotes():
    assert count_records(b'a,"x\ny"\nb,c\n') == 2
    assert count_records(b"1\n2\n") == 2


# --------------------------------------- issue 10 item 5: deadline, size, type
def start_fakemodel(*args):
    import subprocess
    import sys

    from tests.helpers import FAKEMODEL
    from workers.localstack.stack import free_port, stop_process, wait_http

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FAKEMODEL), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/ping", 10)
    return f"http://127.0.0.1:{port}", lambda: stop_process(proc, grace=2)


def test_a_model_that_drips_its_answer_is_cut_off_at_the_deadline():
    """Reported: one byte every 1.5 s held a batch for 6 s with a 2 s timeout (and
    could for hours). 4 rows answer 16 bytes: 24 s of dripping."""
    import time

    url, stop = start_fakemodel("--mode", "drip", "--delay", "1.5")
    client = sagemaker(url, timeout=2, pool_size=1, attempts=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailable, match=r"within 2s \(SCOREFLEET_MODEL_TIMEOUT"):
            invoke(client, b"a,b\n1,2\n3,4\n5,6\n7,8\n", 1, 4)
        took = time.monotonic() - t0
        assert took < 8, f"the call took {took:.1f}s with a 2 s deadline"
        assert client.ready(2.0)  # the pool is still usable
    finally:
        client.close()
        stop()


def test_a_model_that_drips_its_headers_is_cut_off_too():
    import socket
    import time

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    stop = threading.Event()

    def drip():
        conn, _ = lsock.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\n":
            if stop.wait(1.0):
                break
            try:
                conn.send(bytes([byte]))
            except OSError:
                break
        conn.close()

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    client = sagemaker(
        f"http://127.0.0.1:{lsock.getsockname()[1]}", timeout=1.5, pool_size=1, attempts=1
    )
    try:
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailable, match=r"within 1\.5s"):
            invoke(client, b"a\n1\n", 1, 1)
        assert time.monotonic() - t0 < 6
    finally:
        stop.set()
        client.close()
        lsock.close()


def huge_one_row(n, body):
    return 200, "text/csv", b"x" * (3 * 1024 * 1024) + b"\n"


@pytest.mark.parametrize("server", [huge_one_row], indirect=True)
def test_an_answer_larger_than_the_cap_is_refused(server):
    client, _ = server
    with pytest.raises(ModelError, match="SCOREFLEET_MAX_ANSWER_RATIO"):
        invoke(client, b"a\n1\n", 1, 1)


def test_an_answer_without_length_is_capped_while_it_streams():
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no Content-Length: the body ends with the connection

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.end_headers()
            try:
                for _ in range(200):  # 200 MiB if nobody stops reading
                    self.wfile.write(b"y" * (1024 * 1024))
                self.wfile.write(b"\n")
            except OSError:
                pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    client = sagemaker(f"http://127.0.0.1:{srv.server_port}", timeout=30, pool_size=1, attempts=1)
    try:
        with pytest.raises(ModelError, match=r"more than [\d,]+ bytes"):
            invoke(client, b"a\n1\n", 1, 1)
    finally:
        client.close()
        srv.shutdown()
        srv.server_close()


def untyped(n, body):
    return 200, "", b"1\n"


def typed(ctype):
    def respond(n, body):
        return 200, ctype, b"1\n"

    return respond


@pytest.mark.parametrize(
    "server",
    [untyped, typed("application/octet-stream"), typed("text/plain"), typed("text/html")],
    indirect=True,
)
def test_an_answer_without_a_usable_content_type_is_not_read_as_csv(server):
    client, _ = server
    with pytest.raises(ModelError, match="must answer text/csv or application/json"):
        invoke(client, b"a\n1\n", 1, 1)


@pytest.mark.parametrize("server", [typed("text/plain; charset=utf-8")], indirect=True)
def test_the_catalog_can_name_the_format_of_a_mislabelled_model(server):
    client, _ = server
    relabelled = sagemaker(client.endpoint, response_format="csv")
    try:
        assert invoke(relabelled, b"a\n1\n", 1, 1).csv == b"1\n"
    finally:
        relabelled.close()
