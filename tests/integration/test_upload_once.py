"""tasks.upload publishes a run's outcome once, also when its chain exists twice.

With acks_late a step sends its next task before its own message is deleted: a
worker killed in between leaves the step's message to be redelivered, and the
rerun step sends the rest of the chain a second time. Both copies are first
deliveries of their own messages, so nothing about the message tells them apart:
the run's ledger record does (scorefleet.storage.ledger.Ledger.record_outcome). These tests
run the real upload task in this process against moto.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

import tasks.base
import tasks.launch
import tasks.score
from scorefleet.job import Failure, Job, Output, pipeline_id, rerun_id
from scorefleet.storage.ledger import Publication, staging_location
from tasks.upload import upload as upload_task
from tests.helpers import base_env, make_job
from workers import runtime
from workers.localstack.stack import emulator_client

SOURCE = b"a,b\n1,2\n3,4\n"


@pytest.fixture
def env(moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in base_env(moto_endpoint, bucket).items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    # Every message here is a first delivery, as both copies of a chain are.
    monkeypatch.setattr(tasks.score, "first_delivery", lambda task: True)
    yield
    runtime.reset()


@pytest.fixture
def s3(moto_endpoint: str, bucket: str) -> Any:
    client = emulator_client("s3", moto_endpoint)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return client


def scored_attempt(s3: Any, bucket: str, output: bytes) -> Job:
    """A job as a scoring attempt of in/a.csv leaves it: claimed, output staged. Its
    run id is the file's own pipeline id (a step refuses any other: scorefleet.vouch)."""
    etag = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=SOURCE)["ETag"].strip('"')
    run_id = pipeline_id(bucket, "in/a.csv", None, etag)
    job = make_job(run_id, bucket, etag=etag, size=len(SOURCE))
    staging = staging_location(runtime.current().settings, run_id)
    s3.put_object(Bucket=staging.bucket, Key=staging.key, Body=output)
    return replace(job, output=Output(staging_key=staging.key, rows=2, size=len(output)))


def claim(job: Job) -> None:
    assert runtime.current().ledger.claim(job, "launch-message", 60).value == "claimed"


def upload(job: Job) -> dict[str, Any]:
    result = upload_task.apply(args=[job.to_dict()])
    assert result.successful(), result.traceback
    return dict(result.result)


