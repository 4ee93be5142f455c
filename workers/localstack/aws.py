"""The local stack's AWS side, from the process that runs the stack: starting moto
in server mode on 127.0.0.1 (S3, SQS, SNS), provisioning it, and the bridge that
plays Lambda's SQS event source mapping, calling the real Lambda handler from
threads of this process."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

# Imported here, in the thread that imports this module, before any bridge thread
# exists: celery and kombu replace their own module object in sys.modules at the
# end of their import, and a thread that imports one of them while another
# thread's import of it is still running gets the half-built original, waits for
# that import to finish and keeps using the stale object ("ImportError: cannot
# import name 'Celery' from 'celery'": the bridge thread importing the Lambda
# handler while the main thread imported workers.monitoring.monitor). Once imported, every
# later import in any thread is a plain sys.modules lookup (celery.Celery itself
# still loads on first use, under the normal per-module import locks). Not in
# workers/__init__.py: the liveness probe imports the package and must stay light.
import celery  # noqa: F401
import kombu  # noqa: F401

log = logging.getLogger("scorefleet.local")

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
#: The models' own credential on the local stack (SCOREFLEET_LOCAL_MODEL_AWS): not the
#: worker's. The emulator checks no permission; what it shows is that a model reaches
#: S3 with a credential of its own while the worker's never leave the worker.
MODEL_CREDENTIALS = {
    "access_key_id": "scorefleet-local-model",
    "secret_access_key": "scorefleet-local-model-secret",
}


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
            [
                sys.executable,
                "-m",
                "workers.localstack.emulator",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
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
    Lambda containers would.

    :meth:`start` does the Lambdas' init phase (imports, settings, clients) in the
    calling thread, so that a configuration error surfaces there and the pollers
    import nothing. A poller that dies records why in :attr:`failure`; :attr:`ready`
    says whether every poller has completed a first poll."""

    def __init__(
        self,
        endpoint: str,
        queue_url: str,
        env: Mapping[str, str],
        concurrency: int = 4,
        log_path: Path | None = None,
        drop: float = 0.0,
    ) -> None:
        super().__init__(daemon=True, name=f"s3-lambda-bridge-{id(self):x}")
        #: for tests: the share of notifications lost on their way (deleted unread),
        #: as a changed notification configuration or a drained DLQ loses them
        self.drop = drop
        self.dropped: list[str] = []
        self._random = random.Random(0)
        self.concurrency = concurrency
        self._count_lock = threading.Lock()
        self.sqs = emulator_client("sqs", endpoint)
        self.endpoint = endpoint
        self.env = dict(env)
        self.queue_url = queue_url
        self.log_path = log_path
        self.stopping = threading.Event()
        self.invocations = 0
        self.errors = 0
        self.failure: str | None = None
        self._polled: set[str] = set()
        self._runtimes: list[Any] = []
        self._log_handler: logging.Handler | None = None
        self._handle: Any = None

    def lambda_runtime(self) -> Any:
        """The Lambda's runtime, configured from the stack's environment (not from
        this process's), with clients pointed at the emulator."""
        from lambda_enqueue.handler import Runtime
        from scorefleet.celeryconf import make_app
        from scorefleet.settings import load

        settings = load(self.env)
        return Runtime(settings, emulator_client("s3", self.endpoint), make_app(settings))

    def start(self) -> None:
        from lambda_enqueue.handler import handle, setup_logging

        self._handle = handle
        self._runtimes = [self.lambda_runtime() for _ in range(self.concurrency)]
        if self.log_path is not None:
            self._log_to(self.log_path)
        setup_logging(self._runtimes[0].settings.monitoring.log_level)
        super().start()

    def _log_to(self, path: Path) -> None:
        """The Lambda's log lines (from this bridge's threads only) go to ``path``."""
        from scorefleet import logctx

        handler = logging.FileHandler(path)
        logctx.install(handler)
        prefix = self.name
        handler.addFilter(lambda record: (record.threadName or "").startswith(prefix))
        root = logging.getLogger("scorefleet")
        root.addHandler(handler)
        root.propagate = False
        self._log_handler = handler

    @property
    def ready(self) -> bool:
        with self._count_lock:
            return len(self._polled) >= self.concurrency

    def run(self) -> None:
        pollers = [
            threading.Thread(target=self._poller, args=(rt,), daemon=True, name=f"{self.name}-{i}")
            for i, rt in enumerate(self._runtimes[1:], start=1)
        ]
        for t in pollers:
            t.start()
        self._poller(self._runtimes[0])
        for t in pollers:
            t.join(timeout=5)

    def _poller(self, rt: Any) -> None:
        try:
            self._poll_loop(rt)
        except BaseException:
            with self._count_lock:
                self.failure = self.failure or (
                    f"{threading.current_thread().name} died:\n{traceback.format_exc()}"
                )
            raise

    def _poll_loop(self, rt: Any) -> None:
        handle = self._handle
        me = threading.current_thread().name
        while not self.stopping.is_set():
            try:
                self.poll_once(lambda event, _ctx: handle(event, rt), wait=1)
            except Exception:
                with self._count_lock:
                    self.errors += 1
                log.exception("bridge: invocation failed; SQS will deliver the records again")
                self.stopping.wait(1)
            else:
                with self._count_lock:
                    self._polled.add(me)

    def close(self) -> None:
        """Stop polling, wait for the pollers, stop writing the log."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        if self._log_handler is not None:
            logging.getLogger("scorefleet").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

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
        lost = [m for m in messages if self.drop and self._random.random() < self.drop]
        if lost:
            with self._count_lock:
                self.dropped.extend(m["Body"] for m in lost)
            self._delete_messages(lost)
            messages = [m for m in messages if m not in lost]
            if not messages:
                return len(lost)
        event = {"Records": [_sqs_record(m, self.queue_url) for m in messages]}
        result = handler(event, None) or {}
        with self._count_lock:
            self.invocations += 1
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        self._delete_messages([m for m in messages if m["MessageId"] not in failed])
        return len(messages) + len(lost)

    def _delete_messages(self, messages: list[Mapping[str, Any]]) -> None:
        if messages:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )


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
