"""S3 I/O and the run ledger against moto over HTTP."""

from dataclasses import replace

import pytest

from scorefleet.job import Output
from scorefleet.s3uri import S3Uri
from scorefleet.settings import load
from scorefleet.storage.ledger import Claim, Ledger
from scorefleet.storage.multipart import MultipartWriter
from scorefleet.storage.s3io import publish_copy, read_tags
from tests.helpers import base_env, make_job


def test_multipart_writer_streams_parts_and_publishes_atomically(s3, bucket):
    dest = S3Uri(bucket, "staging/x.part")
    chunks = [bytes([65 + i % 26]) * 1_000_003 for i in range(13)]
    with MultipartWriter(s3, dest, part_size=5 * 1024 * 1024) as w:
        for c in chunks:
            w.write(c)
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="staging/")
        w.complete()
    assert s3.get_object(Bucket=bucket, Key=dest.key)["Body"].read() == b"".join(chunks)
    final = S3Uri(bucket, "out/x.scoreout")
    publish_copy(s3, dest, final, tags={"rows": 13, "model_image": "reg/m:1"}, metadata={"a": "b"})
    head = s3.head_object(Bucket=bucket, Key=final.key)
    assert head["ContentLength"] == sum(map(len, chunks)) and head["Metadata"] == {"a": "b"}
    assert read_tags(s3, bucket, final.key, None) == {"rows": "13", "model_image": "reg/m:1"}


def test_empty_output_and_abort(s3, bucket):
    with MultipartWriter(s3, S3Uri(bucket, "e")) as w:
        w.complete()
    assert s3.get_object(Bucket=bucket, Key="e")["Body"].read() == b""
    with pytest.raises(RuntimeError), MultipartWriter(s3, S3Uri(bucket, "f")) as w:
        w.write(b"partial")
        raise RuntimeError("scoring failed")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="f")


def test_a_writer_is_registered_only_before_a_multipart_upload(s3, bucket):
    """Issue 17: the scoring step registers its writer (a GET and a PUT of the run
    record) in ``on_start``, before the multipart upload that a redelivery could
    abort exists; an output of one part is a single PUT and registers nothing."""
    events = []
    s3.meta.events.register(
        "before-call.s3.CreateMultipartUpload", lambda **kw: events.append("create")
    )
    with MultipartWriter(
        s3, S3Uri(bucket, "small"), on_start=lambda: events.append("on_start")
    ) as w:
        w.write(b"p\n" * 1000)
        w.complete()
    assert events == []
    with MultipartWriter(
        s3,
        S3Uri(bucket, "big"),
        part_size=5 * 1024 * 1024,
        on_start=lambda: events.append("on_start"),
    ) as w:
        w.write(b"x" * (6 * 1024 * 1024))
        w.complete()
    assert events == ["on_start", "create"]


def test_old_tag_names_are_accepted(s3, bucket):
    s3.put_object(
        Bucket=bucket,
        Key="in/a",
        Body=b"x",
        Tagging="modelimagename=old%2Fimg&k8snamespace=ns1&model_image=new%2Fimg",
    )
    assert read_tags(s3, bucket, "in/a", None) == {"model_image": "new/img", "k8s_namespace": "ns1"}


def job_for(bucket, run_id="sf-0000000000000000000a", force=False):
    return make_job(run_id, bucket, force=force)


def test_ledger_claims(moto_endpoint, bucket, s3):
    ledger = Ledger(load(base_env(moto_endpoint, bucket)), s3)
    job = job_for(bucket)
    assert ledger.claim(job, "msg-1", 60) is Claim.CLAIMED
    # a duplicate notification (another message) while it runs
    assert ledger.claim(job, "msg-2", 60) is Claim.RUNNING_ELSEWHERE
    # a redelivery of the same message waits for the lease (tests below)
    assert ledger.claim(job, "msg-1", 60) is Claim.HELD
    # the launch's own retry (a new message) gets the claim it hands back
    assert ledger.release(job, ledger.get(job.pipeline_id).data["holder"])
    assert ledger.claim(job, "msg-3", 60, continuing=True) is Claim.CLAIMED
    assert ledger.finish(job, "published", "s3://x")
    assert ledger.claim(job, "msg-4", 60) is Claim.DONE
    # a forced rerun takes over and supersedes the old run
    rerun = job_for(bucket, run_id="sf-0000000000000000000a-r1", force=True)
    assert ledger.claim(rerun, "msg-5", 60) is Claim.CLAIMED
    assert ledger.get(job.pipeline_id).run_id == rerun.run_id
    assert not ledger.renew(job, 60) and ledger.renew(rerun, 60)


