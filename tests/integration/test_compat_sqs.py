"""workers.monitoring.compat_sqs: each upstream fix, against moto's SQS and SNS over HTTP.

Two kinds of tests per defect (D1..D8, see the module docstring):

* ``test_dN_*`` fails if the shim is removed;
* ``test_upstream_dN_*`` checks that stock celery/kombu still has the defect. When
  one of these fails after an upgrade, upstream fixed it: delete that part of the
  shim (and this check).
"""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection, Consumer, Producer, Queue

from tests.helpers.monitoring import (  # noqa: F401
    _delete_session_queues,
    fake_worker,
    monitored_app,
    queues,
    subscriptions,
)
from workers.localstack.stack import emulator_client
from workers.monitoring import compat_sqs


def stock_connection(moto_endpoint: str, **options: object) -> Connection:
    port = moto_endpoint.rsplit(":", 1)[1]
    return Connection(
        f"sqs://testing:testing@127.0.0.1:{port}",
        transport_options={"is_secure": False, "region": "us-east-1", "wait_time_seconds": 1}
        | dict(options),
    )


# --------------------------------------------------------------------- D1 + D3
def test_d1_d3_events_cross_connections(moto_endpoint, bucket):
    """An event sent on one connection reaches a receiver on another one (each
    has its own routing table, as two processes do)."""
    app, ns = monitored_app(moto_endpoint, bucket)
    got: list[dict] = []
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            with app.connection_for_read() as conn:
                recv = app.events.Receiver(conn, handlers={"*": got.append})
                # until the first event, or TimeoutError after 15 s without a message
                # (limit=1 would mean one 1-second drain, then a silent stop)
                for _ in recv.consume(limit=None, timeout=15, wakeup=False):
                    if got:
                        break
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    # The receiver is ready once its queue is subscribed to the events topic: an
    # event published before that reaches no queue (SNS does not buffer).
    deadline = time.monotonic() + 15
    while not subscriptions(moto_endpoint, f"{ns}-ev-"):
        assert time.monotonic() < deadline, "the receiver never subscribed"
        time.sleep(0.05)
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="w@test", enabled=True)
        assert dispatcher.exchange.type == "fanout"
        dispatcher.send("worker-custom", answer=42)
        dispatcher.close()
    thread.join(timeout=20)
    assert not errors, errors
    assert [e["type"] for e in got] == ["worker-custom"] and got[0]["answer"] == 42
    # the receiver's queue is deleted when its connection closes
    assert queues(moto_endpoint, f"{ns}-ev-") == []


def test_upstream_d1_get_exchange_is_still_topic_on_sqs(moto_endpoint):
    with stock_connection(moto_endpoint, supports_fanout=True) as conn:
        assert compat_sqs.ORIGINAL_GET_EXCHANGE(conn).type == "topic", (
            "celery now picks fanout on SQS: remove D1 from workers/monitoring/compat_sqs.py"
        )


def test_upstream_d3_noack_consumer_without_hub_still_crashes(moto_endpoint):
    queue = Queue("stock-noack-test")
    with stock_connection(moto_endpoint) as conn:
        Producer(conn.default_channel).publish({"x": 1}, routing_key=queue.name, declare=[queue])
        with (
            Consumer(conn.default_channel, [queue], no_ack=True, callbacks=[]),
            pytest.raises(AttributeError, match="on_close"),
        ):
            conn.drain_events(timeout=3)


