"""The sweep (workers/ops/sweep.py) against moto: which files it queues, which it leaves,
what it costs in requests, and its checkpoint."""

from __future__ import annotations

import collections
import json
import time

import pytest

from scorefleet.job import pipeline_id
from scorefleet.settings import load
from scorefleet.storage.ledger import Ledger, record_location
from scorefleet.submission import identity_of
from tests.helpers import base_env, run_cli
from tests.integration.test_handler import sent_tasks
from workers.ops.sweep import Finding, Sweep, SweepLimits, checkpoint_location


@pytest.fixture
def env(moto_endpoint, bucket):
    return base_env(moto_endpoint, bucket)


@pytest.fixture
def settings(env):
    return load(env)


@pytest.fixture
def app(settings):
    from scorefleet.celeryconf import make_app

    return make_app(settings)


def counted(s3):
    """Count the client's requests by operation name."""
    calls: collections.Counter[str] = collections.Counter()
    s3.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    return calls


def put(s3, bucket, key, body=b"a,b\n1,2\n", tags=None):
    extra = {"Tagging": tags} if tags else {}
    return s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def sweep(settings, s3, app, **limits):
    opts = {"grace_seconds": 0.0, **limits}
    return Sweep(settings, s3, app, SweepLimits(**opts))


def queued_keys(moto_endpoint, settings):
    """The keys whose chain was sent (not the refusals shown in Flower: tasks.refused)."""
    return sorted(
        args[0]["key"]
        for name, _id, args, _chain in sent_tasks(moto_endpoint, settings.broker.queue)
        if name == "tasks.launch"
    )


def next_second() -> None:
    """Wait for the next whole second: S3 (and moto) keep LastModified to the second,
    and an outcome of the same second as its input is looked at more closely."""
    time.sleep(1.01 - time.time() % 1)


def test_queues_unscored_files_only_and_heads_no_scored_one(
    settings, s3, app, bucket, moto_endpoint
):
    for i in range(5):
        put(s3, bucket, f"in/scored-{i}.csv")
    put(s3, bucket, "in/failed.csv")
    next_second()
    for i in range(5):
        put(s3, bucket, f"out/scored-{i}.csv.scoreout", b"x\n")
    put(s3, bucket, "out/failed.csv.error", b"why\n")
    put(s3, bucket, "in/lost-1.csv")
    put(s3, bucket, "in/sub/lost-2.csv")
    put(s3, bucket, "in/folder/")
    calls = counted(s3)
    report = sweep(settings, s3, app).run()
    assert queued_keys(moto_endpoint, settings) == ["in/lost-1.csv", "in/sub/lost-2.csv"]
    assert report.findings[Finding.SCORED] == 6
    assert report.findings[Finding.ENQUEUED] == 2
    assert report.complete and report.listed == 9
    # issue 28: "(2 has its outcome)"
    assert report.summary().endswith("queued 2 (2 enqueued, 6 have their outcome)")
    # the scored files cost nothing beyond the listings: a HEAD and a tag read per
    # queued file (the notification path), never one per scored file
    assert calls["HeadObject"] == 2
    assert calls["GetObjectTagging"] == 2
    assert calls["ListObjectsV2"] == 2  # the input prefix, and the output prefix
    # each queued file is marked queued in its run record (scorefleet status)
    rec = Ledger(settings, s3).get(pid_of(s3, bucket, "in/lost-1.csv"))
    assert rec is not None and rec.state == "queued"


def pid_of(s3, bucket, key):
    """The pipeline id of the current upload of ``key`` (as the notification path makes it)."""
    ident = identity_of(s3.head_object(Bucket=bucket, Key=key))
    return pipeline_id(bucket, key, ident.version_id, ident.etag, ident.last_modified)


