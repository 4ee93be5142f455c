"""The Lambda's deployment package (python -m lambda_enqueue.build): what is in it,
and that it handles events on its own, with nothing from the repository or the venv
on sys.path (moto stands in for S3 and SQS)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import sysconfig
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from lambda_enqueue import build
from tests.helpers import base_env, s3_notification, s3_record, sqs_record
from workers.localstack.stack import emulator_client


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lambda")
    manifest = build.build(out)
    root = out / "unzipped"
    with zipfile.ZipFile(manifest["zip"]) as zf:
        zf.extractall(root)
        manifest["names"] = zf.namelist()
        manifest["infos"] = zf.infolist()
    manifest["root"] = root
    return manifest


def test_only_what_the_handler_needs(package):
    names = set(package["names"])
    tops = {n.split("/")[0] for n in names}
    assert {"lambda_enqueue", "scorefleet", "celery", "kombu", "boto3", "botocore"} <= tops
    assert "lambda_enqueue/handler.py" in names and "scorefleet/chain.py" in names
    # the run record's "queued" state (scorefleet status) is written by the Lambda
    assert "scorefleet/storage/ledger.py" in names and "scorefleet/intake.py" in names
    for absent in (
        "tasks/launch.py",
        "workers/app.py",
        "lambda_enqueue/build.py",
    ):
        assert absent not in names
    for pkg in ("workers", "tasks", "kubernetes", "flower", "tornado", "moto", "pycurl", "psutil"):
        assert pkg not in tops, pkg
    for pkg in ("prompt_toolkit", "click_repl", "click_plugins", "click_didyoumean", "wcwidth"):
        assert pkg not in tops, pkg
    services = {
        n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 2
    }
    assert services == set(build.BOTOCORE_SERVICES)
    assert package["distributions"]["celery"] and package["distributions"]["boto3"]
    # Lambda's limits: 50 MB zipped for a direct upload, 250 MB unzipped
    assert package["bytes"] < 50_000_000 and package["unzipped_bytes"] < 250_000_000


def test_zip_is_reproducible(package, tmp_path):
    again = build.build(tmp_path)
    assert again["sha256"] == package["sha256"]
    assert all(i.date_time == build.FIXED_TIME for i in package["infos"])


def test_bytecode_for_the_lambda_runtime(package):
    if sys.version_info[:2] != (3, 11):
        pytest.skip("bytecode is only compiled on the target's Python 3.11")
    assert package["bytecode"]
    assert "lambda_enqueue/__pycache__/handler.cpython-311.pyc" in package["names"]


def test_the_allow_list_is_what_the_handler_imports():
    assert set(build.own_modules()) == set(build.MODULES) == set(build.imported_modules())


def test_a_module_the_handler_imports_must_be_on_the_allow_list():
    allowed = tuple(m for m in build.MODULES if m != "scorefleet.chain")
    with pytest.raises(build.BuildError, match=r"imports scorefleet\.chain, not in .*MODULES"):
        build.own_modules(allowed=allowed)


def test_a_module_the_handler_no_longer_imports_leaves_the_allow_list():
    # (the run status views: the CLI's, never the Lambda's)
    with pytest.raises(build.BuildError, match=r"lists scorefleet\.runstatus"):
        build.own_modules(allowed=(*build.MODULES, "scorefleet.runstatus"))


def test_a_new_import_in_the_handler_is_caught_by_the_build(tmp_path, monkeypatch):
    """The closure is followed through the source, imports inside functions included:
    a handler that starts importing a worker module does not build."""
    for name in build.MODULES:
        src = build.module_path(name)
        assert src is not None
        rel = src.relative_to(build.REPO)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(src.read_text())
    handler = tmp_path / "lambda_enqueue" / "handler.py"
    handler.write_text(handler.read_text() + "\n\ndef _late():\n    import workers.runtime\n")
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text("")
    (tmp_path / "workers" / "runtime.py").write_text("")
    monkeypatch.setattr(build, "REPO", tmp_path)
    with pytest.raises(build.BuildError, match=r"imports workers, workers\.runtime, not in"):
        build.own_modules()


RUN = """
import json, sys, sysconfig
pkg = sys.argv[1]
sys.path.insert(0, pkg)
import lambda_enqueue.handler as h
results = [h.handler(event, None) for event in json.loads(sys.stdin.read())]
allowed = (pkg, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
outside = sorted({m.__file__ for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and not m.__file__.startswith(allowed)})
print(json.dumps({"results": results, "outside": outside,
                  "loaded": sorted({n.split(".")[0] for n in sys.modules})}))
"""


def test_the_package_handles_events_on_its_own(package, moto_endpoint, bucket):
    s3 = emulator_client("s3", moto_endpoint)
    sqs = emulator_client("sqs", moto_endpoint)
    queue_url = sqs.create_queue(QueueName=f"q-{bucket}")["QueueUrl"]
    records = []
    for i, (key, image) in enumerate(
        [("in/ok file.csv", "test/ok:1"), ("in/evil.csv", "evil/x:1")]
    ):
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=b"a\n1\n",
            Tagging=urllib.parse.urlencode({"model_image": image}),
        )
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        records.append(s3_record(bucket, key, size=4, etag=etag, sequencer=f"{i:016X}"))
    # production path (deploy/aws.yaml): S3 -> SQS -> Lambda, one S3 event per message
    sqs_event = s3_notification(
        *(sqs_record(f"m{i}", json.dumps(s3_notification(rec))) for i, rec in enumerate(records))
    )
    env = {
        "PATH": "/usr/bin:/bin",
        **base_env(moto_endpoint, bucket, SCOREFLEET_QUEUE_URL=queue_url),
    }
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", RUN, str(package["root"])],
        input=json.dumps([sqs_event, {"Records": [{"eventSource": "aws:s3"}]}]),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    first, unreadable = report["results"]
    assert first == {"enqueued": 1, "rejected": 1, "ignored": 0, "batchItemFailures": []}
    assert unreadable["unreadable"] == 1 and unreadable["enqueued"] == 0
    assert report["outside"] == [], "modules loaded from outside the package and the stdlib"
    assert "workers" not in report["loaded"] and "kubernetes" not in report["loaded"]
    # the rejected file got its .error from the Lambda itself
    error = s3.get_object(Bucket=bucket, Key="out/evil.csv.error")["Body"].read().decode()
    assert "evil/x:1" in error and "not allowed" in error
    # the accepted one is on the task queue, first step by name, as kombu sends it; the
    # refused one has its notice there, for Flower (tasks.refused)
    msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    bodies = {
        b["headers"]["task"]: b for b in (json.loads(base64.b64decode(m["Body"])) for m in msgs)
    }
    assert sorted(bodies) == ["tasks.launch", "tasks.refused"]
    assert "ok file.csv" in bodies["tasks.launch"]["headers"]["argsrepr"]
    assert "evil.csv" in bodies["tasks.refused"]["headers"]["argsrepr"]


def test_measure_cold_import(package):
    times = build.measure(Path(package["zip"]), 1)
    assert len(times) == 1 and 0 < times[0] < 10


def test_sysconfig_paths_exist():
    assert Path(sysconfig.get_paths()["stdlib"]).is_dir()
