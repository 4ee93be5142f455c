"""Serve the iris example model with KServe's Python ModelServer (v1 ``:predict``).

Run with the interpreter of the third-party servers' virtualenv (tests/helpers/servers/venvs.py):

    .venv-models/kserve/bin/python tests/helpers/servers/kserve_iris.py --port N

A :class:`kserve.Model` whose ``predict`` takes ``{"instances": [[f1, f2, f3, f4], ...]}``
and answers ``{"predictions": [[p_setosa, p_versicolor, p_virginica], ...]}``; KServe
answers ``GET /v1/models/iris`` with ``{"name": "iris", "ready": true}`` once loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "examples" / "iris"))

import kserve  # noqa: E402
from model import build_model  # noqa: E402


class Iris(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: Any = None

    def load(self) -> bool:
        self.model = build_model()
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: Any = None) -> dict[str, Any]:
        instances = payload["instances"]
        try:
            proba = self.model.predict_proba(instances)
        except (ValueError, TypeError) as exc:
            from kserve.errors import InvalidInput

            raise InvalidInput(str(exc)) from None
        return {"predictions": [[round(float(x), 6) for x in row] for row in proba]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="iris")
    a = p.parse_args()
    model = Iris(a.name)
    model.load()
    kserve.ModelServer(http_port=a.port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
