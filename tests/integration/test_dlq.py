"""`scorefleet dlq list|redrive` against moto's SQS redrive (dead-letter) behaviour."""

import base64
import json
import os
import subprocess
import sys
import time

from tests.helpers import base_env
from workers.localstack.stack import emulator_client


def celery_message(task: str, args: list) -> str:
    body = base64.b64encode(json.dumps([args, {}, {}]).encode()).decode()
    envelope = {
        "body": body,
        "headers": {"task": task, "id": "tid-1"},
        "properties": {},
        "content-type": "application/json",
        "content-encoding": "utf-8",
    }
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def test_poison_message_reaches_the_dlq_and_can_be_listed_and_redriven(moto_endpoint, bucket):
    env = base_env(moto_endpoint, bucket)
    sqs = emulator_client("sqs", moto_endpoint)
    dlq_url = sqs.create_queue(QueueName=env["SCOREFLEET_QUEUE"] + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=env["SCOREFLEET_QUEUE"],
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
        },
    )["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody=celery_message("tasks.launch", [{"bucket": bucket, "key": "in/poison.csv"}]),
    )
    # a consumer that never deletes it (a worker killed by it, every time)
    for _ in range(3):
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
        time.sleep(1.1)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)

    cli_env = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "dlq", "list"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "tasks.launch" in out and f"s3://{bucket}/in/poison.csv" in out and "1 message(s)" in out
    # listing leaves it there
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "dlq", "redrive", "--all"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "1 message(s) sent back" in out
    msgs = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert (
        len(msgs) == 1
        and "poison.csv"
        in base64.b64decode(json.loads(base64.b64decode(msgs[0]["Body"]))["body"]).decode()
    )
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=0)


def test_redrive_needs_ids_or_all(moto_endpoint, bucket):
    env = {**os.environ, **base_env(moto_endpoint, bucket)}
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "dlq", "redrive"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--all" in proc.stderr


def test_listed_messages_cannot_write_to_the_operators_terminal():
    """What `scorefleet dlq list` shows comes from whoever sent the message: control
    characters (a screen clear, a forged line) are shown escaped."""
    from workers.ops.dlq import describe_body

    job = {"bucket": "b", "key": "in/a.csv\x1b[2J\nall clear: 0 messages"}
    task, _, subject = describe_body(celery_message("tasks.score\r", [job]))
    assert "\x1b" not in subject and "\n" not in subject and "\r" not in task
    assert subject == "s3://b/in/a.csv\\x1b[2J\\nall clear: 0 messages"
