"""One stdlib model server that speaks every protocol, with ways to misbehave.

For the shared contract test (tests/test_protocol_contract.py) and the local
stack's end-to-end tests: it starts in ~50 ms and needs nothing installed.

    python tests/helpers/protocol_servers.py --port N [--mode MODE] [--delay S]

Its "model" answers, for each input row, ``score = 10 * <first field>`` and
``fields = <number of fields>``: any reordering, loss or duplication shows.

Modes: ok · refuse (400 with a message) · few (one result row too few) · fail-once
(503 to the first scoring call, then ok) · down (503 always) · hang (never answers
a scoring call) · huge (a 3 MiB answer) · die (exits 1 on the first scoring call,
after a log line). ``GET /stats`` answers the most requests it had in flight.
"""

from __future__ import annotations

import argparse
import csv
import email.parser
import email.policy
import io
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LAMBDA_PATH = "/2015-03-31/functions/function/invocations"
STATE: dict[str, Any] = {"calls": 0, "in_flight": 0, "max_in_flight": 0, "executions": {}}
LOCK = threading.Lock()


def score_values(values: list[Any]) -> dict[str, Any]:
    first = values[0] if values else None
    try:
        score: Any = round(10 * float(first), 6)
    except (TypeError, ValueError):
        score = None
    return {"score": score, "fields": len(values)}


def csv_rows(body: bytes) -> tuple[list[str] | None, list[list[str]]]:
    rows = [r for r in csv.reader(io.StringIO(body.decode("utf-8"), newline="")) if r]
    if rows and rows[0] and not _numeric(rows[0][0]):
        return rows[0], rows[1:]
    return None, rows


def multipart_file(ctype: str, body: bytes, field: str = "file") -> bytes | None:
    """The content of form field ``field`` if it is a file whose name ends .csv."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body
    )
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") != field:
            continue
        name = part.get_filename() or ""
        return part.get_payload(decode=True) if name.endswith(".csv") else None
    return None


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Handler(BaseHTTPRequestHandler):
    mode = "ok"
    delay = 0.0
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one small answer per call: no delayed-ACK stall

    def log_message(self, *args: Any) -> None:
        pass

    # ------------------------------------------------------------ helpers
    def _send(self, status: int, body: bytes | str | Any, ctype: str = "application/json") -> None:
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _misbehave(self) -> bool:
        """The scoring call's failure mode; True when it answered already."""
        with LOCK:
            STATE["calls"] += 1
            calls = STATE["calls"]
        if self.delay:
            time.sleep(self.delay)
        mode = self.mode
        if mode == "die":
            print("model: loading weights failed: out of memory", file=sys.stderr, flush=True)
            os._exit(1)
        if mode == "hang":
            time.sleep(3600)
        if mode == "down" or (mode == "fail-once" and calls == 1):
            self._send(503, {"error": "model is overloaded"})
            return True
        if mode == "refuse":
            error = {"error": "feature sepal_length: expected a number"}
            if self.path == LAMBDA_PATH:  # the handler's answer, through the emulator
                self._send(200, {"statusCode": 400, "body": json.dumps(error)})
            else:
                self._send(400, error)
            return True
        if mode == "huge":
            self._send(200, b"x" * (3 * 1024 * 1024), "text/csv")
            return True
        return False

    def _answers(self, rows: list[list[Any]]) -> list[dict[str, Any]]:
        out = [score_values(r) for r in rows]
        return out[:-1] if self.mode == "few" else out

    # -------------------------------------------------------------- verbs
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/stats":
            return self._send(200, dict(STATE, executions=len(STATE["executions"])))
        if path == "/":
            return self._send(200, "pong", "text/plain")
        if path == "/ping":  # the SAS servers answer 500 here; this one serves sagemaker too
            return self._send(200, "ok", "text/plain")
        if path in ("/v2/health/ready", "/v2/models/fake/ready", "/health"):
            return self._send(200, {"ready": True})
        if path.startswith("/query/"):
            return self._query(path)
        return self._send(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        with LOCK:
            STATE["in_flight"] += 1
            STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
        try:
            self._post()
        finally:
            with LOCK:
                STATE["in_flight"] -= 1

    def _post(self) -> None:
        path = self.path.split("?")[0]
        body = self._body()
        if self._misbehave():
            return
        if path == "/invocations":
            _, rows = csv_rows(body)
            text = "".join(f"{a['score']},{a['fields']}\n" for a in self._answers(rows))
            return self._send(200, "score,fields\n" + text, "text/csv")
        if path == "/v2/models/fake/infer":
            return self._v2(json.loads(body))
        if path == "/predict":
            req = json.loads(body)
            rows = req["instances"] if isinstance(req, dict) else req
            rows = [list(r.values()) if isinstance(r, dict) else r for r in rows]
            return self._send(200, {"predictions": self._answers(rows)})
        if path == "/predict-one":
            return self._send(200, {"prediction": score_values(list(json.loads(body).values()))})
        if path == LAMBDA_PATH:
            event = json.loads(body)
            record = event["body"]
            record = json.loads(record) if isinstance(record, str) else record
            answer = {"prediction": score_values(list(record.values()))}
            return self._send(200, {"statusCode": 200, "body": json.dumps(answer)})
        if path == "/executions":
            return self._execution(body)
        return self._send(404, {"error": f"no route {path}"})

    def _v2(self, req: dict[str, Any]) -> None:
        tensor = req["inputs"][0]
        rows_n, width = tensor["shape"]
        data = tensor["data"]
        rows = [data[i * width : (i + 1) * width] for i in range(rows_n)]
        answers = self._answers(rows)
        self._send(
            200,
            {
                "model_name": "fake",
                "outputs": [
                    {
                        "name": "score",
                        "shape": [len(answers)],
                        "datatype": "FP64",
                        "data": [a["score"] for a in answers],
                    },
                    {
                        "name": "fields",
                        "shape": [len(answers), 1],
                        "datatype": "INT64",
                        "data": [a["fields"] for a in answers],
                    },
                ],
            },
        )

    def _execution(self, body: bytes) -> None:
        upload = multipart_file(self.headers["Content-Type"], body)
        if upload is None:
            return self._send(400, {"error": "upload a .csv file in the form field 'file'"})
        header, rows = csv_rows(upload)
        answers = self._answers(rows)
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow([*(header or [f"c{i}" for i in range(len(rows[0]))]), "P_score", "fields"])
        for r, a in zip(rows, answers, strict=False):
            w.writerow([*r, a["score"], a["fields"]])
        token = uuid.uuid4().hex
        with LOCK:
            STATE["executions"][token] = {
                "ready_at": time.monotonic() + 0.1,
                "csv": out.getvalue(),
                "log": f"NOTE: scored {len(rows)} rows\nNOTE: execution {token} done\n",
            }
        self._send(201, {"id": token})

    def _query(self, path: str) -> None:
        parts = path.split("/")
        ex = STATE["executions"].get(parts[2])
        if ex is None:
            return self._send(404, {"error": "no such execution"})
        if len(parts) > 3 and parts[3] == "log":
            return self._send(200, ex["log"], "text/plain")
        if time.monotonic() < ex["ready_at"]:
            return self._send(404, {"error": "not ready"})
        self.send_response(200)
        data = ex["csv"].encode()
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Disposition", 'attachment; filename="scored.csv"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(
    port: int, mode: str = "ok", delay: float = 0.0, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    handler = type("H", (Handler,), {"mode": mode, "delay": delay})
    srv = ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    return srv


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", default="ok")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    srv = serve(a.port, a.mode, a.delay, a.host)
    print(f"listening on {a.port} ({a.mode})", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