def test_expired_lease_is_taken_over(moto_endpoint, bucket, s3):
    ledger = Ledger(load(base_env(moto_endpoint, bucket)), s3)
    job = job_for(bucket)
    assert ledger.claim(job, "msg-1", -1) is Claim.CLAIMED  # lease already expired
    assert ledger.claim(job, "msg-2", 60) is Claim.CLAIMED
    assert ledger.get(job.pipeline_id).data["owner"] == "msg-2"


def expire_lease(ledger, job):
    """What time does to the lease of a delivery whose worker died."""
    rec = ledger.get(job.pipeline_id)
    assert ledger._put(job.pipeline_id, {**rec.data, "lease_until": 1}, if_match=rec.etag)


def test_a_redelivery_waits_while_the_first_delivery_holds_the_lease(moto_endpoint, bucket, s3):
    """Reported: a redelivery of a launch whose first delivery was still alive (its
    ChangeMessageVisibility failing for a while, its lease renewed) claimed the run
    again and could start a second model. It waits until the lease has expired."""
    ledger = Ledger(load(base_env(moto_endpoint, bucket)), s3)
    job = job_for(bucket)
    assert ledger.claim(job, "msg-1", 60, holder="first") is Claim.CLAIMED
    claim = ledger.claim(job, "msg-1", 60, holder="redelivery")
    assert claim is not Claim.CLAIMED and claim is Claim.HELD
    assert ledger.renew(job, 60)  # the first delivery's heartbeat goes on
    assert ledger.claim(job, "msg-1", 60, holder="redelivery") is Claim.HELD
    # a redelivery of its retry message waits the same way
    assert ledger.claim(job, "msg-7", 60, continuing=True, holder="retry") is Claim.HELD
    assert 50 < ledger.lease_left(job.pipeline_id) <= 60
    assert ledger.get(job.pipeline_id).data["holder"] == "first"
    # the first delivery died: once its lease has expired, the redelivery takes over
    expire_lease(ledger, job)
    assert ledger.lease_left(job.pipeline_id) == 0
    assert ledger.claim(job, "msg-1", 60, holder="redelivery") is Claim.CLAIMED
    assert ledger.get(job.pipeline_id).data["holder"] == "redelivery"


def test_a_launch_hands_its_claim_to_its_next_delivery(moto_endpoint, bucket, s3):
    """A launch that goes back to the queue (its retry, or a wait for a free slot)
    hands its claim on; a duplicate still keeps off, and only the holder can."""
    ledger = Ledger(load(base_env(moto_endpoint, bucket)), s3)
    job = job_for(bucket)
    assert ledger.claim(job, "msg-1", 60, holder="first") is Claim.CLAIMED
    assert not ledger.release(job, "not-the-holder")
    assert ledger.release(job, "first")
    assert ledger.claim(job, "msg-2", 60) is Claim.RUNNING_ELSEWHERE  # the lease stays
    assert ledger.claim(job, "msg-3", 60, continuing=True, holder="retry") is Claim.CLAIMED
    assert ledger.claim(job, "msg-3", 60, continuing=True, holder="again") is Claim.HELD
    assert not ledger.release(job, "first")  # no longer its claim to give
    # a record written before holders existed counts as held
    rec = ledger.get(job.pipeline_id)
    old = {k: v for k, v in rec.data.items() if k != "holder"}
    assert ledger._put(job.pipeline_id, old, if_match=rec.etag)
    assert ledger.claim(job, "msg-3", 60, holder="later") is Claim.HELD


def test_a_forced_rerun_waits_for_its_own_live_lease(moto_endpoint, bucket, s3):
    """The same for a forced rerun (which takes over another run's live lease)."""
    ledger = Ledger(load(base_env(moto_endpoint, bucket)), s3)
    first = job_for(bucket)
    assert ledger.claim(first, "msg-1", 60) is Claim.CLAIMED
    rerun = job_for(bucket, run_id="sf-0000000000000000000a-r1", force=True)
    assert ledger.claim(rerun, "msg-2", 60) is Claim.CLAIMED  # takes over the old run
    assert ledger.claim(rerun, "msg-2", 60) is Claim.HELD  # its own redelivery waits
    assert ledger.claim(rerun, "msg-9", 60) is Claim.RUNNING_ELSEWHERE


def test_concurrent_claims_have_one_winner(moto_endpoint, bucket, s3):
    from concurrent.futures import ThreadPoolExecutor

    ledger = Ledger(load(base_env(moto_endpoint, bucket)), s3)
    job = job_for(bucket)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: ledger.claim(job, f"m{i}", 60), range(8)))
    assert results.count(Claim.CLAIMED) == 1