def versions(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    return [v for v in listed if v["Key"] == key]


def staged(s3: Any, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="scorefleet-state/staging/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_copy_of_the_chain_publishes_nothing(env, s3, bucket):
    first = scored_attempt(s3, bucket, b"p\n0.1\n0.2\n")
    claim(first)
    second = scored_attempt(s3, bucket, b"p\n0.1\n0.2\n")  # the copy's own scoring

    assert upload(first)["published"] == f"s3://{bucket}/out/a.csv.scoreout"
    done = upload(second)
    assert done["skipped"] == "published by another attempt" and not done.get("published")
    assert len(versions(s3, bucket, "out/a.csv.scoreout")) == 1
    assert staged(s3, bucket) == []  # the copy's staging object went too

    # the copy fails afterwards (say its model died): no .error, the output stays
    second = replace(
        second, failure=Failure(step="score", kind="ModelUnavailable", message="gone", attempts=1)
    )
    assert upload(second)["skipped"] == "published by another attempt"
    assert versions(s3, bucket, "out/a.csv.error") == []
    assert len(versions(s3, bucket, "out/a.csv.scoreout")) == 1

    # the publishing attempt's own redelivery looks first and publishes nothing new
    again = upload(first)
    assert again["published"] == f"s3://{bucket}/out/a.csv.scoreout" and not again.get("skipped")
    assert len(versions(s3, bucket, "out/a.csv.scoreout")) == 1
    record = runtime.current().ledger.get(first.pipeline_id)
    assert record is not None and record.state == "published"
    assert record.data["publisher"] == first.output.staging_key


def test_concurrent_copies_publish_once(env, s3, bucket):
    attempts = [scored_attempt(s3, bucket, b"p\n0.5\n0.6\n") for _ in range(4)]
    claim(attempts[0])
    barrier = threading.Barrier(len(attempts))
    results: list[dict[str, Any]] = []

    def go(job: Job) -> None:
        barrier.wait(timeout=10)
        results.append(upload(job))

    threads = [threading.Thread(target=go, args=(job,)) for job in attempts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4
    assert sum(1 for r in results if r.get("published")) == 1, results
    assert len(versions(s3, bucket, "out/a.csv.scoreout")) == 1


def test_own_failure_after_recording_publishes_the_error(env, s3, bucket):
    """The attempt that recorded "published" and then could not copy (a permanent
    error) hands over to its failure tail, which must publish the .error."""
    job = scored_attempt(s3, bucket, b"p\n1\n1\n")
    claim(job)
    ledger = runtime.current().ledger
    verdict = ledger.record_outcome(
        job, "published", f"s3://{bucket}/out/a.csv.scoreout", job.output.staging_key, seen=None
    )
    assert verdict is Publication.FIRST
    job = replace(
        job, failure=Failure(step="upload", kind="AccessDenied", message="no", attempts=1)
    )
    assert upload(job)["published"] == f"s3://{bucket}/out/a.csv.error"
    record = ledger.get(job.pipeline_id)
    assert record is not None and record.state == "failed"
    assert versions(s3, bucket, "out/a.csv.scoreout") == []


def test_record_outcome_states(env, s3, bucket):
    ledger = runtime.current().ledger
    job = make_job("sf-00000000000000000c04", bucket)
    # no record at all (say the state prefix was cleaned): the first attempt records it
    assert ledger.record_outcome(job, "failed", None, "no-output", seen=None) is Publication.FIRST
    seen = ledger.get(job.pipeline_id)
    assert ledger.record_outcome(job, "failed", None, "no-output", seen=seen) is Publication.AGAIN
    assert ledger.record_outcome(job, "published", "s3://x", "k", seen=seen) is (
        Publication.DUPLICATE
    )
    newer = make_job("sf-00000000000000000c04-r1", bucket, force=True)
    assert ledger.claim(newer, "m", 60).value == "claimed"
    stale = ledger.get(job.pipeline_id)
    assert ledger.record_outcome(job, "published", "s3://x", "k", seen=stale) is (
        Publication.SUPERSEDED
    )


def test_a_copy_leaves_the_publishers_staging_alone(env, s3, bucket):
    """The copy can reach upload after the publisher recorded its outcome but before
    it copied (or while it retries the copy): it must not delete what the publisher
    still has to copy."""
    publisher = scored_attempt(s3, bucket, b"p\n0.7\n0.8\n")
    claim(publisher)
    copy = scored_attempt(s3, bucket, b"p\n0.7\n0.8\n")
    dest = f"s3://{bucket}/out/a.csv.scoreout"
    ledger = runtime.current().ledger
    seen = ledger.get(publisher.pipeline_id)
    assert (
        ledger.record_outcome(publisher, "published", dest, publisher.output.staging_key, seen=seen)
        is Publication.FIRST
    )

    assert upload(copy)["skipped"] == "published by another attempt"
    assert staged(s3, bucket) == [publisher.output.staging_key]  # only the copy's own went

    # the publisher's upload (its retry after the record was written) still publishes
    assert upload(publisher)["published"] == dest
    got = s3.get_object(Bucket=bucket, Key="out/a.csv.scoreout")["Body"].read()
    assert got == b"p\n0.7\n0.8\n"
    assert staged(s3, bucket) == []


def rejected_attempt(s3: Any, bucket: str) -> Job:
    """A scoring attempt whose model refused one row: its .rejected staged beside it."""
    from scorefleet.storage.ledger import rejected_staging_key

    job = scored_attempt(s3, bucket, b"p\n0.1\n")
    assert job.output.staging_key is not None
    key = rejected_staging_key(job.output.staging_key)
    s3.put_object(Bucket=bucket, Key=key, Body=b"scorefleet_row,a,b,scorefleet_message\n2,3,4,no\n")
    return replace(job, output=replace(job.output, rows=1, rejected_rows=1))


def test_the_rejected_rows_are_published_once_with_the_scoreout(env, s3, bucket):
    """Exactly-once covers .rejected: a copy of the chain publishes neither, the
    publishing attempt's redelivery neither again; a later clean run removes it."""
    first = rejected_attempt(s3, bucket)
    claim(first)
    second = rejected_attempt(s3, bucket)
    assert upload(first)["published"] == f"s3://{bucket}/out/a.csv.scoreout"
    assert upload(second)["skipped"] == "published by another attempt"
    upload(first)  # redelivered
    assert len(versions(s3, bucket, "out/a.csv.rejected")) == 1
    assert len(versions(s3, bucket, "out/a.csv.scoreout")) == 1
    body = s3.get_object(Bucket=bucket, Key="out/a.csv.rejected")["Body"].read()
    assert body.decode().splitlines()[1] == "2,3,4,no"
    tags = s3.get_object_tagging(Bucket=bucket, Key="out/a.csv.scoreout")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["rejected_rows"] == "1"
    assert staged(s3, bucket) == []
    # the file scored again (a forced rerun, cleanly): its .scoreout takes the .rejected away
    clean = scored_attempt(s3, bucket, b"p\n0.1\n0.2\n")
    ticket = replace(clean.ticket, run_id=rerun_id(clean.pipeline_id), force=True)
    staging = staging_location(runtime.current().settings, ticket.run_id)
    s3.put_object(Bucket=staging.bucket, Key=staging.key, Body=b"p\n0.1\n0.2\n")
    clean = replace(clean, ticket=ticket, output=replace(clean.output, staging_key=staging.key))
    claim(clean)
    assert upload(clean)["published"] == f"s3://{bucket}/out/a.csv.scoreout"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="out/a.csv.rejected")
