"""The embedded local stack behind ``scorefleet up``: the whole system on one
machine, with the production code paths.

* moto in server mode on 127.0.0.1 stands in for S3, SQS and SNS;
* a bucket with ``in/``, ``out/`` and ``scorefleet-state/`` prefixes, the Celery
  queue with a dead-letter queue, and an S3 notification into an events queue;
* a bridge that long-polls that queue and calls the real Lambda handler with the
  SQS event Lambda's event source mapping would send (honouring batchItemFailures);
* a Celery worker (with embedded beat for the reaper) on the ``local`` backend;
* Flower (docs/flower.md), events and remote control over the emulator's SNS;
  without FLOWER_BASIC_AUTH it runs unauthenticated on 127.0.0.1 only.

Everything it starts is stopped again by PID on exit; logs go to the state dir.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil

log = logging.getLogger("scorefleet.local")

REPO = Path(__file__).resolve().parents[1]
IRIS_IMAGE = "scorefleet-examples/iris:1.0"
BUCKET = "scorefleet-local"
QUEUE = "scorefleet"
EVENTS_QUEUE = "scorefleet-s3-events"
DLQ = "scorefleet-dlq"
MAX_RECEIVE_COUNT = 5
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


#: glibc malloc settings for workers: buffers of several MB are mmapped and
#: returned to the OS when freed (instead of the dynamic threshold letting them
#: pile up in per-thread arenas), so RSS stays flat whatever the file size.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_ARENA_MAX": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iris_catalog() -> dict[str, Any]:
    serve = REPO / "examples" / "iris" / "serve.py"
    if not serve.exists():
        raise FileNotFoundError(
            f"{serve} not found: the local stack runs from a source checkout (pip install -e .)"
        )
    return {
        "scorefleet-examples/iris*": {
            "command": f"{{python}} {shlex.quote(str(serve))} --host {{host}} --port {{port}}",
            "response_header": True,
            "env": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        }
    }


def stack_env(
    endpoint: str,
    state_dir: Path,
    *,
    catalog: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for every process of the local stack (and for users' shells)."""
    port = endpoint.rsplit(":", 1)[1]
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "SCOREFLEET_BROKER_URL": f"sqs://testing:testing@127.0.0.1:{port}",
        "SCOREFLEET_BROKER_TLS": "false",
        "SCOREFLEET_QUEUE": QUEUE,
        "SCOREFLEET_INPUT_URI": f"s3://{BUCKET}/in/",
        "SCOREFLEET_OUTPUT_URI": f"s3://{BUCKET}/out/",
        "SCOREFLEET_STATE_URI": f"s3://{BUCKET}/scorefleet-state/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/",
        "SCOREFLEET_DEFAULT_MODEL_IMAGE": IRIS_IMAGE,
        "SCOREFLEET_DEFAULT_K8S_CLUSTER": "local",
        "SCOREFLEET_DEFAULT_K8S_NAMESPACE": "scoring",
        "SCOREFLEET_LAUNCH_BACKEND": "local",
        "SCOREFLEET_STATE_DIR": str(state_dir),
        "SCOREFLEET_VISIBILITY_TIMEOUT": "600",
        "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog if catalog is not None else iris_catalog()),
        # Flower listens on 127.0.0.1 here; anywhere else it needs FLOWER_BASIC_AUTH
        "SCOREFLEET_FLOWER_UNAUTHENTICATED": "true",
        **MALLOC_ENV,
    }
    env.update(extra or {})
    return env


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL we built
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not come up within {timeout:g}s") from None
            time.sleep(0.1)


