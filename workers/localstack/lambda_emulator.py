"""Run a Lambda Python handler as its container image does: under AWS's own runtime
client, behind a Runtime API.

    python -m workers.localstack.lambda_emulator app.handler --port 8080 [--path DIR]

A Lambda image built ``FROM public.ecr.aws/lambda/python`` runs its handler under
``awslambdaric`` (the Runtime Interface Client, on PyPI), which asks the Runtime API
for each event and posts the handler's answer back; outside Lambda, the image's
Runtime Interface Emulator (``aws-lambda-rie``) serves that Runtime API and an
invocations endpoint in front of it. The RIE binary is not installable here, so this
module is scorefleet's stand-in for it, and for nothing else: the handler, its module
loading, the event and context objects, the marshalling of answers and errors, and
the logging are ``awslambdaric``'s own, in a process of their own
(``python -m awslambdaric <handler>``, as the image's entry point runs it).

What it stands for, as the RIE does it:

* the **Runtime API** the runtime client calls (on a loopback port of its own, given
  to it in ``AWS_LAMBDA_RUNTIME_API``): ``GET /2018-06-01/runtime/invocation/next``
  (the next event, with the ``Lambda-Runtime-Aws-Request-Id``,
  ``Lambda-Runtime-Deadline-Ms``, ``Lambda-Runtime-Invoked-Function-Arn`` and
  ``Lambda-Runtime-Trace-Id`` headers), ``POST …/invocation/{id}/response``,
  ``POST …/invocation/{id}/error`` and ``POST /2018-06-01/runtime/init/error``;
* the **invocations endpoint** the worker calls:
  ``POST /2015-03-31/functions/function/invocations`` with the event as the body
  answers 200 with the handler's answer, or with the runtime's error document
  (``errorMessage``, ``errorType``, ``stackTrace``) and
  ``X-Amz-Function-Error: Unhandled``;
* **one invocation at a time** (one runtime: concurrent invocations wait their
  turn), the function's **timeout** (``AWS_LAMBDA_FUNCTION_TIMEOUT``, default 300 s:
  past it the answer is a ``Sandbox.Timedout`` error and the runtime is started
  again), a runtime that **exits** during an invocation (``Runtime.ExitError``, and
  started again), and the **environment** the RIE gives the runtime
  (``LAMBDA_TASK_ROOT``, ``_HANDLER``, ``AWS_LAMBDA_FUNCTION_NAME``/``_VERSION``/
  ``_MEMORY_SIZE``, the log group and stream), beside the model's own.

Init runs before the invocations port opens (so "the port accepts" means the handler
is loaded); an init error (the module cannot be imported, the handler is missing) is
printed and ends this process with code 1, so the launch fails with it in the
``.error``. Not stood for: memory limits, freezing the process between invocations,
extensions and the Telemetry API, SnapStart, and the image's own file system and
entry point (docs/models.md says how to run the image itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
RUNTIME = "/2018-06-01/runtime"
FUNCTION_NAME = "function"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:012345678912:function:function"
#: how long the runtime may take to load the handler (the RIE's init limit)
INIT_SECONDS = 130.0


@dataclass
class Invocation:
    event: bytes
    deadline: float  # epoch seconds
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    done: threading.Event = field(default_factory=threading.Event)
    answer: bytes = b""
    #: the runtime's error type (None: the handler answered)
    error: str | None = None

    def finish(self, answer: bytes, error: str | None = None) -> None:
        if not self.done.is_set():
            self.answer, self.error = answer, error
            self.done.set()


def error_document(message: str, kind: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": kind, "stackTrace": []}).encode()


class Emulator:
    """The Runtime API's side of one function: one runtime process at a time."""

    def __init__(
        self, handler: str, task_root: str, python: str, timeout: float, memory_mb: int
    ) -> None:
        self.handler = handler
        self.task_root = task_root
        self.python = python
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.api_address = ""
        self.events: queue.Queue[Invocation] = queue.Queue()
        self.current: Invocation | None = None
        self.turn = threading.Lock()  # one invocation at a time
        self.initialised = threading.Event()
        self.init_error: bytes | None = None
        self.runtime: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the runtime
    def runtime_env(self) -> dict[str, str]:
        """The model's environment, plus what the RIE gives the runtime."""
        env = dict(os.environ)
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": self.api_address,
                "LAMBDA_TASK_ROOT": self.task_root,
                "LAMBDA_RUNTIME_DIR": os.path.dirname(os.path.abspath(self.python)),
                "_HANDLER": self.handler,
                "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
                "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (self.task_root, env.get("PYTHONPATH", "")) if p
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start_runtime(self) -> None:
        """Start (again) the runtime process: it loads the handler, then asks for
        the next event."""
        with self._lock:
            self.generation += 1
            generation = self.generation
            self.initialised.clear()
            self.runtime = subprocess.Popen(
                [self.python, "-m", "awslambdaric", self.handler],
                cwd=self.task_root,
                env=self.runtime_env(),
            )
            proc = self.runtime
        threading.Thread(target=self._watch, args=(proc, generation), daemon=True).start()

    def _watch(self, proc: subprocess.Popen[bytes], generation: int) -> None:
        """A runtime that exits: an init failure ends the emulator; otherwise the
        invocation it was running fails (Runtime.ExitError) and a new runtime starts."""
        code = proc.wait()
        if generation != self.generation:
            return  # replaced on purpose (a timeout)
        if not self.initialised.is_set():
            if self.init_error is None:
                self.init_error = error_document(
                    f"the runtime exited with code {code} before it was ready", "Runtime.ExitError"
                )
            self.initialised.set()
            return
        print(f"lambda_emulator: the runtime exited with code {code}", file=sys.stderr, flush=True)
        current = self.current
        if current is not None:
            message = f"Runtime exited with error: exit status {code}"
            current.finish(error_document(message, "Runtime.ExitError"), "Runtime.ExitError")
        self.start_runtime()

    def stop(self) -> None:
        with self._lock:
            self.generation += 1
            proc = self.runtime
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ----------------------------------------------------------- Runtime API
    def next_event(self) -> Invocation:
        self.initialised.set()  # asking for an event: init is done
        while True:
            inv = self.events.get()
            if not inv.done.is_set():  # not given up on (timed out) while it waited
                self.current = inv
                return inv

    def respond(self, request_id: str, body: bytes, error: str | None = None) -> bool:
        current = self.current
        if current is None or current.request_id != request_id:
            return False
        current.finish(body, error)
        return True

    def failed_init(self, body: bytes) -> None:
        self.init_error = body or error_document("init failed", "Runtime.Unknown")
        self.initialised.set()

    # ----------------------------------------------------------- invocations
    def invoke(self, event: bytes) -> Invocation:
        """The event, answered by the handler (one invocation at a time)."""
        with self.turn:
            inv = Invocation(event, deadline=time.time() + self.timeout)
            self.events.put(inv)
            if not inv.done.wait(self.timeout):
                message = f"Task timed out after {self.timeout:.2f} seconds"
                inv.finish(error_document(message, "Sandbox.Timedout"), "Sandbox.Timedout")
                print(f"lambda_emulator: {message}", file=sys.stderr, flush=True)
                self.stop()  # the RIE resets the sandbox: a new runtime, init again
                self.start_runtime()
                self.initialised.wait(INIT_SECONDS)
            self.current = None
            return inv


