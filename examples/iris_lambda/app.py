"""An iris model built as an AWS Lambda container image would be (seed 001's kind).

``CMD ["app.handler"]`` in an image ``FROM public.ecr.aws/lambda/python``; behind
API Gateway, or the Runtime Interface Emulator on port 8080 outside Lambda. On the
local stack it runs as in the image, under ``awslambdaric`` behind scorefleet's
stand-in for the emulator: ``{python} -m workers.localstack.lambda_emulator app.handler
--path examples/iris_lambda --port {port}`` (docs/models.md).

The event's ``body`` (an object, or a JSON string as API Gateway sends it) holds the
four iris features; a missing or empty feature is imputed (the pipeline's median
imputer). The answer: ``{"statusCode": 200, "body": "{\"prediction\": {\"label\":
..., \"probability\": ...}}"}``; 400 with a message for a body that is not a record
of numbers.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "iris"))

from model import FEATURES, load_or_train

MODEL = load_or_train(os.environ.get("IRIS_MODEL_PATH"))  # at init, as Lambda loads it


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event.get("body") if isinstance(event, dict) else None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return _answer(400, {"message": "the body is not JSON"})
    if not isinstance(body, dict):
        return _answer(400, {"message": "expected a body with the iris features"})
    row = []
    for name in FEATURES:
        value = body.get(name)
        if value is None or value == "":
            row.append(math.nan)  # imputed
            continue
        try:
            row.append(float(value))
        except (TypeError, ValueError):
            return _answer(400, {"message": f"feature {name}: {value!r} is not a number"})
    proba = MODEL.predict_proba([row])[0]
    best = int(proba.argmax())
    prediction = {"label": str(MODEL.classes_[best]), "probability": round(float(proba[best]), 6)}
    return _answer(200, {"prediction": prediction})