def test_d3_noack_consumer_without_hub_deletes_in_batches(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    queue = Queue(f"{ns}-d3-test")
    got: list[dict] = []
    with app.connection_for_write() as conn:
        producer = Producer(conn.default_channel)
        for i in range(3):
            producer.publish({"i": i}, routing_key=queue.name, declare=[queue])
        with Consumer(
            conn.default_channel, [queue], no_ack=True, callbacks=[lambda b, m: got.append(b)]
        ):
            deadline = time.monotonic() + 10
            while len(got) < 3 and time.monotonic() < deadline:
                conn.drain_events(timeout=2)
    assert sorted(b["i"] for b in got) == [0, 1, 2]
    sqs = emulator_client("sqs", moto_endpoint)
    url = sqs.get_queue_url(QueueName=queue.name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


# -------------------------------------------------------------------------- D2
def test_d2_transport_declares_fanout(moto_endpoint, bucket):
    app, _ = monitored_app(moto_endpoint, bucket)
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, compat_sqs.Transport)
        assert conn.supports_exchange_type("fanout")


def test_upstream_d2_stock_transport_still_denies_fanout(moto_endpoint):
    with stock_connection(moto_endpoint, supports_fanout=True) as conn:
        assert not conn.supports_exchange_type("fanout"), (
            "kombu's SQS transport now declares fanout: remove D2 from workers/monitoring/compat_sqs.py"
        )


# ------------------------------------------------------------- D4 + D5 + D6
#: A ping that returns at the first answer: a loaded machine may take seconds for the
#: round trip through moto's SNS and SQS; a healthy one returns at once (D6's bound on
#: the wait is test_d6_no_worker_means_an_empty_answer_within_the_timeout).
PING = {"timeout": 15, "limit": 1}


def test_d4_d5_ping_is_answered_through_one_reply_queue(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    with fake_worker(app, "fake@test"):
        first = app.control.ping(**PING)
        second = app.control.ping(**PING)
    assert first == [{"fake@test": {"ok": "pong"}}], first  # D4: the reply was routed
    assert second == first
    # D5: one reply queue for this thread, kept between calls
    assert len(queues(moto_endpoint, f"{ns}-reply-")) == 1


def test_d6_no_worker_means_an_empty_answer_within_the_timeout(moto_endpoint, bucket):
    app, _ = monitored_app(moto_endpoint, bucket)
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "wait_time_seconds": 20,
    }
    started = time.monotonic()
    assert app.control.ping(timeout=1) == []
    assert time.monotonic() - started < 6


def test_upstream_d5_stock_mailbox_names_a_reply_queue_per_call(moto_endpoint):
    from kombu.pidbox import Mailbox

    mailbox = Mailbox("stock", type="fanout")
    with stock_connection(moto_endpoint) as conn:
        a, b = mailbox(conn), mailbox(conn)
        assert a.oid != b.oid, "kombu reuses the reply queue now: revisit D5"


# -------------------------------------------------------------------------- D7
def test_d7_predefined_task_queue_does_not_forbid_monitoring_queues(moto_endpoint, bucket):
    sqs = emulator_client("sqs", moto_endpoint)
    url = sqs.create_queue(QueueName=f"q-{bucket}")["QueueUrl"]
    steps_url = sqs.create_queue(QueueName=f"q-{bucket}-steps")["QueueUrl"]
    app, _ = monitored_app(moto_endpoint, bucket, SCOREFLEET_QUEUE_URL=url)
    assert app.conf.broker_transport_options["predefined_queues"]
    with fake_worker(app, "fake@predefined"):
        assert app.control.ping(**PING) == [{"fake@predefined": {"ok": "pong"}}]
    # tasks still go to the predefined queues: new files to the task queue, the later
    # steps to the steps queue beside it
    app.send_task("tasks.launch", args=[{}])
    app.send_task("tasks.score", args=[{}])
    for queue_url in (url, steps_url):
        msgs = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
        assert len(msgs) == 1, queue_url


def test_upstream_d7_stock_predefined_queues_refuse_other_queues(moto_endpoint):
    from kombu.transport.SQS.exceptions import UndefinedQueueException

    url = emulator_client("sqs", moto_endpoint).create_queue(QueueName="stock-predef")["QueueUrl"]
    predefined = {"stock-predef": {"url": url}}
    with (
        stock_connection(moto_endpoint, predefined_queues=predefined) as conn,
        pytest.raises(UndefinedQueueException),
    ):
        conn.default_channel.queue_declare("stock-other-queue")


# ------------------------------------------------------------------------- D8
def _loader(client: object) -> object:
    return client._loader  # type: ignore[attr-defined]


def test_d8_every_sqs_and_sns_client_shares_the_process_session(moto_endpoint, bucket):
    """Two connections (a worker has several: tasks, events, remote control) and
    their SQS and SNS clients: one loader, so the service models are parsed once;
    the clients still talk to the connection's endpoint with its credentials."""
    from scorefleet import aws

    app, _ = monitored_app(moto_endpoint, bucket)
    with app.connection_for_write() as a, app.connection_for_read() as b:
        clients = [
            a.default_channel.sqs(),
            b.default_channel.sqs(),
            a.default_channel.fanout.get_client(),
        ]
        loaders = {id(_loader(c)) for c in clients}
        assert loaders == {id(_loader(aws.client("s3", region_name="us-east-1")))}
        for c in clients:
            assert c.meta.endpoint_url == moto_endpoint
        assert clients[0].list_queues()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_upstream_d8_stock_channels_still_make_a_session_per_client(moto_endpoint):
    with stock_connection(moto_endpoint) as a, stock_connection(moto_endpoint) as b:
        assert _loader(a.default_channel.sqs()) is not _loader(b.default_channel.sqs()), (
            "kombu now reuses one boto3 session: remove D8 from workers/monitoring/compat_sqs.py"
        )
