"""Issue 10 item 3 on the local stack: A -> B -> A publishes A's scores, and every
sentence of the .error about rerunning is true (uploading the same bytes again
scores them again)."""

from __future__ import annotations

import time

import pytest

from tests.helpers import Outcomes
from tests.helpers.fakemodel import hash_row, records
from workers.localstack.stack import BUCKET

pytestmark = pytest.mark.slow

HASH = {"model_image": "test/hash:1"}
A = b"a,b\n" + b"".join(b"%d,1\n" % i for i in range(150))
B = b"a,b\n" + b"".join(b"%d,2\n" % i for i in range(10))


def hashed(body: bytes) -> bytes:
    return b"".join(hash_row(r) for r in records(body))


def versions(outcomes: Outcomes, key: str) -> list[dict]:
    listed = outcomes.s3.list_object_versions(Bucket=BUCKET, Prefix=f"out/{key}")
    return [v for v in listed.get("Versions", []) if v["Key"] == f"out/{key}"]


def wait_for(check, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def scored_from(outcomes: Outcomes, key: str, version: str) -> bool:
    try:
        head = outcomes.s3.head_object(Bucket=BUCKET, Key=f"out/{key}.scoreout")
    except outcomes.s3.exceptions.ClientError:
        return False
    return head["Metadata"].get("source-version") == version


def put(outcomes: Outcomes, key: str, body: bytes, tags: dict[str, str]) -> str:
    from scorefleet.storage.s3io import encode_tags

    resp = outcomes.s3.put_object(
        Bucket=BUCKET, Key=f"in/{key}", Body=body, Tagging=encode_tags(tags)
    )
    return str(resp["VersionId"])


def test_a_b_a_publishes_a(outcomes):
    """Reported: B's 10-row output was left beside A's 150-row input."""
    key = "integrity/aba.csv"
    put(outcomes, key, A, HASH)
    put(outcomes, key, B, HASH)
    last = put(outcomes, key, A, HASH)
    wait_for(lambda: scored_from(outcomes, key, last), what="the third upload's output")
    time.sleep(3)  # the earlier runs finish meanwhile: none may publish over it
    assert scored_from(outcomes, key, last)
    got = outcomes.s3.get_object(Bucket=BUCKET, Key=f"out/{key}.scoreout")
    assert got["Body"].read() == hashed(A)
    tags = outcomes.s3.get_object_tagging(Bucket=BUCKET, Key=f"out/{key}.scoreout")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["rows"] == "150"


def test_the_same_bytes_uploaded_again_are_scored_again(outcomes):
    key = "integrity/again.csv"
    first = put(outcomes, key, A, HASH)
    wait_for(lambda: scored_from(outcomes, key, first), what="the first output")
    second = put(outcomes, key, A, HASH)
    wait_for(lambda: scored_from(outcomes, key, second), what="the second upload's output")
    assert len(versions(outcomes, f"{key}.scoreout")) == 2


def test_every_sentence_of_the_error_about_rerunning_holds(outcomes):
    """'... (or upload it again, with its tags: every upload is scored, also of the
    same bytes)': the same upload again gives a new .error, a fixed tag a .scoreout."""
    key = "integrity/fix-me.csv"
    put(outcomes, key, A, {"model_image": "test/few-rows:1"})
    wait_for(lambda: len(versions(outcomes, f"{key}.error")) == 1, what="the .error")
    text = outcomes.s3.get_object(Bucket=BUCKET, Key=f"out/{key}.error")["Body"].read().decode()
    assert "upload it again, with its tags" in text and "also of the same bytes" in text
    put(outcomes, key, A, {"model_image": "test/few-rows:1"})  # the very same upload again
    wait_for(lambda: len(versions(outcomes, f"{key}.error")) == 2, what="a second .error")
    fixed = put(outcomes, key, A, HASH)  # the same bytes, tagged with a model that works
    wait_for(lambda: scored_from(outcomes, key, fixed), what="the fixed upload's output")
    wait_for(
        lambda: (
            "Contents" not in outcomes.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"out/{key}.error")
        ),
        what="the stale .error to go",
    )
