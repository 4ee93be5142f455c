"""The Lambda, the workers, Flower and beat run with their own IAM roles
(deploy/aws.yaml): every AWS request each really makes is allowed by its role,
checked against moto's request recording (S3 requests mapped to their IAM actions
by tests/helpers/iam.py).

Each test starts moto (recording), the queues as the template makes them, and one
process — beat, or Flower with a remote-control query — with the settings the chart
gives it (SCOREFLEET_QUEUE_URL set: no ListQueues/CreateQueue for the task queues),
then evaluates every recorded request against the role's statements (actions and
resource ARNs, IAM wildcards). IAM itself is not evaluated here (no AWS account); the
static checks of the same roles are in tests/deploy/test_aws_template.py.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest

from bench.flower_events import recorded_requests
from tests.helpers.cloudformation import template
from tests.helpers.iam import credential, is_s3, s3_calls
from workers.localstack.stack import (
    BUCKET,
    CREDENTIALS,
    QUEUE,
    free_port,
    provision,
    stack_env,
    start_moto,
    stop_process,
    wait_http,
)
from workers.monitoring.monitor import namespace

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"  # moto's
OBSERVER = "AKIAOBSERVER00000000"
REGION = CREDENTIALS["AWS_REGION"]


# ------------------------------------------------------------------ policies
def _resolve(value: Any, params: dict[str, str]) -> str:
    """A Resource of the template as an ARN pattern."""
    if isinstance(value, str):
        return value
    if "Fn::GetAtt" in value:
        res = template()["Resources"][value["Fn::GetAtt"][0]]["Properties"]
        name = _resolve(res["QueueName"], params) if "QueueName" in res else ""
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    if "Fn::Sub" in value:
        known = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
        names = {**params, **known}
        # ${Resource.Arn} (the Lambda's log group): nothing here requests it
        return re.sub(
            r"\$\{([^}]+)\}",
            lambda m: names.get(m.group(1), f"arn:unresolved:{m.group(1)}"),
            str(value["Fn::Sub"]),
        )
    if "Ref" in value:
        return params[value["Ref"]]
    raise AssertionError(f"cannot resolve {value}")


def role_statements(role: str) -> list[tuple[set[str], list[str]]]:
    params = {k: str(v.get("Default", "")) for k, v in template()["Parameters"].items()}
    # the local stack's buckets (the template has no default for them)
    params.update(InputBucketName=BUCKET, OutputBucketName=BUCKET)
    out = []
    for policy in template()["Resources"][role]["Properties"]["Policies"]:
        for st in policy["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow"
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            out.append((set(actions), [_resolve(r, params) for r in resources]))
    return out


def allowed(statements: list[tuple[set[str], list[str]]], action: str, arn: str) -> bool:
    return any(
        action in actions and any(fnmatch.fnmatchcase(arn, r) for r in resources)
        for actions, resources in statements
    )


# ----------------------------------------------------------- the recording
def calls(recording: bytes, by: str | None = None) -> set[tuple[str, str]]:
    """(IAM action, resource ARN) of every recorded request (``by``: only those signed
    with that access key id)."""
    entries, unreadable = recorded_requests(recording)
    assert unreadable == 0
    out: set[tuple[str, str]] = set()
    for e in (e for e in entries if not _observers(e)):
        if by is not None and credential(e) != by:
            continue
        if is_s3(e):
            out |= s3_calls(e)
            continue
        headers = {k.lower(): v for k, v in (e.get("headers") or {}).items()}
        body = e.get("body") or ""
        if e.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        target = headers.get("x-amz-target", "")
        if target.startswith("AmazonSQS."):
            params = json.loads(body or "{}")
            name = str(params.get("QueueUrl") or params.get("QueueName") or "").rsplit("/", 1)[-1]
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}" if name else "*"
            out.add((f"sqs:{target.split('.', 1)[1]}", arn))
            continue
        form = {k: v[0] for k, v in parse_qs(body).items()}
        if "/sns/aws4_request" in headers.get("authorization", "") and "Action" in form:
            topic = (
                form.get("TopicArn")
                or form.get("ResourceArn")
                or form.get("SubscriptionArn", "").rsplit(":", 1)[0]
                or (f"arn:aws:sns:{REGION}:{ACCOUNT}:{form['Name']}" if "Name" in form else "*")
            )
            out.add((f"sns:{form['Action']}", topic))
            continue
        out.add((f"other:{e.get('method')}", str(e.get("uri") or e.get("url"))))
    return out


def _observers(entry: dict[str, Any]) -> bool:
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    return f"Credential={OBSERVER}/" in headers.get("authorization", "")


def observer(service: str, endpoint: str) -> Any:
    """A client of the test's own, whose requests the recording leaves out."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=OBSERVER,
        aws_secret_access_key="observer-secret",
    )


