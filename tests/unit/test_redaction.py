"""Credential masking: a corpus of secret shapes that must be masked and innocent
look-alikes that must come through unchanged; masking applies to what comes from
outside (errors, model logs, configuration values), never to the URIs and commands
scorefleet writes itself."""

from __future__ import annotations

import json
import shlex

import pytest
from click.testing import CliRunner

from scorefleet.job import Failure
from scorefleet.redact import MASK, redact
from scorefleet.s3uri import S3Uri
from scorefleet.storage.errordoc import render
from workers.cli.commands import main

SIGV4 = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
PLANTED = "planted-db-password-9431"

#: (text as a model, a library or an exception might print it, the secret in it)
SECRETS = [
    ("using key AKIAIOSFODNN7EXAMPLE for s3", "AKIAIOSFODNN7EXAMPLE"),
    ("temporary key ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ('{"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}', "wJalrXUtnFEMI"),
    ("{'password': 'hunter2-quoted'}", "hunter2-quoted"),
    (
        "environ({'PATH': '/usr/bin', 'AWS_SECRET_ACCESS_KEY': 'wJalr/secret+key', 'HOME': '/'})",
        "wJalr/secret+key",
    ),
    (
        "environ({'AWS_SESSION_TOKEN': 'IQoJb3JpZ2luX2VjEJr//////////wEaCXVz', 'LANG': 'C'})",
        "IQoJb3JpZ2luX2VjEJr",
    ),
    ('"SessionToken": "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3Qt"', "IQoJb3JpZ2luX2VjEJr"),
    (
        "{'Credentials': {'AccessKeyId': 'ASIAY34FZKBOKMUTVV7A', "
        "'SecretAccessKey': 'stsSecretValue/123', 'SessionToken': 'FwoGZXIvYXdzEJr'}}",
        "stsSecretValue/123",
    ),
    ("broker sqs://AKIAIOSFODNN7EXAMPLE:wJalrXUtnF/K7MDENG+x@localhost:4566", "wJalrXUtnF/K7MD"),
    ("postgres://scorer:hunter2-db@db.internal:5432/models", "hunter2-db"),
    ("redis://:redispass99@cache:6379/0", "redispass99"),
    ("Bearer k8s-aws-v1.aHR0cHM6Ly9zdHMuZXUtd2VzdC0xLmFtYXpvbmF3cy5jb20v", "aHR0cHM6Ly9zdHMu"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "eyJhbGciOiJSUzI1NiJ9"),
    ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
    (
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/eu-west-1/"
        f"s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIGV4}",
        SIGV4,
    ),
    ('{"headers": {"Authorization": "Bearer abc.def.ghi-jkl"}}', "abc.def.ghi-jkl"),
    (
        f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={SIGV4}",
        SIGV4,
    ),
    ("GET /k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1", "AKIAIOSFODNN7EXAMPLE"),
    ("GET /k?X-Amz-Security-Token=IQoJb3JpZ2luX2Vj%2F%2Fwbla&X-Amz-Date=1", "IQoJb3JpZ2luX2Vj"),
    ("GET /hook?token=ghp_16C7e42F292c6912E7710c838347Ae178B4a&user=x", "ghp_16C7e42F292c"),
    ("DB_PASSWORD=plain-env-value", "plain-env-value"),
    ("api_key: sk-live-1234567890abcdef", "sk-live-1234567890abcdef"),
    ('{"api-key":"k-1234567890"}', "k-1234567890"),
    ("x-api-key: abcd1234efgh", "abcd1234efgh"),
    ("client_secret=oauth-client-secret-1", "oauth-client-secret-1"),
    ("secret: 'value with spaces'", "value with spaces"),
    ('password="quoted value"', "quoted value"),
    ("token: eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJ4In0.sig", "eyJhbGciOiJSUzI1NiIs"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75\n-----END RSA PRIVATE KEY-----", "MIIEp"),
    (f"connecting with {PLANTED} to the feature store", PLANTED),
]

#: What must come through untouched: URIs, commands, ids and log lines that only
#: look like they hold a secret.
INNOCENT = [
    "s3://b/in/rt/tokens:2026-12-01/batch.csv",
    "celery -A workers.app call tasks.rescore --args "
    + shlex.quote(json.dumps(["s3://b/in/rt/tokens:2026-12-01/batch.csv"])),
    "s3://b/in/secret-project/password-reset/q3.csv does not exist",
    "scorefleet rerun s3://b/in/keys/api_key=rotation.csv",
    "http://127.0.0.1:8080/invocations",
    "https://sqs.eu-west-1.amazonaws.com:443/123456789012/scorefleet",
    "ftp://mirror.example:21/pub/file@v2.csv",
    "123.dkr.ecr.eu-west-1.amazonaws.com/models/iris@sha256:" + "a" * 64,
    "pipeline id:  sf-0123456789abcdef0123-r1767225600ab12",
    "ETag 9d2eb0dec8f5de2c00fce8d2db7d3dc7, X-Amz-Date=20260101T000000Z",
    "the model answered 3 result rows for rows 1-4 (4 rows)",
    "Bearer tokens are refused by this model",
    "user@example.com wrote in/2026/q3.csv",
    'Traceback (most recent call last):\n  File "/app/tasks/steps.py", line 120, in run_step',
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secret_shapes_are_masked(text, secret):
    out = redact(text, {"DB_PASSWORD": PLANTED})
    assert secret not in out and MASK in out, out


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_look_alikes_are_left_alone(text):
    assert redact(text, {"DB_PASSWORD": PLANTED}) == text


def test_the_corpus_is_as_large_as_promised():
    assert len(SECRETS) >= 20 and len(INNOCENT) >= 10


def test_an_error_file_keeps_the_uri_and_rerun_command_exact_and_masks_the_rest():
    source = S3Uri("b", "in/rt/tokens:2026-12-01/batch.csv")
    text = render(
        source=source,
        version=None,
        model_image="test/ok:1",
        k8s_cluster="c",
        k8s_namespace="n",
        pipeline_id="sf-0123456789abcdef0123",
        failure=Failure(
            step="score",
            kind="ModelError",
            message=f"{source} made the model answer 'password': 'hunter2-quoted'",
            model_logs="environ({'AWS_SECRET_ACCESS_KEY': 'wJalr/secret+key'})\nloaded",
        ),
    )
    assert "hunter2-quoted" not in text and "wJalr/secret+key" not in text
    assert f"scorefleet could not score {source}\n" in text
    assert f"error:        ModelError: {source} made the model" in text
    (celery,) = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("celery ")]
    argv = shlex.split(celery)
    assert json.loads(argv[argv.index("--args") + 1]) == [str(source)]
    (cli,) = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("scorefleet rerun")]
    assert shlex.split(cli)[2] == str(source)


def test_scorefleet_config_masks_the_catalogs_env_and_broker_passwords():
    catalog = {
        "test/x:1": {
            "command": "{python} serve.py --port {port}",
            "env": {"DB_PASS": "hunter2-catalog", "MODEL_FLAVOUR": "gradient-boosting"},
        }
    }
    env = {
        "SCOREFLEET_INPUT_URI": "s3://data/in/",
        "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog),
        "SCOREFLEET_BROKER_URL": "sqs://AKIAIOSFODNN7EXAMPLE:wJalrXUtnF/K7MDENG@127.0.0.1:1",
    }
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    for secret in ("hunter2-catalog", "gradient-boosting", "wJalrXUtnF", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in result.output
    assert "DB_PASS" in result.output and "serve.py --port {port}" in result.output
    assert "s3://data/in/" in result.output
