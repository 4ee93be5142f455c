"""Issue 23: the job split into its ticket (frozen at enqueue) and what the steps learn,
and its JSON unchanged. Task messages queued by the release before the split are in
tests/golden/job-messages.json exactly as it wrote them (Job.to_dict() of that
release), with how it read an older and a newer form; they must read the same."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from scorefleet.job import Claimant, Failure, Job, ModelState, Output, SkipReason, Ticket
from scorefleet.s3uri import S3Uri
from scorefleet.settings import load
from scorefleet.submission import build_job
from tests.helpers import GOLDEN, make_job

MESSAGES: dict[str, Any] = json.loads((GOLDEN / "job-messages.json").read_text())
#: what the release before the split wrote, by the step whose message it is
WRITTEN = ("launch", "score", "upload", "failure_tail", "teardown", "skipped")
#: the keys this release adds (older workers ignore keys they do not know)
ADDED = {"model_pooled": False, "model_replicas": [], "model_image_id": None, "handovers": 0}


def wire(job: Job) -> dict[str, Any]:
    """The job as it travels: through JSON, as SQS carries it."""
    return dict(json.loads(json.dumps(job.to_dict())))


@pytest.mark.parametrize("name", WRITTEN)
def test_a_message_queued_by_the_release_before_reads_and_travels_on_the_same(name):
    sent = MESSAGES[name]
    job = Job.from_dict(json.loads(json.dumps(sent)))
    again = wire(job)
    assert again == {**sent, **ADDED}
    assert list(again) == [*sent, *ADDED]  # the same keys, in the same order
    assert Job.from_dict(again) == job


@pytest.mark.parametrize("name", WRITTEN)
def test_what_this_release_sends_the_release_before_reads_the_same(name):
    """An older worker reads the keys it knows (Job.from_dict ignores the rest): all of
    them are there, with the values it wrote itself."""
    sent = MESSAGES[name]
    ours = wire(Job.from_dict(sent))
    assert {k: ours[k] for k in sent} == sent
    assert set(ours) - set(sent) == set(ADDED)


def test_the_older_and_newer_forms_read_as_the_release_before_read_them():
    """An older release's message (no keys added since; the released flag inside the
    backend's handle, before 0.2), and a newer one's (keys this one does not know)."""
    for sent, read in (("older", "older_read"), ("newer", "newer_read")):
        assert wire(Job.from_dict(MESSAGES[sent])) == {**MESSAGES[read], **ADDED}, sent
    older = Job.from_dict(MESSAGES["older"])
    assert older.model.released is True and older.model.handle == {"pid": 4242, "port": 40123}


def test_each_key_lands_in_its_part():
    """The flat keys mean what they meant: the ticket, the claim, the model, the output
    and the outcome each get theirs (a round trip alone would not catch two swapped)."""
    m = MESSAGES["failure_tail"]
    job = Job.from_dict(m)
    ticket_keys = {f.name for f in dataclasses.fields(Ticket)}
    assert {k: getattr(job.ticket, k) for k in ticket_keys} == {k: m[k] for k in ticket_keys}
    assert job.claim == Claimant(owner=m["claim_owner"], holder=m["claim_holder"])
    assert job.model == ModelState(
        started_at=m["launch_started_at"],
        ready_at=m["model_ready_at"],
        endpoint=m["endpoint"],
        handle=m["handle"],
        released=m["released"],
    )
    assert job.model.start_ms == 1625
    assert job.output == Output()  # a failed score staged nothing
    assert job.failure == Failure(**m["failure"])
    assert (job.published, job.skipped) == (None, None)
    assert (job.step_done_at, job.waited) == (m["step_done_at"], m["waited"])

    u = MESSAGES["upload"]
    assert Job.from_dict(u).output == Output(
        staging_key=u["staging_key"],
        rows=u["rows"],
        rejected_rows=u["rejected_rows"],
        media_type=u["output_type"],
        rejected_media_type=u["rejected_type"],
        size=u["output_bytes"],
        seconds=u["score_seconds"],
    )
    assert Job.from_dict(MESSAGES["skipped"]).skipped is SkipReason.SUPERSEDED
    assert Job.from_dict(MESSAGES["teardown"]).published == MESSAGES["teardown"]["published"]


def test_a_launch_that_left_its_model_in_the_pool_says_so_on_the_wire():
    job = make_job()
    pooled = dataclasses.replace(job, model=ModelState(ready_at=1.0, pooled=True))
    assert wire(pooled)["model_pooled"] is True
    assert Job.from_dict(wire(pooled)).model.pooled


def test_the_lambda_builds_the_launch_message_it_always_built():
    """scorefleet.submission.build_job (the Lambda's, the rerun's, the sweep's) makes
    the same first message as the release before, from the same object and tags."""
    settings = load(
        {
            "SCOREFLEET_INPUT_URI": "s3://bkt/in/",
            "SCOREFLEET_OUTPUT_URI": "s3://bkt/out/",
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        }
    )
    job = build_job(
        settings,
        S3Uri("bkt", "in/2026/q3 data.csv"),
        {
            "model_image": "test/ok:1",
            "k8s_namespace": "scoring",
            "max_rejected_rows": "0.1%",
            "keep_columns": "id",
            "output_format": "jsonl",
        },
        version_id=None,
        etag='"9b2cf535f27731c974343645a3985328"',
        size=1234,
        sequencer="0055AED6DCD90281E5",
        last_modified=1767225600.0,
    )
    job = dataclasses.replace(
        job, ticket=dataclasses.replace(job.ticket, enqueued_at=1767225601.25)
    )
    assert wire(job) == {**MESSAGES["launch"], **ADDED}


def test_the_ticket_and_what_was_learned_are_frozen():
    job = Job.from_dict(MESSAGES["upload"])
    for part, name in (
        (job, "published"),
        (job.ticket, "run_id"),
        (job.claim, "owner"),
        (job.model, "endpoint"),
        (job.output, "rows"),
        (job.failure or Failure("score", "X", "y"), "message"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(part, name, "x")
    # the ticket's fields read through the job
    assert (job.run_id, job.source) == (job.ticket.run_id, S3Uri(job.bucket, job.key))


def test_a_rerun_is_a_new_run_of_the_same_upload_learned_nothing_yet():
    job = Job.from_dict(MESSAGES["teardown"])
    again = job.rerun()
    assert again.pipeline_id == job.pipeline_id and again.run_id.startswith(job.run_id + "-r")
    assert dataclasses.replace(again.ticket, run_id=job.run_id) == job.ticket
    assert again == Job(again.ticket)
