"""Run an AWS Lambda Python handler behind the Runtime Interface Emulator's API.

    python -m workers.localstack.lambda_rie app.handler --port 8080 [--path DIR]

Stands for the part of the real Runtime Interface Emulator (``aws-lambda-rie``, in
the Lambda base images as ``/usr/local/bin/aws-lambda-rie``) that a caller sees:

* ``POST /2015-03-31/functions/function/invocations`` with the event as the body
  calls ``handler(event, context)`` and answers 200 with its return value as JSON;
* a handler that raises answers 200 with ``{"errorMessage", "errorType",
  "stackTrace"}`` and the header ``X-Amz-Function-Error: Unhandled``, as the RIE does;
* one invocation at a time (the RIE runs one runtime: concurrent invocations wait
  their turn);
* the handler module is imported once, before the port is bound ("init"), from
  ``--path`` (default: the current directory, as ``LAMBDA_TASK_ROOT`` is);
* ``context`` carries ``function_name``, ``aws_request_id``, ``memory_limit_in_mb``,
  ``get_remaining_time_in_millis()`` (``AWS_LAMBDA_FUNCTION_TIMEOUT``, default 300 s).

What it does NOT stand for: the Runtime API the real emulator offers the runtime
(``/2018-06-01/runtime/invocation/next`` ...), the ``awslambdaric`` client, the
image's own entry point and environment, memory limits, and freezing the process
between invocations. A handler that works here but depends on those may behave
differently in its image; docs/models.md says how to run the image itself.

It lets the local stack score with a Lambda handler's code, and is the server the
``lambda`` protocol's tests run against (no RIE binary is reachable here).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INVOKE_PATH = "/2015-03-31/functions/function/invocations"


@dataclass
class Context:
    """The part of Lambda's context object handlers use."""

    function_name: str = "function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 3008
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:012345678912:function:function"
    log_group_name: str = "/aws/lambda/function"
    log_stream_name: str = "$LATEST"
    deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def load_handler(name: str, path: str) -> Callable[[Any, Context], Any]:
    """``module.function`` (``app.handler``, ``pkg/app.handler``) from ``path``."""
    module_name, _, function = name.rpartition(".")
    if not module_name or not function:
        raise SystemExit(f"handler {name!r}: expected module.function, e.g. app.handler")
    sys.path.insert(0, path)
    module = importlib.import_module(module_name.replace("/", "."))
    handler = getattr(module, function, None)
    if not callable(handler):
        raise SystemExit(f"handler {name!r}: {module_name} has no function {function!r}")
    return handler  # type: ignore[no-any-return]


class Invoker:
    def __init__(self, handler: Callable[[Any, Context], Any], timeout: float) -> None:
        self.handler = handler
        self.timeout = timeout
        self.lock = threading.Lock()  # one runtime: one invocation at a time

    def invoke(self, body: bytes) -> tuple[bytes, bool]:
        """(answer, the handler raised)."""
        try:
            event: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            event = body.decode("utf-8", "replace")
        ctx = Context(deadline=time.monotonic() + self.timeout)
        with self.lock:
            try:
                result = self.handler(event, ctx)
                return json.dumps(result).encode("utf-8"), False
            except Exception as exc:
                tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
                print("".join(tb), file=sys.stderr, flush=True)
                error = {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "requestId": ctx.aws_request_id,
                    "stackTrace": [line.rstrip("\n") for line in tb[1:-1]],
                }
                return json.dumps(error).encode("utf-8"), True


def make_server(host: str, port: int, invoker: Invoker) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK of the headers (~10 ms a call)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, data: bytes, failed: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if failed:
                self.send_header("X-Amz-Function-Error", "Unhandled")
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.split("?")[0] != INVOKE_PATH:
                self._answer(404, b'{"message":"not found"}')
                return
            data, failed = invoker.invoke(body)
            self._answer(200, data, failed)

        def do_GET(self) -> None:
            self._answer(404, b'{"message":"not found"}')

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    return srv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m workers.localstack.lambda_rie", description=__doc__)
    p.add_argument("handler", help="module.function, as the image's CMD names it")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--path", default=os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    a = p.parse_args(argv)
    handler = load_handler(a.handler, a.path)
    timeout = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "300"))
    srv = make_server(a.host, a.port, Invoker(handler, timeout))
    print(f"lambda_rie: {a.handler} on {a.host}:{a.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()


if __name__ == "__main__":
    main()