def runtime_api(emulator: Emulator) -> ThreadingHTTPServer:
    """The Runtime API on a loopback port of its own."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != f"{RUNTIME}/invocation/next":
                self._answer(404, b'{"errorMessage":"not found"}')
                return
            inv = emulator.next_event()
            trace = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
            self._answer(
                200,
                inv.event,
                {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(inv.deadline * 1000)),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": trace,
                },
            )

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.removeprefix(RUNTIME).strip("/").split("/")
            if parts == ["init", "error"]:
                emulator.failed_init(body)
                self._answer(202, b'{"status":"OK"}')
                return
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                error = None
                if parts[2] == "error":
                    error = self.headers.get("Lambda-Runtime-Function-Error-Type") or "Unhandled"
                if emulator.respond(parts[1], body, error):
                    self._answer(202, b'{"status":"OK"}')
                else:
                    self._answer(400, b'{"errorMessage":"unknown request id"}')
                return
            self._answer(404, b'{"errorMessage":"not found"}')

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    return srv


def invocations(emulator: Emulator, host: str, port: int) -> ThreadingHTTPServer:
    """The endpoint the worker calls."""

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
            inv = emulator.invoke(body or b"{}")
            self._answer(200, inv.answer, failed=inv.error is not None)

        def do_GET(self) -> None:
            self._answer(404, b'{"message":"not found"}')

    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    return srv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workers.localstack.lambda_emulator", description=__doc__
    )
    p.add_argument("handler", help="module.function, as the image's CMD names it")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--path", default=os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    p.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs awslambdaric and the handler (default: this one)",
    )
    a = p.parse_args(argv)
    emulator = Emulator(
        a.handler,
        os.path.abspath(a.path),
        a.python,
        timeout=float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "300")),
        memory_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")),
    )
    api = runtime_api(emulator)
    emulator.api_address = f"127.0.0.1:{api.server_address[1]}"
    threading.Thread(target=api.serve_forever, daemon=True).start()
    emulator.start_runtime()
    if not emulator.initialised.wait(INIT_SECONDS) or emulator.init_error is not None:
        error = emulator.init_error or error_document("init timed out", "Runtime.InitTimeout")
        print(f"lambda_emulator: init failed: {error.decode(errors='replace')}", flush=True)
        emulator.stop()
        return 1
    srv = invocations(emulator, a.host, a.port)
    # stopped (the backend's SIGTERM): the runtime goes first, so that it does not
    # report a Runtime API that vanished under it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(
        f"lambda_emulator: {a.handler} under awslambdaric on {a.host}:{a.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            srv.serve_forever()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
