"""``scorefleet status`` / ``runs`` (tasks/runstatus.py, workers/cli/runs.py): a file's
state from its run record, recent runs, the progress the score step records, and the
progress bar of ``--wait``."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace

import pytest

from scorefleet.job import Output
from scorefleet.runstatus import FileState, render, state_of, view
from scorefleet.settings import load
from scorefleet.storage.ledger import Ledger, record_location
from tests.helpers import base_env, make_job, run_cli
from tests.integration.test_sweep import pid_of
from workers.cli.runs import RunBar, parse_since
from workers.scoring.progress import RunProgress


@pytest.fixture
def env(moto_endpoint, bucket):
    return base_env(moto_endpoint, bucket)


@pytest.fixture
def settings(env):
    return load(env)


@pytest.mark.parametrize(
    ("record", "state"),
    [
        (None, FileState.NOT_SEEN),
        ({"state": "queued"}, FileState.QUEUED),
        ({"state": "running"}, FileState.LAUNCHING),  # a record of an older worker
        ({"state": "running", "phase": "launching"}, FileState.LAUNCHING),
        ({"state": "running", "phase": "scoring"}, FileState.SCORING),
        ({"state": "running", "phase": "publishing"}, FileState.PUBLISHING),
        ({"state": "published"}, FileState.PUBLISHED),
        ({"state": "failed"}, FileState.FAILED),
        ({"state": "superseded"}, FileState.SUPERSEDED),
    ],
)
def test_state_of_a_record(record, state):
    assert state_of(record) is state


@pytest.mark.parametrize(
    ("read", "total", "text"),
    [
        (4_321, 4_321, "4.3 of 4.3 kB read"),  # issue 28: a small file said 0.0 of 0.0 MB
        (310, 310, "310 of 310 bytes read"),
        (5_000_000, 10_000_000, "5.0 of 10.0 MB read"),
        (2_500_000_000, 12_000_000_000, "2.5 of 12.0 GB read"),
        (900, None, "900 bytes read"),
    ],
)
def test_the_bytes_read_in_the_files_own_unit(read, total, text):
    rec = {"state": "published", "rows": 3, "bytes_read": read, "total_bytes": total}
    assert render(view("s3://b/in/x.jsonl", "sf-1", rec)).count(text) == 1


def test_view_of_a_run_scoring_and_one_that_stalled():
    now = 1_000_000.0
    rec = {
        "run_id": "sf-1",
        "state": "running",
        "phase": "scoring",
        "rows": 12345,
        "bytes_read": 5_000_000,
        "total_bytes": 10_000_000,
        "attempts": 2,
        "queued_at": now - 100,
        "started_at": now - 90,
        "progress_at": now - 3,
        "lease_until": now + 60,
        "model_image": "test/ok:1",
    }
    v = view("s3://b/in/x.csv", "sf-1", rec, now=now)
    assert (v.state, v.rows, v.attempts, v.stalled) == ("scoring", 12345, 2, False)
    text = render(v, now=now)
    assert "scoring (12,345 rows, 5.0 of 10.0 MB read so far)" in text
    assert "attempts    2" in text and "test/ok:1" in text
    assert "rerun       scorefleet rerun s3://b/in/x.csv" in text
    dead = view("s3://b/in/x.csv", "sf-1", {**rec, "lease_until": now - 1}, now=now)
    assert dead.stalled and "stalled" in render(dead, now=now)
    assert view("s3://b/x", "p", None).state == "not seen"
    assert "the sweep queues it" in render(view("s3://b/x", "p", None))


def test_the_record_through_a_run(settings, s3, bucket):
    """queued (intake) -> launching (claim) -> scoring (a writer registered for a large
    output, or the first progress) -> publishing -> published."""
    job = make_job(bucket=bucket, key="in/a.csv")
    ledger = Ledger(settings, s3)
    assert ledger.mark_queued(job)
    assert state_of(ledger.get(job.pipeline_id).data) is FileState.QUEUED
    assert not ledger.mark_queued(job)  # never over an existing record
    ledger.claim(job, "owner-1", 60)
    job = job.claimed("owner-1")
    rec = ledger.get(job.pipeline_id).data
    assert state_of(rec) is FileState.LAUNCHING and rec["attempts"] == 1
    assert rec["queued_at"] == job.enqueued_at
    ledger.register_writer(job, "staging/x", 60)
    assert state_of(ledger.get(job.pipeline_id).data) is FileState.SCORING
    clock = [0.0]
    read = [500]  # what the input's reader has read so far
    progress = RunProgress(ledger, job, 1000, read=lambda: read[0], every=5, clock=lambda: clock[0])
    assert progress.bytes_read == 500 and progress.fraction_read() == 0.5

    class Stats:
        rows = 42

    progress.update(Stats)  # the first mini-batch: not written (the file may be done soon)
    clock[0] = 0.9
    progress.update(Stats)  # within a second: not written either
    assert "rows" not in ledger.get(job.pipeline_id).data and progress.writes == 0
    clock[0] = 1.0
    progress.update(Stats)  # a second in: shown
    rec = ledger.get(job.pipeline_id).data
    assert (rec["rows"], rec["bytes_read"], rec["total_bytes"]) == (42, 500, 1000)
    assert state_of(rec) is FileState.SCORING
    Stats.rows = 50
    clock[0] = 5.9
    progress.update(Stats)  # then every 5 s
    assert ledger.get(job.pipeline_id).data["rows"] == 42
    clock[0] = 6.0
    progress.update(Stats)
    assert ledger.get(job.pipeline_id).data["rows"] == 50
    assert progress.writes == 2
    progress.done(Stats)
    assert state_of(ledger.get(job.pipeline_id).data) is FileState.PUBLISHING
    job = replace(job, output=Output(rows=42))
    seen = ledger.get(job.pipeline_id)
    ledger.record_outcome(job, "published", "s3://b/out/a.csv.scoreout", "staging/x", seen=seen)
    v = view("s3://b/in/a.csv", job.pipeline_id, ledger.get(job.pipeline_id).data)
    assert (v.state, v.rows, v.outcome) == ("published", 42, "s3://b/out/a.csv.scoreout")
    assert v.finished_at and v.started_at and v.queued_at


def test_status_shows_the_replicas_a_file_is_scored_with(settings, s3, bucket):
    """Issue 25: the score step's progress records its model replicas (when several),
    and ``scorefleet status`` shows them beside the image."""
    job = make_job(bucket=bucket, key="in/r.csv")
    ledger = Ledger(settings, s3)
    ledger.claim(job, "owner-1", 60)
    job = job.claimed("owner-1")
    clock = [0.0]
    progress = RunProgress(
        ledger, job, 10, read=lambda: 5, every=5, clock=lambda: clock[0], replicas=4
    )

    class Stats:
        rows = 7

    clock[0] = 2.0
    progress.update(Stats)
    rec = ledger.get(job.pipeline_id).data
    assert rec["replicas"] == 4
    text = render(view("s3://b/in/r.csv", job.pipeline_id, {**rec, "model_image": "i:1"}))
    assert "model       i:1 (4 replicas)" in text
    single = RunProgress(ledger, job, 10, read=lambda: 5, every=5, clock=lambda: clock[0])
    assert single.replicas == 1
    assert "(1 replicas)" not in render(view("s3://b/x", "p", {"model_image": "i:1"}))


def test_a_file_scored_within_a_second_writes_no_progress(settings, s3, bucket):
    """Issue 17: a small file's record goes from its claim straight to its outcome;
    the progress and publishing writes (a GET and a PUT each) are for longer files."""
    job = make_job(bucket=bucket, key="in/a.csv")
    ledger = Ledger(settings, s3)
    ledger.claim(job, "owner-1", 60)
    job = job.claimed("owner-1")
    before = ledger.get(job.pipeline_id)  # its output fits one PUT: no writer registered
    clock = [0.0]
    progress = RunProgress(ledger, job, 1000, read=lambda: 500, every=5, clock=lambda: clock[0])

    class Stats:
        rows = 42

    clock[0] = 0.9
    progress.update(Stats)
    progress.done(Stats)
    assert progress.writes == 0
    after = ledger.get(job.pipeline_id)
    assert after.etag == before.etag and state_of(after.data) is FileState.LAUNCHING


def test_cli_status_and_runs(env, settings, s3, bucket):
    ledger = Ledger(settings, s3)
    s3.put_object(Bucket=bucket, Key="in/ok.csv", Body=b"a\n1\n")
    s3.put_object(Bucket=bucket, Key="in/bad.csv", Body=b"a\n1\n")
    s3.put_object(Bucket=bucket, Key="in/never.csv", Body=b"a\n1\n")
    s3.put_object(Bucket=bucket, Key="out/bad.csv.error", Body=b"line one\nline two\n")
    for key, state, extra in (
        ("in/ok.csv", "published", {"outcome": f"s3://{bucket}/out/ok.csv.scoreout", "rows": 1}),
        ("in/bad.csv", "failed", {"outcome": f"s3://{bucket}/out/bad.csv.error"}),
    ):
        loc = record_location(settings, pid_of(s3, bucket, key))
        body = {"run_id": "r", "state": state, "source": f"s3://{bucket}/{key}", **extra}
        s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=json.dumps(body).encode())
    res = run_cli(["workers.cli", "status", f"s3://{bucket}/in/ok.csv"], env)
    assert res.returncode == 0, res.stderr
    assert "state       published (1 rows)" in res.stdout
    res = run_cli(["workers.cli", "status", f"s3://{bucket}/in/bad.csv", "--json"], env)
    data = json.loads(res.stdout)
    assert data["state"] == "failed" and data["error"] == "line one\nline two"
    assert data["rerun"] == f"scorefleet rerun s3://{bucket}/in/bad.csv"
    res = run_cli(["workers.cli", "status", f"s3://{bucket}/in/never.csv"], env)
    assert "state       not seen" in res.stdout
    res = run_cli(["workers.cli", "status", f"s3://{bucket}/in/missing.csv"], env)
    assert res.returncode != 0 and "does not exist" in res.stderr
    res = run_cli(["workers.cli", "runs", "--json"], env)
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(line)["state"] for line in res.stdout.splitlines()) == [
        "failed",
        "published",
    ]
    res = run_cli(["workers.cli", "runs", "--failed"], env)
    assert "bad.csv" in res.stdout and "ok.csv" not in res.stdout
    res = run_cli(["workers.cli", "runs", "--max-scan", "1", "--limit", "1"], env)
    header, _line = res.stdout.splitlines()  # issue 28: the header says a line is an upload
    assert "one line per upload of a file" in header and "--max-scan" in res.stderr
    assert ledger.get(pid_of(s3, bucket, "in/ok.csv")) is not None


def test_parse_since():
    assert parse_since("90s") == 90 and parse_since("15m") == 900 and parse_since("2d") == 172800
    with pytest.raises(Exception, match="duration"):
        parse_since("yesterday")


def test_wait_bar_follows_the_record(settings, s3, bucket):
    job = make_job(bucket=bucket, key="in/a.csv")
    ledger = Ledger(settings, s3)
    out = io.StringIO()
    bar = RunBar(settings, s3, job.pipeline_id, time.time(), file=out, disable=False)
    bar.POLL_SECONDS = 0
    bar.poll()
    assert bar.bar is None  # no record yet
    ledger.claim(job, "o", 60)
    job = job.claimed("o")
    ledger.progress(job, "scoring", rows=1000, bytes_read=400, total_bytes=1000)
    bar.poll()
    assert bar.bar.total == 1000 and bar.bar.n == 400
    assert "scoring" in out.getvalue() and "1,000 rows" in out.getvalue()
    bar.close()