class Recorder:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __call__(self, action: str) -> bytes:
        method = "GET" if action == "download-recording" else "POST"
        req = urllib.request.Request(
            f"{self.endpoint}/moto-api/recorder/{action}", method=method, data=None
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError:
            if action != "download-recording":
                raise
            return b""  # nothing recorded yet: moto has no file to send


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    """A recording moto with the queues, and the environment the chart gives a pod."""
    monkeypatch.setenv("MOTO_RECORDER_FILEPATH", str(tmp_path / "recording.jsonl"))
    port = free_port()
    moto = start_moto(port, tmp_path / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        urls = provision(endpoint)
        env = stack_env(
            endpoint,
            tmp_path / "state",
            extra={"SCOREFLEET_QUEUE_URL": urls["queue_url"], "SCOREFLEET_REAP_INTERVAL": "10"},
        )
        yield endpoint, {**os.environ, **env}
    finally:
        stop_process(moto, grace=5)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g}s")
        time.sleep(0.2)


def check(role: str, made: set[tuple[str, str]]) -> None:
    statements = role_statements(role)
    refused = sorted(c for c in made if not allowed(statements, *c))
    assert not refused, f"{role} does not allow what the process does: {refused}"


# --------------------------------------------------------------------- tests
def test_beat_needs_only_its_own_role(aws, tmp_path):  # reap is due after 10 s
    endpoint, env = aws
    record = Recorder(endpoint)
    record("start-recording")
    log = tmp_path / "beat.log"
    beat = spawn(["beat", "-s", str(tmp_path / "schedule"), "-l", "INFO"], env, log)
    sent = ("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}")
    try:
        wait_for(lambda: sent in calls(record("download-recording")), 60, "beat sent no task")
    finally:
        stop_process(beat, grace=10)
    record("stop-recording")
    check("BeatRole", calls(record("download-recording")))


def test_flower_needs_only_its_own_role(aws, tmp_path):
    endpoint, env = aws
    record = Recorder(endpoint)
    record("start-recording")
    port = free_port()
    user, password = "ops", "a-long-flower-password"
    env = {**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"}
    flower = spawn(
        ["flower", f"--port={port}", "--address=127.0.0.1"], env, tmp_path / "flower.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", 60)
        sns = observer("sns", endpoint)
        topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:{namespace(QUEUE)}-events"

        def subscribed() -> bool:
            try:
                subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
            except sns.exceptions.NotFoundException:
                return False
            return bool(subs)

        wait_for(subscribed, 60, "Flower did not subscribe to the events")
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()

        def get(path: str) -> bytes:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Basic {auth}"}
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200, path
                return bytes(resp.read())

        get("/api/workers?refresh=1")  # remote control (inspect)
        # the Broker tab: the depths of the task, steps and dead-letter queues
        task_queues = (QUEUE, f"{QUEUE}-steps", f"{QUEUE}-dlq")
        shown = json.loads(get("/api/queues/length"))["active_queues"]
        assert [q["name"] for q in shown] == list(task_queues), shown
        page = get("/broker").decode()
        assert all(f">{name}<" in page for name in task_queues), page[-3000:]
    finally:
        stop_process(flower, grace=15)  # and it deletes its queues
    record("stop-recording")
    made = calls(record("download-recording"))
    assert any(a == "sns:Publish" for a, _ in made)  # the inspect broadcast
    assert any(a == "sqs:CreateQueue" for a, _ in made)  # its event queue
    for name in task_queues:  # read, with nothing but the depths asked of them
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        assert {a for a, r in made if r == arn} == {"sqs:GetQueueAttributes"}, name
    check("FlowerRole", made)


# ------------------------------------------------ the Lambda and a worker
LAMBDA_KEY = "AKIALAMBDA0000000000"
WORKER_KEY = "AKIAWORKER0000000000"


def as_role(env: dict[str, str], key: str, endpoint: str) -> dict[str, str]:
    """The environment with the credentials of one role (the broker's too)."""
    port = endpoint.rsplit(":", 1)[1]
    return {
        **env,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": f"{key.lower()}-secret",
        "SCOREFLEET_BROKER_URL": f"sqs://{key}:{key.lower()}-secret@127.0.0.1:{port}",
    }


def test_the_lambda_and_a_worker_need_only_their_own_roles(aws, tmp_path, monkeypatch):
    """The Lambda, as deploy/aws.yaml configures it, takes in a file and refuses a
    re-upload whose earlier .scoreout it replaces with an .error (issue 24: its role
    could not delete it); then a worker scores the file, replacing an earlier .error.
    Each one's requests against its own role."""
    from lambda_enqueue.handler import Runtime, handle
    from scorefleet.celeryconf import make_app
    from scorefleet.settings import load
    from scorefleet.storage import s3io
    from tests.helpers import s3_notification, s3_record, test_catalog

    endpoint, env = aws
    env = {
        **env,
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        "SCOREFLEET_DEFAULT_MODEL_IMAGE": "test/hash:1",
        "SCOREFLEET_MODEL_CATALOG": json.dumps(test_catalog()),
        "SCOREFLEET_EVENTS": "false",
    }
    s3 = observer("s3", endpoint)
    files = {"in/good.csv": "model_image=test/hash:1", "in/refused.csv": "model_image=evil/x:1"}
    for key, tags in files.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"a,b\n1,2\n3,4\n", Tagging=tags)
    s3.put_object(Bucket=BUCKET, Key="out/refused.csv.scoreout", Body=b"old\n")
    s3.put_object(Bucket=BUCKET, Key="out/good.csv.error", Body=b"an earlier failure\n")
    record = Recorder(endpoint)
    record("start-recording")

    lambda_env = as_role(env, LAMBDA_KEY, endpoint)
    for name, value in lambda_env.items():
        monkeypatch.setenv(name, value)
    settings = load(lambda_env)
    rt = Runtime(settings, s3io.client(settings.aws.region), make_app(settings))
    records = []
    for key in files:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        etag = head["ETag"].strip('"')
        records.append(s3_record(BUCKET, key, size=head["ContentLength"], etag=etag))
    assert handle(s3_notification(*records), rt) == {"enqueued": 1, "rejected": 1, "ignored": 0}
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]}
    assert "out/refused.csv.error" in listed and "out/refused.csv.scoreout" not in listed

    worker = spawn(
        ["worker", "-P", "threads", "-c", "2", "-l", "INFO"],
        as_role(env, WORKER_KEY, endpoint),
        tmp_path / "worker.log",
    )

    def scored() -> bool:
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]}
        return "out/good.csv.scoreout" in keys and "out/good.csv.error" not in keys

    try:
        wait_for(scored, 120, "the worker did not publish the .scoreout")
    finally:
        stop_process(worker, grace=15)
    record("stop-recording")
    recording = record("download-recording")
    made = calls(recording, LAMBDA_KEY)
    assert ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/out/refused.csv.scoreout") in made
    check("EnqueueRole", made)
    made = calls(recording, WORKER_KEY)
    assert ("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/out/good.csv.error") in made
    check("WorkerRole", made)
