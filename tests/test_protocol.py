"""The model protocol client against real HTTP servers on loopback."""

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.errors import ModelError, ModelUnavailable, is_transient
from workers.protocol import InvocationsClient, count_records


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
    client = InvocationsClient(
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
    ans = client.invoke(b"h\n1\n2\n3\n", 1, 3)
    assert ans.rows == 3 and ans.data == b"0\n1\n2\n" and ans.header is None
    assert client.ping()


def json_answer(n, body):
    return (
        200,
        "application/json",
        json.dumps({"predictions": [{"label": "a", "p": 0.5}, {"label": "b", "p": 1}]}).encode(),
    )


@pytest.mark.parametrize("server", [json_answer], indirect=True)
def test_json_answer_becomes_csv_with_header(server):
    client, _ = server
    ans = client.invoke(b"x\n1\n2\n", 1, 2)
    assert ans.data == b"a,0.5\nb,1\n" and ans.header == b"label,p\n"


def fail_once(n, body):
    return (500, "text/plain", b"boom") if n == 1 else echo(n, body)


@pytest.mark.parametrize("server", [fail_once], indirect=True)
def test_5xx_is_retried_then_succeeds(server):
    client, calls = server
    assert client.invoke(b"h\n1\n", 1, 1).rows == 1
    assert calls["n"] == 2


def always_503(n, body):
    return 503, "text/plain", b"overloaded"


@pytest.mark.parametrize("server", [always_503], indirect=True)
def test_persistent_5xx_is_transient(server):
    client, calls = server
    with pytest.raises(ModelUnavailable, match="HTTP 503") as err:
        client.invoke(b"h\n1\n", 1, 1)
    assert is_transient(err.value) and calls["n"] == 3


def bad_request(n, body):
    return 400, "text/plain", b"row 2: expected 4 columns, got 3"


@pytest.mark.parametrize("server", [bad_request], indirect=True)
def test_4xx_is_permanent_and_quotes_the_model(server):
    client, calls = server
    with pytest.raises(
        ModelError, match="rejected rows 11-12 with HTTP 400: row 2: expected 4"
    ) as err:
        client.invoke(b"h\n1\n2\n", 11, 2)
    assert not is_transient(err.value) and calls["n"] == 1


def too_few(n, body):
    return 200, "text/csv", b"1\n"


@pytest.mark.parametrize("server", [too_few], indirect=True)
def test_wrong_row_count_is_permanent(server):
    client, _ = server
    with pytest.raises(ModelError, match="answered 1 result rows for rows 1-2"):
        client.invoke(b"h\n1\n2\n", 1, 2)


def test_unreachable_model_is_transient():
    client = InvocationsClient("http://127.0.0.1:1", timeout=1, pool_size=1, backoff=0.01)
    assert not client.ping()
    with pytest.raises(ModelUnavailable):
        client.invoke(b"1\n", 1, 1)


def test_count_records_respects_quotes():
    assert count_records(b'a,"x\ny"\nb,c\n') == 2
    assert count_records(b"1\n2\n") == 2
