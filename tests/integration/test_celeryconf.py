"""The Celery configuration against moto's SQS."""

import time

from scorefleet.celeryconf import make_app
from scorefleet.settings import load
from tests.helpers import base_env
from workers.localstack.stack import emulator_client


def test_production_defaults(moto_endpoint, bucket):
    app = make_app(load(base_env(moto_endpoint, bucket)))
    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_prefetch_multiplier == 1
    assert c.task_serializer == "json" and c.accept_content == ["json"]
    opts = c.broker_transport_options
    assert opts["is_secure"] is False and opts["visibility_timeout"] == 300


def test_retry_delay_waits_in_sqs_not_in_the_worker(moto_endpoint, bucket):
    """A retry is published with SQS DelaySeconds: invisible until it is due."""
    env = base_env(moto_endpoint, bucket)
    app = make_app(load(env))
    app.send_task("tasks.score", args=[{}], delay_seconds=2)
    sqs = emulator_client("sqs", moto_endpoint)
    # later steps are routed to the steps queue
    url = sqs.get_queue_url(QueueName=env["SCOREFLEET_QUEUE"] + "-steps")["QueueUrl"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    time.sleep(2.5)
    msgs = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert len(msgs) == 1
