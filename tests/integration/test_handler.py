"""The Lambda handler against moto: S3 for tags and .error files, SQS as the broker."""

import base64
import json

import pytest

from lambda_enqueue import handler as lam
from scorefleet.celeryconf import make_app
from scorefleet.job import pipeline_id
from scorefleet.settings import load
from tests.helpers import base_env, load_event, s3_notification, s3_record, sqs_record
from workers.localstack.stack import emulator_client


@pytest.fixture
def env(moto_endpoint, bucket):
    return base_env(moto_endpoint, bucket, SCOREFLEET_K8S_NAMESPACES="scoring,team-a")


@pytest.fixture
def rt(env, moto_endpoint):
    settings = load(env)
    return lam.Runtime(settings, emulator_client("s3", moto_endpoint), make_app(settings))


def sent_tasks(moto_endpoint, queue):
    """Decode every Celery message on the queue: (task name, task id, args, chain names)."""
    sqs = emulator_client("sqs", moto_endpoint)
    try:
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return []  # nothing was ever sent
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not msgs:
            return out
        for m in msgs:
            env = json.loads(base64.b64decode(m["Body"]))
            body = json.loads(base64.b64decode(env["body"]))
            args, _kwargs, embed = body
            chain = [s["task"] for s in reversed(embed.get("chain") or [])]
            out.append((env["headers"]["task"], env["headers"]["id"], args, chain))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def s3_event(bucket, key, etag=None, event="ObjectCreated:Put", sequencer="00A"):
    """An S3 notification; without ``etag`` it names no ETag (the handler then looks
    the object's current upload up)."""
    return s3_notification(
        s3_record(bucket, key, event_name=event, size=3, etag=etag, sequencer=sequencer)
    )


def test_enqueues_chain_by_name_with_fallbacks_and_deterministic_id(
    rt, s3, bucket, moto_endpoint, env
):
    key = "in/2026/q3 report+final é.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n", Tagging="k8s_namespace=team-a")
    head = s3.head_object(Bucket=bucket, Key=key)
    etag = head["ETag"].strip('"')
    result = lam.handle(s3_event(bucket, key, etag), rt)
    assert result == {"enqueued": 1, "rejected": 0, "ignored": 0}
    ((name, task_id, args, chain),) = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    pid = pipeline_id(bucket, key, None, etag, head["LastModified"].timestamp())
    assert name == "tasks.launch" and task_id == f"{pid}-launch"
    assert chain == ["tasks.score", "tasks.upload", "tasks.teardown"]
    job = args[0]
    assert job["key"] == key and job["model_image"] == "test/ok:1"  # fallback image
    assert job["k8s_namespace"] == "team-a" and job["k8s_cluster"] == "default"


def test_the_lambda_carries_every_data_tag_to_the_job_csv_header_included(
    rt, s3, bucket, moto_endpoint, env
):
    """The format tags travel in the job (scorefleet.submission.DATA_TAGS) and are the
    ones the workers read (workers/scoring/formats/options.TAGS): csv_header too."""
    from scorefleet.submission import DATA_TAGS
    from workers.scoring.formats.options import TAGS

    assert set(TAGS) <= set(DATA_TAGS) and "csv_header" in DATA_TAGS
    key = "in/said.csv"
    tags = "csv_header=present&keep_columns=id&content_type=csv"
    s3.put_object(Bucket=bucket, Key=key, Body=b"0,1\n2,3\n", Tagging=tags)
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    assert lam.handle(s3_event(bucket, key, etag), rt)["enqueued"] == 1
    ((_, _, args, _),) = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    assert args[0]["data_tags"] == {
        "csv_header": "present",
        "keep_columns": "id",
        "content_type": "csv",
    }


