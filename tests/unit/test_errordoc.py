import json
import shlex
import subprocess

from scorefleet.job import Failure, pipeline_id
from scorefleet.redact import redact
from scorefleet.s3uri import S3Uri, output_uri
from scorefleet.storage.errordoc import render, rerun_commands


def test_error_file_says_what_failed_and_how_to_rerun():
    src = S3Uri("data", "in/2026/it's q3.csv")
    text = render(
        source=src,
        version="v7",
        model_image="reg/iris:1",
        k8s_cluster="prod",
        k8s_namespace="scoring",
        pipeline_id="sf-123",
        failure=Failure(
            step="score",
            kind="ModelError",
            message="the model answered 3 rows",
            attempts=2,
            model_logs="loading\nTraceback: boom",
        ),
    )
    for needle in (
        "failed step:  score (after 2 attempts)",
        "ModelError: the model answered 3 rows",
        "s3://data/in/2026/it's q3.csv",
        "reg/iris:1",
        "prod",
        "scoring",
        "sf-123",
        "Traceback: boom",
        "scorefleet rerun",
    ):
        assert needle in text
    celery_line = next(line.strip() for line in text.splitlines() if "tasks.rescore" in line)
    argv = shlex.split(celery_line)  # the line is valid shell, quotes included
    assert argv[:5] == ["celery", "-A", "workers.app", "call", "tasks.rescore"]
    assert json.loads(argv[argv.index("--args") + 1]) == ["s3://data/in/2026/it's q3.csv"]


def test_rerun_command_with_image_override_is_shell_safe():
    celery, cli = rerun_commands(S3Uri("b", "k $(rm -rf x).csv"), "reg/m:2")
    out = subprocess.run(
        ["sh", "-c", f"printf '%s\\n' {celery.split('call tasks.rescore ', 1)[1]}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "--args",
        '["s3://b/k $(rm -rf x).csv"]',
        "--kwargs",
        '{"model_image": "reg/m:2"}',
    ]
    assert "--model-image reg/m:2" in cli


def test_redaction():
    env = {"DB_PASSWORD": "s3cr3t-value", "PATH": "/usr/bin"}
    text = (
        "key AKIAABCDEFGHIJKLMNOP pw s3cr3t-value password=hunter2 token: abc.def "
        "Authorization: Bearer xyz https://user:pa55@host/x /usr/bin"
    )
    out = redact(text, env)
    for secret in ("AKIAABCDEFGHIJKLMNOP", "s3cr3t-value", "hunter2", "abc.def", "xyz", "pa55"):
        assert secret not in out
    assert "/usr/bin" in out and "https://user:***@host/x" in out


def test_error_file_is_redacted(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    text = render(
        source=S3Uri("b", "k"),
        version=None,
        model_image="m",
        k8s_cluster="c",
        k8s_namespace="n",
        pipeline_id="p",
        failure=Failure(
            step="launch",
            kind="ModelError",
            message="x",
            model_logs="env: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    )
    assert "wJalrXUtnFEMI" not in text


def test_pipeline_ids():
    a = pipeline_id("b", "k", None, '"etag1"', 1782907200.0)
    assert a == pipeline_id("b", "k", None, "etag1", 1782907200.0)  # quotes do not matter
    assert a != pipeline_id("b", "k", None, "etag1", 1782907201.0)  # a new upload, same bytes
    assert pipeline_id("b", "k", "v1", "e", 1.0) == pipeline_id("b", "k", "v1", "other", None)
    assert a.startswith("sf-") and len(a) == 23


def test_output_mapping():
    assert (
        str(
            output_uri(S3Uri("in", "a/"), S3Uri("out", "x/"), S3Uri("in", "a/b/c.csv"), ".scoreout")
        )
        == "s3://out/x/b/c.csv.scoreout"
    )


def test_outputs_of_very_long_keys_stay_within_the_s3_limit():
    rel = (
        "d/" + "é" * 300 + "x" * 410 + ".csv"
    )  # 1,016 bytes: fits S3 as an input key, not with the output prefix
    src = S3Uri("in", "input/" + rel)
    out = output_uri(S3Uri("in", "input/"), S3Uri("out", "results/"), src, ".scoreout")
    err = output_uri(S3Uri("in", "input/"), S3Uri("out", "results/"), src, ".error")
    assert len(out.key.encode()) <= 1024 and len(err.key.encode()) <= 1024
    assert out.key.startswith("results/d/éé") and out.key.endswith(".scoreout")
    assert out.key.rsplit("~", 1)[1][:16] == err.key.rsplit("~", 1)[1][:16]
    assert out == output_uri(S3Uri("in", "input/"), S3Uri("out", "results/"), src, ".scoreout")


def _render(failure: Failure) -> str:
    return render(
        source=S3Uri("data", "in/x.csv"),
        version=None,
        model_image="reg/iris:1",
        k8s_cluster="prod",
        k8s_namespace="scoring",
        pipeline_id="sf-123",
        failure=failure,
    )


def test_a_models_traceback_goes_on_under_the_error_line():
    """Issue 28, item 2: the model's answer (its traceback) is in the .error whole,
    each line indented under the error's first."""
    message = "the model failed on data rows 1-5: ...\nTraceback (most recent call last):\n  x\nValueError: no"
    text = _render(Failure(step="score", kind="ModelError", message=message))
    assert "error:        ModelError: the model failed on data rows 1-5: ...\n" in text
    assert "\n              Traceback (most recent call last):\n                x\n" in text
    assert "\n              ValueError: no\n" in text


def test_bad_input_at_launch_says_the_model_is_not_what_failed():
    """Issue 28, item 9: "failed step: launch" read as the model failing to start."""
    text = _render(Failure(step="launch", kind="BadInput", message="the file is empty"))
    assert "failed step:  launch (the input was checked before any model started" in text
    text = _render(Failure(step="launch", kind="ModelError", message="exited with code 3"))
    assert "failed step:  launch\n" in text