def test_newer_source_is_detected(s3, bucket):
    from scorefleet.storage.outcome import newer_source

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"one")
    job = make_job(
        "sf-0000000000000000000a", bucket, version_id=v1["VersionId"], etag=v1["ETag"].strip('"')
    )
    unversioned = make_job("sf-0000000000000000000a", bucket, etag=v1["ETag"].strip('"'))
    assert newer_source(s3, job) is None and newer_source(s3, unversioned) is None
    v2 = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"two")
    assert newer_source(s3, job) == f"version {v2['VersionId']}"
    assert newer_source(s3, unversioned) == f"ETag {v2['ETag'].strip(chr(34))}"
    s3.delete_object(Bucket=bucket, Key="in/a.csv")  # deleted since: still publish
    assert newer_source(s3, unversioned) is None


class DeniedStaleDeletes:
    """The real client, but the outcome keys of a DeleteObjects are refused as S3
    refuses them to a role without s3:DeleteObject there: a 200 answer that lists
    them under Errors (AccessDenied), the others deleted."""

    def __init__(self, s3):
        self.s3 = s3
        self.deletes = []

    def __getattr__(self, name):
        return getattr(self.s3, name)

    def delete_objects(self, **kw):
        keys = [o["Key"] for o in kw["Delete"]["Objects"]]
        self.deletes.append(keys)
        allowed = [{"Key": k} for k in keys if not k.startswith("out/")]
        if allowed:
            self.s3.delete_objects(Bucket=kw["Bucket"], Delete={"Objects": allowed})
        return {
            "Errors": [
                {"Key": k, "Code": "AccessDenied", "Message": "Access Denied"}
                for k in keys
                if k.startswith("out/")
            ]
        }


def test_publishing_deletes_stale_outcomes_and_staging_in_one_request(s3, bucket, moto_endpoint):
    """Issue 17: the earlier run's .error and .rejected and this run's staging objects
    go in one DeleteObjects. Issue 24: when S3 refuses to delete the stale .error, the
    step fails to be retried (a file never keeps both), where it was only logged."""
    from scorefleet.storage import outcome

    settings = load(base_env(moto_endpoint, bucket))
    job = make_job(bucket=bucket, key="in/a.csv")
    for key in ("out/a.csv.error", "out/a.csv.rejected", "staging/x", "staging/y"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"p\n")
    job = replace(job, output=Output(staging_key="staging/x", rows=1, size=2))
    staging = (S3Uri(bucket, "staging/x"), S3Uri(bucket, "staging/y"))
    calls = []
    s3.meta.events.register("before-call.s3.DeleteObjects", lambda **kw: calls.append(1))
    outcome.publish_scoreout(settings, s3, job, staging[0], maybe_done=False, then_delete=staging)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == {"out/a.csv.scoreout"} and len(calls) == 1

    for key in ("out/a.csv.error", "staging/x", "staging/y"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"p\n")
    denied = DeniedStaleDeletes(s3)
    with pytest.raises(outcome.OutcomeNotRemoved, match=r"could not delete s3://.*a\.csv\.error"):
        outcome.publish_scoreout(
            settings, denied, job, staging[0], maybe_done=False, then_delete=staging
        )
    assert len(denied.deletes) == 1  # still one request
    # the retry, once the role may delete: the .scoreout is there, the .error goes
    outcome.publish_scoreout(settings, s3, job, staging[0], maybe_done=True, then_delete=staging)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == {"out/a.csv.scoreout"}


def test_an_error_is_published_only_once_the_earlier_scoreout_is_gone(s3, bucket, moto_endpoint):
    """Issue 24, defect 8: a re-upload refused (by the Lambda, or failing in a worker)
    deletes the earlier .scoreout and .rejected before its .error is written; when S3
    refuses that delete, no .error is written beside the stale .scoreout: the event or
    the step fails, to be retried."""
    from scorefleet.job import Failure
    from scorefleet.storage import outcome

    settings = load(base_env(moto_endpoint, bucket))
    job = make_job(bucket=bucket, key="in/b.csv")
    for key in ("out/b.csv.scoreout", "out/b.csv.rejected"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"old\n")
    failure = Failure(step="enqueue", kind="Rejected", message="not an allowed image")
    with pytest.raises(outcome.OutcomeNotRemoved, match="needs s3:DeleteObject"):
        outcome.publish_error(settings, DeniedStaleDeletes(s3), job, failure)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == {"out/b.csv.scoreout", "out/b.csv.rejected"}  # no .error beside them
    outcome.publish_error(settings, s3, job, failure)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == {"out/b.csv.error"}