def test_disallowed_image_gets_error_file_and_nothing_is_enqueued(
    rt, s3, bucket, moto_endpoint, env
):
    s3.put_object(
        Bucket=bucket, Key="in/x.csv", Body=b"a\n1\n", Tagging="model_image=evil%2Fminer%3A1"
    )
    result = lam.handle(s3_event(bucket, "in/x.csv"), rt)
    assert result["rejected"] == 1
    # no chain: only the notice that shows the refusal in Flower (issue 28)
    ((name, task_id, args, chain),) = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    assert (name, chain) == ("tasks.refused", []) and task_id.endswith("-refused")
    assert args[0] == f"s3://{bucket}/in/x.csv" and "not allowed" in args[2]
    text = s3.get_object(Bucket=bucket, Key="out/x.csv.error")["Body"].read().decode()
    assert "evil/miner:1" in text and "not allowed" in text and "tasks.rescore" in text


def test_with_digests_required_a_tagged_image_gets_an_error_saying_how_to_pin_it(
    s3, bucket, moto_endpoint, env
):
    digest = "sha256:" + "ab" * 32
    env = {**env, "SCOREFLEET_REQUIRE_IMAGE_DIGEST": "true"}
    env["SCOREFLEET_DEFAULT_MODEL_IMAGE"] = f"test/ok@{digest}"
    settings = load(env)
    rt = lam.Runtime(settings, emulator_client("s3", moto_endpoint), make_app(settings))
    s3.put_object(
        Bucket=bucket, Key="in/t.csv", Body=b"a\n1\n", Tagging="model_image=test%2Fok%3A2"
    )
    s3.put_object(
        Bucket=bucket, Key="in/p.csv", Body=b"a\n1\n", Tagging=f"model_image=test%2Fok%40{digest}"
    )
    s3.put_object(Bucket=bucket, Key="in/d.csv", Body=b"a\n1\n")  # the (pinned) default image
    result = lam.handle(
        s3_notification(*(s3_record(bucket, f"in/{n}.csv", size=4) for n in "tpd")), rt
    )
    assert result == {"enqueued": 2, "rejected": 1, "ignored": 0}
    text = s3.get_object(Bucket=bucket, Key="out/t.csv.error")["Body"].read().decode()
    assert "'test/ok:2' is not pinned by digest" in text
    assert "model_image=test/ok@sha256:<64 hex>" in text and "`crane digest test/ok:2`" in text
    sent = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    chains = [args for name, _, args, _ in sent if name == "tasks.launch"]  # not tasks.refused
    assert sorted(args[0]["model_image"] for args in chains) == [f"test/ok@{digest}"] * 2


@pytest.mark.parametrize(
    ("tags", "needle"),
    [
        ("model_image=test%2Fok%3A1&k8s_namespace=Bad_NS", "not a valid namespace"),
        ("model_image=test%2FOK+now%3A1", "not a valid container image"),
        # only the configured namespaces, and nothing after a name
        ("k8s_namespace=kube-system", "'kube-system' is not enabled for cluster 'default'"),
        ("model_image=test%2Fok%3A1%C3%A9", "not a valid container image"),
        # another registry, or another repository, that only starts like an allowed one
        ("model_image=test.evil.example%2Fx%3A1", "not allowed here"),
        ("model_image=test-evil%2Fx%3A1", "not allowed here"),
    ],
)
def test_bad_tags_are_rejected(rt, s3, bucket, tags, needle):
    s3.put_object(Bucket=bucket, Key="in/y.csv", Body=b"a\n1\n", Tagging=tags)
    assert lam.handle(s3_event(bucket, "in/y.csv"), rt)["rejected"] == 1
    assert needle in s3.get_object(Bucket=bucket, Key="out/y.csv.error")["Body"].read().decode()


def test_outputs_deletes_test_events_and_folders_are_ignored(rt, s3, bucket, moto_endpoint, env):
    events = [
        s3_event(bucket, "out/a.csv.scoreout"),
        s3_event(bucket, "scorefleet-state/runs/x.json"),
        s3_event(bucket, "in/a.csv", event="ObjectRemoved:Delete"),
        s3_event(bucket, "in/folder/"),
        s3_event(bucket, "elsewhere/a.csv"),
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket},
    ]
    for ev in events:
        assert lam.handle(ev, rt)["enqueued"] == 0
    assert sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"]) == []