def start_moto(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            # moto, with the versionId and sequencer real S3 notifications carry
            [sys.executable, "-m", "workers.emulator", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    wait_http(f"http://127.0.0.1:{port}/moto-api/", 30)
    return proc


def emulator_client(service: Any, endpoint: str) -> Any:
    """A boto3 client for the local emulator (its fixed test credentials)."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def provision(endpoint: str, visibility_timeout: int = 600) -> dict[str, str]:
    """Bucket, queues (with DLQ) and the S3 -> events queue notification."""
    s3 = emulator_client("s3", endpoint)
    sqs = emulator_client("sqs", endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
    task_attrs = {"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive}
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes=task_attrs)["QueueUrl"]
    steps_url = sqs.create_queue(QueueName=f"{QUEUE}-steps", Attributes=task_attrs)["QueueUrl"]
    events_url = sqs.create_queue(
        QueueName=EVENTS_QUEUE, Attributes={"VisibilityTimeout": "60", "RedrivePolicy": redrive}
    )["QueueUrl"]
    events_arn = sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "scorefleet-input",
                    "QueueArn": events_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}},
                }
            ]
        },
    )
    return {
        "queue_url": queue_url,
        "steps_url": steps_url,
        "events_url": events_url,
        "dlq_url": dlq_url,
    }


class Bridge(threading.Thread):
    """Plays Lambda's SQS event source mapping: long-poll the S3 events queue, call
    ``lambda_enqueue.handler.handler`` with up to 10 records, delete the records it
    did not report in ``batchItemFailures``. Like the mapping, it runs several
    pollers at once (``concurrency``), each with its own Lambda runtime, as separate
    Lambda containers would."""

    def __init__(
        self, endpoint: str, queue_url: str, env: Mapping[str, str], concurrency: int = 4
    ) -> None:
        super().__init__(daemon=True, name="s3-lambda-bridge")
        self.concurrency = concurrency
        self._count_lock = threading.Lock()
        self.sqs = emulator_client("sqs", endpoint)
        self.endpoint = endpoint
        self.env = dict(env)
        self.queue_url = queue_url
        self.stopping = threading.Event()
        self.invocations = 0
        self.errors = 0

    def lambda_runtime(self) -> Any:
        """The Lambda's runtime, configured from the stack's environment (not from
        this process's), with clients pointed at the emulator."""
        from lambda_enqueue.handler import Runtime
        from tasks.celeryconf import make_app
        from tasks.settings import load

        settings = load(self.env)
        return Runtime(settings, emulator_client("s3", self.endpoint), make_app(settings))

    def run(self) -> None:
        from lambda_enqueue.handler import setup_logging
        from tasks.settings import load

        setup_logging(load(self.env).log_level)
        pollers = [
            threading.Thread(target=self._poll_loop, daemon=True, name=f"s3-lambda-bridge-{i}")
            for i in range(1, self.concurrency)
        ]
        for t in pollers:
            t.start()
        self._poll_loop()
        for t in pollers:
            t.join(timeout=5)

    def _poll_loop(self) -> None:
        from lambda_enqueue.handler import handle

        rt = self.lambda_runtime()  # one per poller: a Lambda container each
        while not self.stopping.is_set():
            try:
                self.poll_once(lambda event, _ctx: handle(event, rt), wait=1)
            except Exception:
                with self._count_lock:
                    self.errors += 1
                log.exception("bridge: invocation failed; SQS will deliver the records again")
                self.stopping.wait(1)

    def poll_once(self, handler: Any, wait: int = 1) -> int:
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [_sqs_record(m, self.queue_url) for m in messages]}
        result = handler(event, None) or {}
        with self._count_lock:
            self.invocations += 1
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(messages)


def _sqs_record(m: Mapping[str, Any], queue_url: str) -> dict[str, Any]:
    return {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": m.get("MessageAttributes", {}),
        "md5OfBody": m.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:" + queue_url.rsplit("/", 1)[1],
        "awsRegion": "us-east-1",
    }


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class LocalStack:
    """Start/stop the local stack; usable as a context manager (tests do)."""

    state_dir: Path
    workers: int = 1
    concurrency: int = 4
    flower: bool = True
    beat: bool = True
    moto_port: int = 0
    flower_port: int = 0
    catalog: Mapping[str, Any] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    bridge: Bridge | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def start(self) -> LocalStack:
        """Start everything; if any part fails, stop what was started and re-raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.moto_port = self.moto_port or free_port()
        moto = start_moto(self.moto_port, self.state_dir / "logs" / "moto.log")
        self.procs.append(Proc("moto", moto, self.state_dir / "logs" / "moto.log"))
        self.urls = provision(
            self.endpoint, int(self.extra_env.get("SCOREFLEET_VISIBILITY_TIMEOUT", "600"))
        )
        # one machine: at most one model per file slot, so a burst of files is
        # scored a few at a time instead of starting every model at once
        limit = {"SCOREFLEET_MAX_LIVE_MODELS": str(self.workers * self.concurrency)}
        self.env = stack_env(
            self.endpoint,
            self.state_dir,
            catalog=self.catalog,
            extra={**limit, **self.extra_env},
        )
        self.write_env_file()
        for i in range(self.workers):
            self.start_worker(i)
        if self.flower:
            self.start_flower()
        self.bridge = Bridge(self.endpoint, self.urls["events_url"], self.env)
        self.bridge.start()
        return self

    def start_worker(self, i: int) -> Proc:
        args = [
            "worker",
            "-P",
            "threads",
            "-c",
            str(self.concurrency),
            "-n",
            f"local{i}@%h",
            "-l",
            "INFO",
            "-E",
            # Flower marks a worker offline after two missed heartbeats (20 s);
            # each one is an SNS publish (Celery's default is every 2 s)
            "--heartbeat-interval",
            "10",
        ]
        if self.beat and i == 0:
            args += ["-B", "-s", str(self.state_dir / "celerybeat-schedule")]
        return self._spawn(f"worker{i}", args)

    def start_flower(self) -> Proc:
        """``celery -A workers.app flower`` on 127.0.0.1, its state kept across restarts."""
        self.flower_port = self.flower_port or free_port()
        return self._spawn(
            "flower",
            [
                "flower",
                f"--port={self.flower_port}",
                "--address=127.0.0.1",
                "--persistent=True",
                f"--db={self.state_dir / 'flower-state'}",
                "--state_save_interval=60000",
            ],
        )

    def restart_worker(self, i: int = 0, timeout: float = 60) -> Proc:
        """Stop worker ``i`` (warm shutdown) and start it again; wait until ready."""
        for p in [p for p in self.procs if p.name == f"worker{i}"]:
            stop_process(p.popen, grace=30)
            self.procs.remove(p)
        log_path = self.state_dir / "logs" / f"worker{i}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        proc = self.start_worker(i)
        deadline = time.monotonic() + timeout
        while b" ready." not in log_path.read_bytes()[offset:]:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited; see {log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready after {timeout:g}s; see {log_path}")
            time.sleep(0.1)
        return proc

    def stop_flower(self) -> None:
        for p in [p for p in self.procs if p.name == "flower"]:
            stop_process(p.popen, grace=10)
            self.procs.remove(p)

    def wait_flower_ready(self, timeout: float = 60) -> None:
        """Until Flower serves HTTP and its event queue is subscribed (events sent
        before that never reach it)."""
        from workers.monitor import namespace

        deadline = time.monotonic() + timeout
        wait_http(f"http://127.0.0.1:{self.flower_port}/healthcheck", timeout)
        sns = emulator_client("sns", self.endpoint)
        ns = namespace(QUEUE)
        topic = f"arn:aws:sns:{CREDENTIALS['AWS_REGION']}:123456789012:{ns}-events"
        while time.monotonic() < deadline:
            try:
                subs = sns.list_subscriptions_by_topic(TopicArn=topic).get("Subscriptions", [])
            except sns.exceptions.NotFoundException:
                subs = []
            if any(f":{ns}-ev-" in s.get("Endpoint", "") for s in subs):
                return
            time.sleep(0.1)
        raise TimeoutError(f"Flower did not subscribe to events within {timeout:g}s")

    def _spawn(self, name: str, celery_args: list[str]) -> Proc:
        path = self.state_dir / "logs" / f"{name}.log"
        with path.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", *celery_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        return proc

    def write_env_file(self) -> Path:
        path = self.state_dir / "stack.env"
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        path.write_text("\n".join(lines) + "\n")
        return path

    def wait_worker_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if not p.name.startswith("worker"):
                continue
            while b" ready." not in p.log_path.read_bytes():
                if p.popen.poll() is not None:
                    raise RuntimeError(f"{p.name} exited; see {p.log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{p.name} not ready after {timeout:g}s; see {p.log_path}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stopping.set()
            self.bridge.join(timeout=5)
        # workers first (warm shutdown finishes running steps), moto last
        for p in sorted(self.procs, key=lambda p: p.name == "moto"):
            stop_process(p.popen, grace=10 if p.name == "flower" else 30)
        self.procs.clear()
        from workers.backends.local import LocalBackend

        LocalBackend(self.state_dir, 1).stop_all()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(popen: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """Stop a process we started: SIGTERM (a worker finishes its running steps),
    SIGKILL after ``grace``; then whatever children it left behind."""
    if popen.poll() is not None:
        return
    try:
        kids = psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=5)
    from workers.backends.processes import stop_tree

    for kid in kids:
        if kid.is_running():
            stop_tree(kid, grace=5)
