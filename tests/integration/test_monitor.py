"""workers.monitoring.monitor: names, the life of per-session queues, and the sweeper."""

from __future__ import annotations

import threading
import time
from contextlib import suppress

from scorefleet.settings import load
from tests.helpers import base_env
from tests.helpers.monitoring import (  # noqa: F401
    _delete_session_queues,
    fake_worker,
    monitored_app,
    queues,
    subscriptions,
)
from workers.localstack.stack import emulator_client
from workers.monitoring import eventflush, monitor


def test_namespace_keeps_every_derived_name_within_sqs_limits():
    assert monitor.namespace("scorefleet") == "scorefleet-mon"
    long = monitor.namespace("a" * 75)
    assert len(long) <= 32 and long.endswith("-mon")
    assert long != monitor.namespace("a" * 74 + "b")
    from workers.monitoring.compat_sqs import node_queue_name, reply_queue_name

    assert len(reply_queue_name(f"reply.{long}.pidbox", "0" * 36)) <= 80
    assert len(node_queue_name(long, "celery@" + "h" * 200)) == 80
    assert len(f"{long}-ev-{'0' * 36}") <= 80


def test_celery_settings_follow_scorefleet_events(moto_endpoint, bucket):
    on = monitor.celery_settings(load(base_env(moto_endpoint, bucket)))
    assert on["worker_send_task_events"] and on["broker_transport_options"]["supports_fanout"]
    off = monitor.celery_settings(load(base_env(moto_endpoint, bucket, SCOREFLEET_EVENTS="false")))
    assert not off["worker_send_task_events"] and not off["worker_enable_remote_control"]
    assert "broker_transport_options" not in off
    # issue 17: task events gathered for a second, one SNS publish for many
    assert on["worker_consumer"] == "workers.monitoring.eventflush:Consumer"
    assert on[eventflush.SETTING] == 1.0
    assert "worker_consumer" not in off


def test_session_queues_are_tagged_short_lived_and_deleted_at_exit(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    sqs = emulator_client("sqs", moto_endpoint)
    with fake_worker(app, "tagged@test"):
        time.sleep(0.3)
        app.control.ping(timeout=1)
        (node,) = queues(moto_endpoint, f"{ns}-pidbox-")
        (reply,) = queues(moto_endpoint, f"{ns}-reply-")
        url = sqs.get_queue_url(QueueName=node)["QueueUrl"]
        tags = sqs.list_queue_tags(QueueUrl=url)["Tags"]
        assert tags[monitor.TAG_KIND] == "pidbox"
        assert abs(float(tags[monitor.TAG_SEEN]) - time.time()) < 60
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])
        assert attrs["Attributes"]["MessageRetentionPeriod"] == str(monitor.RETENTION_SECONDS)
        assert subscriptions(moto_endpoint, f"{ns}-") == [node]
    # the node's connection is closed, but its queue lives as long as the process
    assert queues(moto_endpoint, f"{ns}-pidbox-") == [node]
    deleted = monitor.SessionQueues.cleanup_all()
    assert {node, reply} <= set(deleted)
    assert queues(moto_endpoint, f"{ns}-") == []
    assert subscriptions(moto_endpoint, f"{ns}-") == []


def test_refresh_moves_the_seen_tag(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    app.control.ping(timeout=1)
    (reply,) = queues(moto_endpoint, f"{ns}-reply-")
    sqs = emulator_client("sqs", moto_endpoint)
    url = sqs.get_queue_url(QueueName=reply)["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={monitor.TAG_SEEN: "1"})
    monitor.SessionQueues._instances[ns].refresh()
    seen = float(sqs.list_queue_tags(QueueUrl=url)["Tags"][monitor.TAG_SEEN])
    assert time.time() - seen < 60


def test_sweep_deletes_only_abandoned_queues_and_their_subscriptions(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    sqs = emulator_client("sqs", moto_endpoint)
    sns = emulator_client("sns", moto_endpoint)
    with fake_worker(app, "alive@test"):
        time.sleep(0.3)
        (alive,) = queues(moto_endpoint, f"{ns}-pidbox-")
        # what a killed Flower leaves: a subscribed event queue nobody refreshes
        # (created by another process, so this one never deletes it)
        events_topic = sns.create_topic(Name=f"{ns}-events")["TopicArn"]
        dead_url = sqs.create_queue(
            QueueName=f"{ns}-ev-00000000-0000-0000-0000-000000000000",
            tags={monitor.TAG_SEEN: str(int(time.time()) - 3600)},
        )["QueueUrl"]
        dead_arn = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=events_topic,
            Protocol="sqs",
            Endpoint=dead_arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        # an old untagged one (from a client without this module) and a foreign queue
        old_url = sqs.create_queue(QueueName=f"{ns}-reply-untagged")["QueueUrl"]
        foreign = sqs.create_queue(QueueName=f"{ns}x-not-ours")["QueueUrl"]

        report = monitor.prune_queues(sqs, sns, ns, max_idle=600)
        assert report.queues_deleted == [f"{ns}-ev-00000000-0000-0000-0000-000000000000"]
        assert report.subscriptions_deleted == 1
        later = monitor.prune_queues(sqs, sns, ns, max_idle=600, now=time.time() + 3600)
        # an hour later without refreshes everything would go; the live one is
        # refreshed in production (see test_refresh_moves_the_seen_tag)
        assert f"{ns}-reply-untagged" in later.queues_deleted
        assert alive in later.queues_deleted
    assert queues(moto_endpoint, f"{ns}-") == []
    assert subscriptions(moto_endpoint, f"{ns}-") == []
    assert sqs.get_queue_url(QueueName=f"{ns}x-not-ours")["QueueUrl"] == foreign
    del old_url


def test_sweep_task_runs_with_the_apps_connection(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    sqs = emulator_client("sqs", moto_endpoint)
    sqs.create_queue(QueueName=f"{ns}-pidbox-gone_host-00000000", tags={monitor.TAG_SEEN: "1000"})
    report = monitor.prune_app(app, max_idle=900)
    assert report.queues_deleted == [f"{ns}-pidbox-gone_host-00000000"]


def test_event_queue_of_a_closed_receiver_is_deleted_at_once(moto_endpoint, bucket):
    app, ns = monitored_app(moto_endpoint, bucket)
    done = threading.Event()

    def receive() -> None:
        with app.connection_for_read() as conn, suppress(TimeoutError):
            recv = app.events.Receiver(conn, handlers={})
            for _ in recv.consume(limit=None, timeout=2, wakeup=False):
                pass
        done.set()

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not queues(moto_endpoint, f"{ns}-ev-") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(queues(moto_endpoint, f"{ns}-ev-")) == 1
    thread.join(timeout=20)
    assert queues(moto_endpoint, f"{ns}-ev-") == []
    assert subscriptions(moto_endpoint, f"{ns}-ev-") == []


def test_queue_listings_follow_every_page(moto_endpoint, bucket):
    """boto3's paginator, not a hand-written NextToken loop: five queues in pages of two."""
    sqs = emulator_client("sqs", moto_endpoint)
    names = [f"{bucket}-paged-{i}" for i in range(5)]
    for name in names:
        sqs.create_queue(QueueName=name)
    first = sqs.list_queues(QueueNamePrefix=f"{bucket}-paged-", MaxResults=2)
    assert len(first["QueueUrls"]) == 2 and first.get("NextToken")  # the emulator pages
    urls = monitor._list_queues(sqs, f"{bucket}-paged-", page_size=2)
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == names