def test_a_queued_file_is_not_queued_again_until_the_requeue_time(
    settings, s3, app, bucket, moto_endpoint
):
    put(s3, bucket, "in/lost.csv")
    assert sweep(settings, s3, app).run().findings[Finding.ENQUEUED] == 1
    assert queued_keys(moto_endpoint, settings) == ["in/lost.csv"]
    again = sweep(settings, s3, app).run()
    assert again.findings[Finding.IN_PROGRESS] == 1
    assert queued_keys(moto_endpoint, settings) == []
    later = Sweep(
        settings,
        s3,
        app,
        SweepLimits(grace_seconds=0, requeue_after=60),
        clock=lambda: time.time() + 120,
    ).run()
    assert later.findings[Finding.ENQUEUED] == 1  # its chain was lost: queued again


def test_runs_in_progress_and_finished_records_are_left_alone(settings, s3, app, bucket):
    ledger = Ledger(settings, s3)
    for name, state, lease in (
        ("running", "running", time.time() + 600),
        ("dead", "running", time.time() - 5),
        ("done", "published", 0),
    ):
        put(s3, bucket, f"in/{name}.csv")
        loc = record_location(settings, pid_of(s3, bucket, f"in/{name}.csv"))
        body = {"run_id": "x", "state": state, "lease_until": lease}
        s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=json.dumps(body).encode())
    report = sweep(settings, s3, app).run()
    assert report.findings[Finding.IN_PROGRESS] == 1
    assert report.findings[Finding.FINISHED] == 1  # (its .scoreout was removed since)
    assert report.queued == [f"s3://{bucket}/in/dead.csv"]  # a dead worker's run
    assert ledger.get(pid_of(s3, bucket, "in/done.csv")).state == "published"


def test_young_files_wait_and_an_outcome_older_than_the_file_does_not_count(
    settings, s3, app, bucket
):
    put(s3, bucket, "out/replaced.csv.scoreout", b"old\n")
    time.sleep(1.1)
    put(s3, bucket, "in/replaced.csv")  # a new upload whose notification was lost
    young = Sweep(settings, s3, app, SweepLimits(grace_seconds=3600)).run()
    assert young.findings[Finding.YOUNG] == 1 and not young.queued
    report = sweep(settings, s3, app).run()
    assert report.queued == [f"s3://{bucket}/in/replaced.csv"]


