"""Serve the iris example model with a real MLServer (Open Inference Protocol v2).

Run with the interpreter of the third-party servers' virtualenv (tests/helpers/servers/venvs.py):

    .venv-models/mlserver/bin/python tests/helpers/servers/mlserver_iris.py --port N

Trains the example pipeline (examples/iris/model.py) with that virtualenv's
scikit-learn, writes MLServer's settings in a temporary folder and runs
``mlserver start`` there in this process (exec). Its model settings declare the
model's input (one FP64 tensor ``input-0`` of shape ``[-1, 4]``), which MLServer
publishes at its metadata endpoint (``GET /v2/models/iris``): the v2 protocol checks
a file against it before the first mini-batch. ``--log-requests`` turns MLServer's
access log on (its ``debug`` setting), one line per request, for the tests that show
which requests a file caused. MLServer 1.7.1 needs
``"parallel_workers": 0`` on this machine (its worker pool crashes at start with
the current uvloop); its gRPC and metrics ports are free ones, so that several
servers can run at once.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="iris")
    p.add_argument("--log-requests", action="store_true", help="MLServer's access log")
    a = p.parse_args()
    sys.path.insert(0, str(REPO / "examples" / "iris"))
    import joblib
    from model import build_model

    folder = Path(tempfile.mkdtemp(prefix="mlserver-iris-"))
    joblib.dump(build_model(), folder / "model.joblib")
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "debug": a.log_requests,
                "host": a.host,
                "http_port": a.port,
                "grpc_port": free_port(),
                "metrics_endpoint": None,
                "parallel_workers": 0,
            }
        )
    )
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": a.name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
                "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
            }
        )
    )
    mlserver = Path(sys.executable).with_name("mlserver")
    os.chdir(folder)
    os.execv(str(mlserver), [str(mlserver), "start", str(folder)])


if __name__ == "__main__":
    main()