class FlakyTags:
    """A real S3 client whose tag reads fail (S3 InternalError) for one key."""

    def __init__(self, client, key):
        self.client, self.key = client, key

    def __getattr__(self, name):
        return getattr(self.client, name)

    def get_object_tagging(self, **kw):
        from botocore.exceptions import ClientError

        if kw["Key"] == self.key:
            raise ClientError(
                {
                    "Error": {"Code": "InternalError", "Message": "try again"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "GetObjectTagging",
            )
        return self.client.get_object_tagging(**kw)


def test_sqs_batch_reports_only_failed_records(rt, s3, bucket):
    for key in ("in/ok.csv", "in/flaky.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")
    rt = lam.Runtime(rt.settings, FlakyTags(s3, "in/flaky.csv"), rt.app)

    def rec(mid, key):
        return sqs_record(mid, json.dumps(s3_event(bucket, key)))

    batch = s3_notification(
        rec("good", "in/ok.csv"), rec("flaky", "in/flaky.csv"), rec("gone", "in/deleted.csv")
    )
    result = lam.handle(batch, rt)
    assert result["batchItemFailures"] == [{"itemIdentifier": "flaky"}]
    assert result["enqueued"] == 1 and result["ignored"] == 1


def test_direct_invocation_raises_so_lambda_retries(rt, s3, bucket):
    s3.put_object(Bucket=bucket, Key="in/flaky.csv", Body=b"a\n1\n")
    rt = lam.Runtime(rt.settings, FlakyTags(s3, "in/flaky.csv"), rt.app)
    with pytest.raises(Exception, match="InternalError"):
        lam.handle(s3_event(bucket, "in/flaky.csv"), rt)


def test_unreadable_direct_event_is_logged_not_retried(rt):
    assert lam.handle({"nonsense": True}, rt)["unreadable"] == 1


def test_handler_entry_point_validates_configuration(monkeypatch):
    monkeypatch.setattr(lam, "_runtime", None)
    for k in ("SCOREFLEET_INPUT_URI", "SCOREFLEET_OUTPUT_URI", "SCOREFLEET_ALLOWED_IMAGE_PREFIXES"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="SCOREFLEET_INPUT_URI is required"):
        lam.handler({"Records": []}, None)


def test_lambda_imports_no_worker_or_kubernetes_code():
    import subprocess
    import sys

    code = (
        "import sys, lambda_enqueue.handler; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('workers', 'tasks', 'kubernetes', 'psutil', 'flower')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------ issue 10 item 4: poison records
def test_a_null_record_does_not_fail_the_good_one(rt, s3, bucket, moto_endpoint, env):
    """Issue 10 item 4 as reported: {"Records":[null]} beside a good record raised
    AttributeError out of the handler, so both were redelivered until the DLQ."""
    etag = s3.put_object(Bucket=bucket, Key="in/good.csv", Body=b"a\n1\n")["ETag"].strip('"')
    event = load_event("sqs-batch-poison.json", bucket, etag=etag)
    result = lam.handle(event, rt)
    poison = event["Records"][1]["messageId"]
    assert result["batchItemFailures"] == [{"itemIdentifier": poison}]
    assert result["enqueued"] == 1 and result["unreadable"] == 1
    ((name, _, args, _),) = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    assert name == "tasks.launch" and args[0]["key"] == "in/good.csv"


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,  # RecursionError inside json.loads
        json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": None}}]}),
        json.dumps({"Records": [{"s3": {"bucket": {"name": 7}, "object": {"key": "k"}}}]}),
        json.dumps({"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": ["x"]}}}]}),
        json.dumps(
            {"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": "x"}}}]}
        ),
        json.dumps({"Records": "nope"}),
        json.dumps([1, 2]),
        "null",
        "",
    ],
    ids=[
        "deep-json",
        "bucket-null",
        "bucket-number",
        "key-list",
        "size-text",
        "records-string",
        "list",
        "null",
        "empty",
    ],
)
def test_every_kind_of_unreadable_record_is_isolated(rt, s3, bucket, moto_endpoint, env, body):
    s3.put_object(Bucket=bucket, Key="in/ok.csv", Body=b"a\n1\n")
    good = json.dumps(s3_event(bucket, "in/ok.csv"))
    result = lam.handle({"Records": [sqs_record("good", good), sqs_record("bad", body)]}, rt)
    assert result["batchItemFailures"] == [{"itemIdentifier": "bad"}]
    assert result["enqueued"] == 1
    assert len(sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])) == 1