def test_an_outcome_of_the_same_second_counts_only_if_it_is_this_uploads(
    settings, s3, app, bucket, moto_endpoint
):
    """S3 keeps LastModified to the second: a re-upload in the second its previous
    outcome was written (and whose notification is lost) is not taken for scored;
    an outcome of the same second made from this very upload is (issue 24)."""
    next_second()  # the puts below take well under a second
    old = put(s3, bucket, "in/again.csv", b"a\n1\n")
    mine = put(s3, bucket, "in/mine.csv")
    for key, source in (("again", old), ("mine", mine)):
        s3.put_object(
            Bucket=bucket,
            Key=f"out/{key}.csv.scoreout",
            Body=b"x\n",
            Metadata={"source-etag": source["ETag"].strip('"')},
        )
    put(s3, bucket, "in/again.csv", b"a\n2\n")  # re-uploaded in the same second
    listed = {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed["in/again.csv"] == listed["out/again.csv.scoreout"]
    report = sweep(settings, s3, app).run()
    assert queued_keys(moto_endpoint, settings) == ["in/again.csv"]
    assert report.findings[Finding.SCORED] == 1  # mine.csv


def test_keys_that_sort_apart_from_their_outcomes(settings, s3, app, bucket):
    """``a`` < ``a-1`` but ``a-1.scoreout`` < ``a.scoreout``: both are found scored."""
    for key in ("a", "a-1", "a.b", "a0"):
        put(s3, bucket, f"in/{key}")
    next_second()
    for key in ("a", "a-1", "a.b", "a0"):
        put(s3, bucket, f"out/{key}.scoreout", b"x\n")
    calls = counted(s3)
    report = sweep(settings, s3, app, max_keys=2).run()
    assert report.findings[Finding.SCORED] == 2, report.findings
    report = sweep(settings, s3, app, max_keys=2).run()
    assert report.findings[Finding.SCORED] == 2, report.findings
    assert calls["HeadObject"] == 0


def test_checkpoint_bounds_each_run_and_wraps_around(settings, s3, app, bucket, moto_endpoint):
    for i in range(7):
        put(s3, bucket, f"in/f{i}.csv")
    seen = []
    for _ in range(3):
        report = sweep(settings, s3, app, max_keys=3, max_enqueue=100).run()
        seen.append((report.listed, report.complete))
    assert seen == [(3, False), (3, False), (1, True)]
    assert len(queued_keys(moto_endpoint, settings)) == 7
    loc = checkpoint_location(settings)
    assert json.loads(s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read())["after"] == ""
    # the next run starts over: every file is queued already
    report = sweep(settings, s3, app, max_keys=10).run()
    assert report.findings[Finding.IN_PROGRESS] == 7


def test_max_enqueue_leaves_the_rest_for_the_next_run(settings, s3, app, bucket):
    for i in range(4):
        put(s3, bucket, f"in/f{i}.csv")
    report = sweep(settings, s3, app, max_enqueue=1).run()
    assert len(report.queued) == 1 and report.findings[Finding.OVER_CAP] == 3


def test_a_refused_file_gets_its_error_like_a_notification(
    settings, s3, app, bucket, moto_endpoint
):
    put(s3, bucket, "in/bad.csv", tags="model_image=evil.example/x:1")
    report = sweep(settings, s3, app).run()
    assert report.findings[Finding.REJECTED] == 1
    assert queued_keys(moto_endpoint, settings) == []
    body = s3.get_object(Bucket=bucket, Key="out/bad.csv.error")["Body"].read().decode()
    assert "not allowed" in body
    assert sweep(settings, s3, app).run().findings[Finding.SCORED] == 1


def test_dry_run_writes_and_sends_nothing(settings, s3, app, bucket, moto_endpoint):
    put(s3, bucket, "in/lost.csv")
    put(s3, bucket, "in/bad.csv", tags="model_image=evil.example/x:1")
    report = sweep(settings, s3, app).run(dry_run=True)
    assert report.queued == [f"s3://{bucket}/in/lost.csv"]
    assert queued_keys(moto_endpoint, settings) == []
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == ["in/bad.csv", "in/lost.csv"]


def test_cli_sweep_prefix_and_dry_run(env, s3, bucket, moto_endpoint, settings):
    put(s3, bucket, "in/a/one.csv")
    put(s3, bucket, "in/b/two.csv")
    env = {**env, "SCOREFLEET_SWEEP_GRACE_SECONDS": "0"}
    res = run_cli(["workers.cli", "sweep", "--dry-run", "--prefix", "a/"], env)
    assert res.returncode == 0, res.stderr
    assert f"would queue s3://{bucket}/in/a/one.csv" in res.stdout
    assert "two.csv" not in res.stdout
    assert queued_keys(moto_endpoint, settings) == []
    res = run_cli(["workers.cli", "sweep", "--json"], env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["findings"] == {"enqueued": 2}
    assert queued_keys(moto_endpoint, settings) == ["in/a/one.csv", "in/b/two.csv"]
    res = run_cli(["workers.cli", "sweep", "--prefix", "s3://elsewhere/x/"], env)
    assert res.returncode != 0 and "not under the input location" in res.stderr


def test_an_unreadable_checkpoint_starts_over_and_is_written_anew(settings, s3, app, bucket):
    put(s3, bucket, "in/a.csv")
    loc = checkpoint_location(settings)
    s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=b"not json")
    report = sweep(settings, s3, app).run()
    assert report.started_after == "" and report.queued == [f"s3://{bucket}/in/a.csv"]
    assert json.loads(s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read())["after"] == ""
