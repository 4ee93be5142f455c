"""Files refused before any work (issue 28): a tag whose name is a near miss of one
scorefleet reads never falls back silently, and every refused file is seen where a
failed one is -- ``scorefleet runs --failed``, ``scorefleet status``, Flower's task
list (``tasks.refused``) -- not only in its ``.error``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambda_enqueue import handler as lam
from scorefleet.celeryconf import make_app
from scorefleet.errors import Rejected
from scorefleet.settings import load
from scorefleet.storage.ledger import Ledger
from scorefleet.storage.s3io import TAG_ALIASES, encode_tags
from scorefleet.submission import USED_TAGS
from tests.helpers import base_env, run_cli
from tests.integration.test_handler import s3_event, sent_tasks
from tests.integration.test_sweep import pid_of
from workers import runtime
from workers.localstack.stack import emulator_client


# ------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("model_imgae", "model_image"),  # two letters swapped (the issue's own typo)
        ("keep_colums", "keep_columns"),  # a letter dropped
        ("Model_Image", "model_image"),  # another case
        ("model-image", "model_image"),  # - for _
        ("content.type", "content_type"),
        ("modelImage", "model_image"),
        ("model_images", "model_image"),  # a letter added
        ("k8s_namspace", "k8s_namespace"),
        ("max_rejectd_row", "max_rejected_rows"),  # two edits of a long name
        ("modelimagname", "model_image"),  # the older name, misspelt: the current one meant
        ("K8SCLUSTER", "k8s_cluster"),
    ],
)
def test_a_near_miss_names_the_tag_meant(name, meant):
    from scorefleet.submission import meant_tag

    assert meant_tag(name) == meant


@pytest.mark.parametrize(
    "name",
    [
        # the older tool's tag, and a team's own labels: allowed and quiet
        "k8singressurl",
        "team",
        "owner",
        "cost_center",
        "model_stage",  # MLflow's stages: two edits from model_image, which is short
        "model_version",
        "model_name",
        "k8s_cluster_id",
        "namespace",
        "image",
        "kep_colums",  # two edits from a name under 13 characters: not taken for it
    ],
)
def test_other_tags_of_the_users_own_stay_allowed(name):
    from scorefleet.submission import meant_tag

    assert meant_tag(name) is None


def test_the_rule_follows_the_one_list_of_tags_scorefleet_reads():
    """Every tag scorefleet reads (a tag added to USED_TAGS, e.g. issue 24's, included)
    and every older name is read as itself, and its near misses are taken for it."""
    from scorefleet.submission import meant_tag

    for tag in (*USED_TAGS, *TAG_ALIASES):
        meant = TAG_ALIASES.get(tag, tag)
        assert meant_tag(tag) is None
        assert meant_tag(tag.upper()) == meant
        assert meant_tag(tag.replace("_", "-")) == meant or "_" not in tag
        assert meant_tag(tag[:-1]) == meant, tag  # its last letter dropped
        assert meant_tag(tag[1:2] + tag[0] + tag[2:]) == meant, tag  # two letters swapped


def test_a_rerun_that_sets_the_tag_meant_makes_its_near_miss_moot():
    from scorefleet.submission import misnamed_tags

    tags = {"model_imgae": "a/b:1", "keep_colums": "id", "team": "x"}
    assert misnamed_tags(tags) == {"keep_colums": "keep_columns", "model_imgae": "model_image"}
    assert misnamed_tags(tags, ["model_image"]) == {"keep_colums": "keep_columns"}


# ------------------------------------------------------------------ the Lambda
@pytest.fixture
def env(moto_endpoint, bucket):
    return base_env(moto_endpoint, bucket)


@pytest.fixture
def rt(env, moto_endpoint):
    settings = load(env)
    return lam.Runtime(settings, emulator_client("s3", moto_endpoint), make_app(settings))


def drop(s3: Any, bucket: str, key: str, tags: dict[str, str]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n", Tagging=encode_tags(tags))


def error_text(s3: Any, bucket: str, key: str) -> str:
    return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({"model_imgae": "test/ok:1"}, ["'model_imgae' (did you mean 'model_image'?)"]),
        (
            {"model_image": "test/ok:1", "keep_colums": "id", "Content-Type": "csv"},
            [
                "'keep_colums' (did you mean 'keep_columns'?)",
                "'Content-Type' (did you mean 'content_type'?)",
            ],
        ),
    ],
)
def test_a_misnamed_tag_is_refused_with_an_error_naming_the_tag_meant(
    rt, s3, bucket, moto_endpoint, env, tags, named
):
    """Issue 28, item 1: the file was scored by the fallback image and published, and
    status showed it as normal; now it is refused, nothing is started, and the .error
    says which tag was meant."""
    drop(s3, bucket, "in/typo.csv", tags)
    assert lam.handle(s3_event(bucket, "in/typo.csv"), rt)["rejected"] == 1
    text = error_text(s3, bucket, "out/typo.csv.error")
    for needle in named:
        assert needle in text, text
    assert "failed step:  enqueue (refused before any work" in text
    assert "scorefleet submit --tag" in text
    sent = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    assert [name for name, *_ in sent] == ["tasks.refused"]


def test_tags_of_the_users_own_are_allowed_and_quiet(rt, s3, bucket, moto_endpoint, env, caplog):
    drop(
        s3, bucket, "in/own.csv", {"model_image": "test/ok:1", "team": "risk", "k8singressurl": "x"}
    )
    assert lam.handle(s3_event(bucket, "in/own.csv"), rt)["enqueued"] == 1
    ((name, *_),) = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    assert name == "tasks.launch"
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


@pytest.mark.parametrize(
    "tags",
    [
        {"model_imgae": "test/ok:1"},  # a misnamed tag
        {"model_image": "evil.example/x:1"},  # an image not allowed (issue 28, item 4)
    ],
)
def test_a_refused_file_is_listed_by_runs_failed_and_status(rt, s3, bucket, env, tags):
    """Issue 28, item 4: refused by the Lambda, the file was in `status` (from its
    .error) but not in `runs --failed`."""
    drop(s3, bucket, "in/refused.csv", tags)
    assert lam.handle(s3_event(bucket, "in/refused.csv"), rt)["rejected"] == 1
    runs = run_cli(["workers.cli", "runs", "--failed", "--json"], env)
    assert runs.returncode == 0, runs.stderr
    (listed,) = [json.loads(line) for line in runs.stdout.splitlines()]
    assert listed["uri"] == f"s3://{bucket}/in/refused.csv" and listed["state"] == "failed"
    assert listed["error"].startswith("Rejected: ")
    assert listed["outcome"] == f"s3://{bucket}/out/refused.csv.error"
    text = run_cli(["workers.cli", "runs", "--failed"], env).stdout
    assert "failed      s3://" in text and "Rejected: " in text
    status = run_cli(["workers.cli", "status", f"s3://{bucket}/in/refused.csv"], env)
    assert "state       failed" in status.stdout and "refused before any work" in status.stdout


def test_a_refusal_leaves_a_run_in_progress_alone(env, s3, bucket):
    """A refused rerun must not overwrite the record of a run that is queued or
    running: that run's claim would be lost."""
    settings = load(env)
    drop(s3, bucket, "in/busy.csv", {"model_image": "test/ok:1"})
    pid = pid_of(s3, bucket, "in/busy.csv")
    ledger = Ledger(settings, s3)
    from tests.helpers import make_job

    job = make_job(pid, bucket, key="in/busy.csv")
    assert ledger.mark_queued(job)
    assert not ledger.refused(job, None, "Rejected: no")
    assert ledger.get(pid).state == "queued"


# ------------------------------------------------------------------ a rerun
@pytest.fixture
def worker(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield runtime.current()
    runtime.reset()


def test_a_rerun_of_a_misnamed_file_fails_in_flower_unless_it_sets_the_tag(
    worker, s3, bucket, monkeypatch
):
    import tasks.operations as ops

    drop(s3, bucket, "in/rerun.csv", {"model_imgae": "test/ok:1"})
    uri = f"s3://{bucket}/in/rerun.csv"
    result = ops.rescore.apply(args=[uri])
    # the task fails with the refusal: its line in Flower says so
    assert result.state == "FAILURE" and isinstance(result.result, Rejected)
    assert "did you mean 'model_image'?" in str(result.result)
    assert "model_imgae" in error_text(s3, bucket, "out/rerun.csv.error")
    sent: list[Any] = []
    monkeypatch.setattr(ops, "enqueue", lambda app, job: sent.append(job) or "first")
    result = ops.rescore.apply(args=[uri], kwargs={"model_image": "test/ok:1"})
    assert result.state == "SUCCESS", result.traceback
    assert [j.model_image for j in sent] == ["test/ok:1"]


def test_the_refused_task_fails_with_the_refusal_and_counts_it(worker):
    import tasks.operations as ops
    from workers.process import metrics

    before = metrics.FILES_FAILED.labels("enqueue", "Rejected")._value.get()
    result = ops.refused.apply(args=["s3://b/in/x.csv", "Rejected", "model image 'x' no"])
    assert result.state == "FAILURE" and str(result.result) == "model image 'x' no"
    assert metrics.FILES_FAILED.labels("enqueue", "Rejected")._value.get() == before + 1


# ------------------------------------------------------------ submit --tag
def test_submit_uploads_the_tags_it_is_given(env, s3, bucket, tmp_path):
    """Issue 28, item 7: any tag scorefleet reads, with its URL-encoded syntax done
    by submit (spaces included); a near miss is refused before any upload."""
    data = tmp_path / "q3.csv"
    data.write_text("id,a\n1,2\n")
    args = ["workers.cli", "submit", str(data), "--key", "t/q3.csv", "--model-image", "test/ok:1"]
    tags = ["--tag", "keep_columns=id customer_id", "--tag", "max_rejected_rows=0.005"]
    done = run_cli([*args, *tags], env)
    assert done.returncode == 0, done.stderr
    got = s3.get_object_tagging(Bucket=bucket, Key="in/t/q3.csv")["TagSet"]
    assert {t["Key"]: t["Value"] for t in got} == {
        "model_image": "test/ok:1",
        "keep_columns": "id customer_id",
        "max_rejected_rows": "0.005",
    }
    typo = run_cli([*args, "--key", "t/typo.csv", "--tag", "keep_colums=id"], env)
    assert typo.returncode == 2 and "did you mean 'keep_columns'?" in typo.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="in/t/typo")