def test_envelopes_nested_too_deep_are_refused_not_recursed(rt, bucket):
    body = json.dumps(s3_event(bucket, "in/x.csv"))
    for _ in range(8):  # each level doubles the escaping
        body = json.dumps({"Type": "Notification", "Message": body})
    result = lam.handle({"Records": [sqs_record("deep", body)]}, rt)
    assert result["batchItemFailures"] == [{"itemIdentifier": "deep"}]


def test_one_bad_s3_record_in_a_body_leaves_the_others_queued(rt, s3, bucket, moto_endpoint, env):
    for key in ("in/one.csv", "in/three.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")
    recs = [
        s3_event(bucket, "in/one.csv")["Records"][0],
        None,
        s3_event(bucket, "in/three.csv")["Records"][0],
    ]
    result = lam.handle({"Records": [sqs_record("m", json.dumps({"Records": recs}))]}, rt)
    assert result["enqueued"] == 2 and result["unreadable"] == 1
    assert result["batchItemFailures"] == [{"itemIdentifier": "m"}]  # kept for the DLQ
    keys = sorted(a[0]["key"] for _, _, a, _ in sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"]))
    assert keys == ["in/one.csv", "in/three.csv"]
    # the same shape invoked directly: the good records go, the bad one is counted
    direct = lam.handle({"Records": recs}, rt)
    assert direct["enqueued"] == 2 and direct["unreadable"] == 1


def test_an_unexpected_error_for_one_file_spares_the_others(rt, s3, bucket, moto_endpoint, env):
    class Broken(FlakyTags):
        def get_object_tagging(self, **kw):
            if kw["Key"] == self.key:
                raise RecursionError("maximum recursion depth exceeded")
            return self.client.get_object_tagging(**kw)

    for key in ("in/a.csv", "in/b.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")
    rt = lam.Runtime(rt.settings, Broken(s3, "in/a.csv"), rt.app)
    body = json.dumps(
        {"Records": [s3_event(bucket, k)["Records"][0] for k in ("in/a.csv", "in/b.csv")]}
    )
    result = lam.handle({"Records": [sqs_record("m", body)]}, rt)
    assert result["enqueued"] == 1 and result["batchItemFailures"] == [{"itemIdentifier": "m"}]


def test_unreadable_records_are_logged_bounded_and_escaped(rt, caplog):
    body = "not json\nERROR forged log line " + "x" * 100_000
    lam.handle({"Records": [sqs_record("m", body)]}, rt)
    (line,) = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert "\n" not in line and "\\nERROR forged" in line and len(line) < 3000


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("s3-put.json", "in/2026/q3 report.csv"),
        ("sqs-sns-s3.json", "in/bigé.csv"),
        ("eventbridge-object-created.json", "in/eb+plus.csv"),
    ],
)
def test_real_event_payloads(rt, s3, bucket, moto_endpoint, env, name, key):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")
    event = load_event(name, bucket, etag=put["ETag"].strip('"'), version=put["VersionId"])
    result = lam.handle(event, rt)
    assert result["enqueued"] == 1, result
    ((_, _, args, _),) = sent_tasks(moto_endpoint, env["SCOREFLEET_QUEUE"])
    assert args[0]["key"] == key


def test_real_test_event_is_ignored(rt, bucket):
    result = lam.handle(load_event("s3-test-event.json", bucket), rt)
    assert result["enqueued"] == 0 and "unreadable" not in result
