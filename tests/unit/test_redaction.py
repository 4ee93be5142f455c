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
    # issue 24: shapes that leaked (11 of 13), and more of the same families
    ("serve.py --password hunter2 --port 8080", "hunter2"),
    ("java -jar model.jar -token s3cr3t-t0ken-value", "s3cr3t-t0ken-value"),
    ("exec --api-key 'quoted key value'", "quoted key value"),
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFyYmF6cXV4cXV1eA==;"
        "EndpointSuffix=core.windows.net",
        "Zm9vYmFyYmF6cXV4cXV1eA==",
    ),
    (
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&ss=b&sig=aBcD%2Fef0123456789xyz%3D",
        "aBcD%2Fef0123456789xyz",
    ),
    ("SharedAccessKey=b64sharedaccesskeyvalue0123=", "b64sharedaccesskeyvalue0123"),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGPGPprivatekeybody0123456789abcd\n"
        "=Ab12\n-----END PGP PRIVATE KEY BLOCK-----",
        "lQOYBGPGPprivatekeybody",
    ),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEA",
    ),
    ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTAp\n", "MIIFHDBOBgkqhkiG"),
    ("https://user:p@ssw0rd@db.internal/models", "ssw0rd"),
    ("mongodb+srv://svc:pa/ss@word@cluster0.example.net/db", "ss@word"),
    ("Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark", "8f14e45fceea167a"),
    ("Set-Cookie: sid=abcdef0123456789; HttpOnly", "abcdef0123456789"),
    ('{"cookie": "sessionid=0123456789abcdef"}', "0123456789abcdef"),
    (
        "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9",
        "dozjgNryP4J3jVmNHl0w5N",
    ),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOp"),
    ("app token xapp-1-A0123456789-0123456789012-abcdef0123456789", "abcdef0123456789"),
    ("stripe sk_live_51HaBcDeFgHiJkLmNoPqRsTuV", "51HaBcDeFgHiJkLmNoPqRsTuV"),
    ("webhook whsec_0123456789abcdefghijABCDEFGHIJ", "0123456789abcdefghij"),
    ("maps AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890"),
    ("oauth ya29.a0AfH6SMBx0123456789abcdefghijk", "a0AfH6SMBx0123456789"),
    ("clone with ghp_0123456789abcdefghijklmnopqrstuvwxyz", "0123456789abcdefghijklmnopq"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789", "11ABCDEFG0123"),
    ("gitlab glpat-0123456789abcdefABCD", "0123456789abcdefABCD"),
    ("openai sk-proj-0123456789abcdefghijKLMNOP", "0123456789abcdefghijKLMNOP"),
    ("hub hf_abcdefghijklmnopqrstuvwxyz01234567", "abcdefghijklmnopqrstuvwxyz0"),
    ("npm_0123456789abcdefghijklmnopqrstuvwxyz in .npmrc", "0123456789abcdefghijklmn"),
    (
        "pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAAC",
        "AgEIcHlwaS5vcmc",
    ),
    ("SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "ABCDEFGHIJKLMNOP"),
    ("databricks dapi0123456789abcdef0123456789abcdef", "0123456789abcdef0123"),
    ("twilio SK0123456789abcdef0123456789abcdef", "0123456789abcdef0123"),
    ("client_secret: oauth-client-secret-2", "oauth-client-secret-2"),
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
    # issue 24: look-alikes of the new shapes
    "--password-file /run/secrets/db is read at start",
    "pass --token-ttl 30 to refresh sooner",
    "the sky is blue; sig=1 in the results table",
    "tokenizer: bert-base-uncased, max tokens 512",
    "key-value store: ready",
    "sk-learn 1.5 loaded the model",
    "eyJ is how a base64 JSON object starts",
    "-----BEGIN CERTIFICATE-----",
    "AccountName=acct;EndpointSuffix=core.windows.net",
    "cookie policy: none set",
    "s3://b/in/pk_live/2026.csv",
    "AIza is a Google key prefix",
    "scored 100 rows in 2.5s, 0 refused",
    "in/sig=2026/input.csv",
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secret_shapes_are_masked(text, secret):
    out = redact(text, {"DB_PASSWORD": PLANTED})
    assert secret not in out and MASK in out, out


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_look_alikes_are_left_alone(text):
    assert redact(text, {"DB_PASSWORD": PLANTED}) == text


def test_the_corpus_is_as_large_as_promised():
    assert len(SECRETS) >= 40 and len(INNOCENT) >= 20


#: a model's log: a PEM private key printed in the middle (issue 24)
KEY_BODY = [f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{i:04d}abcdefghij" for i in range(30)]
LOG = [f"line {i}: loading" for i in range(10)] + [
    "-----BEGIN PRIVATE KEY-----",
    *KEY_BODY,
    "-----END PRIVATE KEY-----",
    *[f"line {i}: scoring" for i in range(10, 30)],
]


@pytest.mark.parametrize(
    "excerpt",
    [
        [*LOG[:5], "[...]", *LOG[-40:]],  # the BEGIN line cut away: body and END kept
        [*LOG[:12], "[...]", *LOG[-20:]],  # BEGIN and some body kept, the END cut away
        LOG[-25:],  # a pod's last lines: from the middle of the key on
    ],
    ids=["begin-cut", "end-cut", "tail-only"],
)
def test_a_key_split_by_the_cut_of_a_log_excerpt_is_masked(excerpt):
    out = redact("\n".join(excerpt))
    assert not any(line in out for line in KEY_BODY), out
    assert "line 29: scoring" in out or "line 9" in out  # the rest stays


def test_the_local_backends_excerpt_masks_a_key_its_cut_split(tmp_path):
    from workers.backends.local.processes import tail

    log = tmp_path / "model.log"
    log.write_text("\n".join(LOG) + "\n")
    out = redact(tail(log, 45))
    assert "[...]" in out and not any(line in out for line in KEY_BODY)


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
