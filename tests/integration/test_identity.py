"""A run's identity is one upload, however it is seen (issue 10 item 3): events with
or without versionId and sequencer, reruns; A -> B -> A and the same bytes uploaded
again are new uploads, and an older run never publishes over a newer one."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from scorefleet.job import Output
from scorefleet.s3uri import S3Uri
from scorefleet.settings import load
from scorefleet.storage import outcome
from scorefleet.submission import Identity, build_job, identify, identity_of
from tests.helpers import base_env
from workers.localstack.stack import emulator_client

A = b"a,b\n" + b"1,2\n" * 150
B = b"a,b\n" + b"3,4\n" * 10


def job_of(settings, source: S3Uri, ident: Identity):
    return build_job(
        settings,
        source,
        {},
        version_id=ident.version_id,
        etag=ident.etag,
        size=ident.size,
        last_modified=ident.last_modified,
    )


def put(s3, bucket, body):
    resp = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=body)
    return resp["ETag"].strip('"'), resp.get("VersionId")


def test_versioned_event_without_version_id_is_pinned_by_its_etag(s3, bucket, moto_endpoint):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    settings = load(base_env(moto_endpoint, bucket))
    src = S3Uri(bucket, "in/a.csv")
    etag_a, v1 = put(s3, bucket, A)
    first = identify(s3, src, etag=etag_a)
    assert first is not None and first.version_id == v1
    put(s3, bucket, B)
    assert identify(s3, src, etag=etag_a) is None  # A is not the current upload: B's event scores B
    _, v3 = put(s3, bucket, A)  # A again: a new upload, a new run
    third = identify(s3, src, etag=etag_a)
    assert third is not None and third.version_id == v3 != v1
    assert job_of(settings, src, first).pipeline_id != job_of(settings, src, third).pipeline_id
    # the event's own versionId, when it has one, is taken as it is
    assert identify(s3, src, version_id=v1, etag=etag_a).version_id == v1
    # duplicates of one event, with or without the fields, are one pipeline
    with_version = identify(s3, src, version_id=v3, etag=etag_a)
    assert (
        job_of(settings, src, with_version).pipeline_id == job_of(settings, src, third).pipeline_id
    )


def test_unversioned_same_bytes_again_is_a_new_upload(s3, bucket, moto_endpoint):
    settings = load(base_env(moto_endpoint, bucket))
    src = S3Uri(bucket, "in/a.csv")
    etag, _ = put(s3, bucket, A)
    first = identify(s3, src, etag=etag)
    assert first.version_id is None and first.last_modified is not None
    old = job_of(settings, src, first)
    assert outcome.newer_source(s3, old) is None
    time.sleep(1.1)  # S3 keeps LastModified to the second
    put(s3, bucket, B)
    put(s3, bucket, A)  # A -> B -> A
    again = identify(s3, src, etag=etag)
    new = job_of(settings, src, again)
    assert new.pipeline_id != old.pipeline_id
    # the first run must not publish over the third upload's run (same ETag)
    assert outcome.newer_source(s3, old) is not None
    assert outcome.newer_source(s3, new) is None
    assert identity_of(s3.head_object(Bucket=bucket, Key="in/a.csv")) == again


def test_already_scored_means_this_upload_not_these_bytes(s3, bucket, moto_endpoint):
    settings = load(base_env(moto_endpoint, bucket))
    src = S3Uri(bucket, "in/a.csv")
    etag, _ = put(s3, bucket, A)
    old = job_of(settings, src, identify(s3, src, etag=etag))
    dest = outcome.scoreout_location(settings, src)
    s3.put_object(Bucket=bucket, Key="staging/x", Body=b"p\n")
    old = replace(old, output=Output(staging_key="staging/x", rows=1, size=2))
    outcome.publish_scoreout(settings, s3, old, S3Uri(bucket, "staging/x"), maybe_done=False)
    assert outcome.already_scored(settings, s3, old)
    time.sleep(1.1)
    put(s3, bucket, A)  # the same bytes, uploaded again: not scored yet
    new = job_of(settings, src, identify(s3, src, etag=etag))
    assert not outcome.already_scored(settings, s3, new)
    assert dest.key == "out/a.csv.scoreout"


def test_the_emulator_notifies_version_id_and_sequencer(s3, bucket, moto_endpoint):
    """The local stack delivers what S3 delivers (moto alone sends neither)."""
    sqs = emulator_client("sqs", moto_endpoint)
    url = sqs.create_queue(QueueName=f"ev-{bucket}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    versions = [put(s3, bucket, body)[1] for body in (A, B, A)]
    records = []
    deadline = time.monotonic() + 10
    while len(records) < 3 and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            body = json.loads(m["Body"])
            records += [r["s3"]["object"] for r in body.get("Records", [])]
    assert [r["versionId"] for r in records] == versions
    sequencers = [r["sequencer"] for r in records]
    assert sequencers == sorted(sequencers) and len(set(sequencers)) == 3
