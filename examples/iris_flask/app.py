"""An iris model behind a team's own Flask app (the ``json`` protocol).

    python examples/iris_flask/app.py --port 8080

* ``GET /health`` answers ``{"status": "ok"}`` once the model is loaded.
* ``POST /predict`` takes ``{"instances": [{"sepal_length": 5.1, ...}, ...]}`` (an
  empty feature is null, imputed) and answers ``{"predictions": [{"label": ...,
  "probability": ...}, ...]}``, one per instance, in order; 400 with a message for
  an instance that is not a record of numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "iris"))

from flask import Flask, jsonify, request
from model import FEATURES, load_or_train

app = Flask(__name__)


def _row(i: int, instance: Any) -> list[float]:
    if not isinstance(instance, dict):
        raise ValueError(f"instance {i}: expected an object of the iris features")
    row = []
    for name in FEATURES:
        value = instance.get(name)
        if value is None:
            row.append(math.nan)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"instance {i}: feature {name}: {value!r} is not a number")
        row.append(float(value))
    return row


@app.get("/health")
def health() -> Any:
    return jsonify(status="ok")


@app.post("/predict")
def predict() -> Any:
    payload = request.get_json(silent=True)
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list):
        return jsonify(error='expected {"instances": [...]}'), 400
    try:
        rows = [_row(i, inst) for i, inst in enumerate(instances)]
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    if not rows:
        return jsonify(predictions=[])
    proba = app.config["MODEL"].predict_proba(rows)
    best = proba.argmax(axis=1)
    predictions = [
        {"label": str(app.config["MODEL"].classes_[k]), "probability": round(float(p[k]), 6)}
        for k, p in zip(best.tolist(), proba, strict=True)
    ]
    return jsonify(predictions=predictions)


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
