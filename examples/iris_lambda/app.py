"""An iris model built as an AWS Lambda container image would be (seed 001's kind).

``CMD ["app.handler"]`` in an image ``FROM public.ecr.aws/lambda/python``; behind
API Gateway, or the Runtime Interface Emulator on port 8080 outside Lambda. On the
local stack it runs as in the image, under ``awslambdaric`` behind scorefleet's
stand-in for the emulator: ``{python} -m workers.localstack.lambda_emulator app.handler
--path examples/iris_lambda --port {port}`` (docs/models.md).

With ``MODEL_S3_URI`` (``s3://bucket/key`` of a joblib artifact, ``train.py``'s), the
model is downloaded from S3 at init (seed 001's pattern; docs/models.md, "Models that
load their own artifacts").

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
import tempfile
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "iris"))

from model import FEATURES, load_or_train


def model_path() -> str | None:
    """Where the model is: downloaded from ``MODEL_S3_URI`` when it is set (as seed
    001's image does at start, with boto3 and the function's own credentials and
    endpoint: on the local stack, those the catalog's ``local_aws`` gives it), else
    ``IRIS_MODEL_PATH`` (else the model is trained in memory)."""
    uri = os.environ.get("MODEL_S3_URI")
    if not uri:
        return os.environ.get("IRIS_MODEL_PATH")
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    path = os.path.join(tempfile.mkdtemp(), os.path.basename(key) or "model.joblib")
    boto3.client("s3").download_file(bucket, key, path)  # a missing model fails the init
    print(f"loaded the model from {uri}", flush=True)
    return path


MODEL = load_or_train(model_path())  # at init, as Lambda loads it


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
