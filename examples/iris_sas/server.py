"""An iris model behind the SAS-style executions contract (seed 000's containers).

    python examples/iris_sas/server.py --port 8080

* ``GET /`` answers ``pong`` once the model is loaded; ``GET /ping`` answers 500 (as
  those containers do: their readiness is ``GET /``).
* ``POST /executions`` (multipart form, field ``file``, a ``.csv`` file with a header
  naming the four iris features) answers ``201 {"id": "<token>"}``; 400 with a message
  for a missing file, a name not ending ``.csv``, or features missing from its header.
* ``GET /query/<token>``: 404 until the execution is done, then 200 with the scored
  CSV as an attachment -- the input's columns, then ``I_label`` (the class) and
  ``P_probability``; 500 with the error if the execution failed.
* ``GET /query/<token>/log``: the execution's log.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import threading
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "iris"))

from flask import Flask, Response, jsonify, request
from model import FEATURES, load_or_train

app = Flask(__name__)
EXECUTIONS: dict[str, dict[str, Any]] = {}
LOCK = threading.Lock()


def _log(ex: dict[str, Any], line: str) -> None:
    ex["log"].append(f"{time.strftime('%H:%M:%S')} NOTE: {line}")


def _score(token: str, header: list[str], rows: list[list[str]]) -> None:
    ex = EXECUTIONS[token]
    try:
        index = [header.index(f) for f in FEATURES]
        values = []
        for n, row in enumerate(rows, start=1):
            cells = [row[i] if i < len(row) else "" for i in index]
            try:
                values.append([float(c) if c != "" else math.nan for c in cells])
            except ValueError as exc:
                raise ValueError(f"row {n}: {exc}") from None
        _log(ex, f"scoring {len(values)} rows")
        proba = app.config["MODEL"].predict_proba(values) if values else []
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow([*header, "I_label", "P_probability"])
        for row, p in zip(rows, proba, strict=True):
            k = int(p.argmax())
            w.writerow([*row, app.config["MODEL"].classes_[k], f"{p[k]:.6f}"])
        ex["csv"] = out.getvalue()
        _log(ex, f"execution {token} succeeded")
    except Exception as exc:
        ex["error"] = str(exc)
        _log(ex, f"ERROR: {exc}")
    finally:
        ex["done"] = True


@app.get("/")
def pong() -> Any:
    return Response("pong", mimetype="text/plain")


@app.get("/ping")
def ping() -> Any:
    return Response("use GET /", status=500, mimetype="text/plain")


@app.post("/executions")
def execute() -> Any:
    upload = request.files.get("file")
    if upload is None or not (upload.filename or "").endswith(".csv"):
        return jsonify(error="upload a .csv file in the form field 'file'"), 400
    text = upload.read().decode("utf-8-sig", errors="replace")
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not records:
        return jsonify(error="the file is empty"), 400
    header, rows = records[0], records[1:]
    missing = [f for f in FEATURES if f not in header]
    if missing:
        return jsonify(error=f"the file's header lacks {', '.join(missing)}"), 400
    token = uuid.uuid4().hex
    ex: dict[str, Any] = {"done": False, "log": [], "csv": None, "error": None}
    with LOCK:
        EXECUTIONS[token] = ex
    _log(ex, f"execution {token}: {upload.filename}, {len(rows)} rows")
    threading.Thread(target=_score, args=(token, header, rows), daemon=True).start()
    return jsonify(id=token), 201


@app.get("/query/<token>")
def query(token: str) -> Any:
    ex = EXECUTIONS.get(token)
    if ex is None or not ex["done"]:
        return jsonify(error="not ready"), 404
    if ex["error"]:
        return jsonify(error=ex["error"]), 500
    return Response(
        ex["csv"],
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{token}.csv"'},
    )


@app.get("/query/<token>/log")
def query_log(token: str) -> Any:
    ex = EXECUTIONS.get(token)
    if ex is None:
        return jsonify(error="no such execution"), 404
    return Response("\n".join(ex["log"]) + "\n", mimetype="text/plain")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    app.config["MODEL"] = load_or_train(os.environ.get("IRIS_MODEL_PATH"))
    from werkzeug.serving import make_server

    make_server(a.host, a.port, app, threaded=True).serve_forever()


if __name__ == "__main__":
    main()
