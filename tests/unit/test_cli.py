"""The CLI's small promises (issue 12): whole descriptions in --help, one report per
bad variable, rerun --wait, the lock of a state directory, what stack.env holds,
the local stack's model catalog, one-line answers for unreachable services."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from click.testing import CliRunner

from scorefleet.settings import ConfigError, load
from workers.cli import stackenv as clienv
from workers.cli.commands import main
from workers.localstack import state as stackstate
from workers.localstack.stack import IRIS_IMAGE, local_models

BASE = {
    "SCOREFLEET_INPUT_URI": "s3://data/in/",
    "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
    "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "reg/",
}


def test_help_prints_every_description_whole():
    out = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    commands = out.split("Commands:", 1)[1]
    assert "..." not in commands, out
    flat = " ".join(out.split())
    for sentence in (
        "Run the whole system locally (emulated S3/SQS/SNS, Lambda bridge, worker, beat, Flower).",
        "Upload FILE to the input prefix with its tags (the notification does the rest).",
        "Rerun a file: sends tasks.rescore, like `celery -A workers.app call tasks.rescore`.",
        "The dead-letter queue: messages SQS gave up on after too many receives.",
        "Check the configuration in the environment (or print the reference).",
    ):
        assert sentence in flat, out
    sub = " ".join(CliRunner().invoke(main, ["dlq", "--help"]).output.split())
    assert "Send dead letters back to the task queue (fix the cause first)." in sub


def test_rerun_has_the_same_wait_as_submit():
    submit = CliRunner().invoke(main, ["submit", "--help"]).output
    rerun = CliRunner().invoke(main, ["rerun", "--help"]).output
    line = next(x for x in submit.splitlines() if "--wait" in x)
    assert line in rerun.splitlines()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"SCOREFLEET_OUTPUT_URI": "s3://data/in/x/"}, "SCOREFLEET_OUTPUT_URI=s3://data/in/x/"),
        ({"SCOREFLEET_INPUT_URI": "s3://data/"}, "SCOREFLEET_OUTPUT_URI=s3://data/out/"),
        ({"SCOREFLEET_MONITOR_IDLE": "1"}, "is out of range (allowed range 60..604800)"),
    ],
)
def test_one_bad_variable_is_reported_once(extra, needle):
    """An output prefix inside the input prefix was reported for OUTPUT_URI and again
    for ERROR_URI and STATE_URI, whose defaults come from it."""
    with pytest.raises(ConfigError) as err:
        load({**BASE, **extra})
    assert len(err.value.problems) == 1, err.value.problems
    assert needle in err.value.problems[0]


def test_a_derived_default_that_overlaps_on_its_own_is_named_as_such():
    with pytest.raises(ConfigError) as err:
        load({**BASE, "SCOREFLEET_INPUT_URI": "s3://data/", "SCOREFLEET_OUTPUT_URI": "s3://o/x/"})
    (problem,) = err.value.problems
    assert "SCOREFLEET_STATE_URI=s3://o/scorefleet-state/" not in problem  # another bucket
    with pytest.raises(ConfigError) as err:
        load({**BASE, "SCOREFLEET_STATE_URI": "s3://data/in/state/"})
    (problem,) = err.value.problems
    assert problem.startswith("SCOREFLEET_STATE_URI=s3://data/in/state/ overlaps")


# ------------------------------------------------------------------ the lock
def test_a_state_directory_has_one_stack(tmp_path):
    first = stackstate.StateLock(tmp_path)
    first.acquire()
    first.record(endpoint="http://127.0.0.1:4566", flower="http://127.0.0.1:5555")
    try:
        with pytest.raises(stackstate.StackRunning) as err:
            stackstate.StateLock(tmp_path).acquire()
        text = str(err.value)
        assert f"pid {os.getpid()}" in text and "emulator http://127.0.0.1:4566" in text
        assert "Flower http://127.0.0.1:5555" in text and "--state-dir" in text
        assert stackstate.holder(tmp_path)["endpoint"] == "http://127.0.0.1:4566"
    finally:
        first.release()
    assert stackstate.holder(tmp_path) is None
    again = stackstate.StateLock(tmp_path)
    again.acquire()
    again.release()


def test_a_dead_holder_leaves_no_lock(tmp_path):
    """The kernel drops an flock when its holder dies, however it dies."""
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from workers.localstack.state import StateLock
        StateLock(Path({str(tmp_path)!r})).acquire()
        os._exit(9)
    """)
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert stackstate.holder(tmp_path) is None


def test_stack_env_puts_the_installation_first_on_path_and_reads_back(tmp_path):
    path = stackstate.write_env_file(tmp_path, {"A": "x y", "B": "it's"}, Path("/opt/v/bin"))
    text = path.read_text()
    assert 'export PATH=/opt/v/bin:"$PATH"' in text
    assert stackstate.read_env_file(path) == {"A": "x y", "B": "it's"}
    out = subprocess.run(
        ["bash", "-c", f'source {path}; echo "$A|$B|$PATH"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert out == "x y|it's|/opt/v/bin:/usr/bin:/bin"


# -------------------------------------------------------- the local catalog
def test_local_models_merge_the_users_with_the_examples(tmp_path):
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"team/churn:2": {"command": "python m.py --port {port}"}}))
    env = {
        "SCOREFLEET_MODEL_CATALOG": json.dumps({"lab/*": {"command": "serve --port {port}"}}),
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "registry.example/models/, lab/",
    }
    catalog, prefixes = local_models(env, own)
    assert set(catalog) == {IRIS_IMAGE, "lab/*", "team/churn:2"}
    assert prefixes.split(",") == [
        "scorefleet-examples/",
        "registry.example/models/",
        "lab/",
        "team/churn:2",
    ]
    settings = load({**BASE, "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog)})
    assert "command" not in settings.models.spec("scorefleet-examples/iris:2.0").extra  # exact
    assert settings.models.spec("lab/x:1").extra["command"] == "serve --port {port}"  # on purpose


def test_local_models_allow_each_catalog_image_at_a_boundary():
    """The same boundary rule when the local stack allows what its catalog names:
    a prefix already allowed leaves out only what it allows itself."""
    env = {
        "SCOREFLEET_MODEL_CATALOG": json.dumps(
            {
                "my/iris:1": {"command": "a --port {port}"},
                "my/iris-2:1": {"command": "b --port {port}"},
                "my/iris:1.5": {"command": "c --port {port}"},
            }
        ),
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "my/iris",
    }
    catalog, prefixes = local_models(env)
    assert prefixes.split(",") == ["scorefleet-examples/", "my/iris", "my/iris-2:1"]
    settings = load({**BASE, "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": prefixes})
    assert all(settings.models.image_allowed(image) for image in catalog)


def test_a_bad_user_catalog_names_its_source(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": {"command": "no placeholder"}}')
    with pytest.raises(ValueError, match=r"^--catalog .*bad.json: not a model catalog"):
        local_models({}, bad)
    result = CliRunner().invoke(main, ["up", "--catalog", str(bad)])
    assert result.exit_code == 1 and "{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------ one-line answers
def test_unreachable_services_are_one_line_that_says_what_to_do(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")
    message = clienv.unreachable(down)
    assert message.startswith("cannot reach the local stack's emulator at http://127.0.0.1:9")
    assert "scorefleet up" in message and "\n" not in message
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert "check the network" in clienv.unreachable(down)
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
    assert clienv.unreachable(denied) == "PutObject failed: AccessDenied: no"
    assert clienv.unreachable(ValueError("a bug")) is None  # bugs keep their traceback


def test_a_port_a_server_just_left_is_free_for_flower_again():
    """Issue 28, item 5: after a quick restart Flower moved off 5555, because the
    free-port test bound without SO_REUSEADDR and the old Flower's connections in
    TIME-WAIT made the port look taken (Flower itself binds with SO_REUSEADDR)."""
    import socket

    from workers.cli.commands import _port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection in TIME-WAIT
    client.close()
    assert not _port_free(port)  # still listening: taken
    server.close()
    bare = socket.socket()  # what the old test did: bind without SO_REUSEADDR
    with pytest.raises(OSError):
        bare.bind(("127.0.0.1", port))
    bare.close()
    assert _port_free(port)


def test_submit_tag_sets_any_tag_scorefleet_reads_and_refuses_the_rest():
    """Issue 28, item 7: submit set only image, cluster and namespace."""
    from scorefleet.submission import USED_TAGS
    from workers.cli.tags import file_tags

    every = tuple(f"{name}=v{i}" for i, name in enumerate(USED_TAGS))
    assert file_tags(every, {}) == {name: f"v{i}" for i, name in enumerate(USED_TAGS)}
    got = file_tags(("keep_columns=id customer_id", "max_rejected_rows=0.1%"), {"model_image": "a"})
    assert got == {
        "model_image": "a",
        "keep_columns": "id customer_id",
        "max_rejected_rows": "0.1%",
    }
    for given, needle in (
        (
            "keep_colums=id",
            "'keep_colums' is not a tag scorefleet reads: did you mean 'keep_columns'?",
        ),
        ("team=risk", "'team' is not a tag scorefleet reads: it reads model_image, "),
        ("keep_columns", "'keep_columns': give NAME=VALUE"),
        ("model_image=b", "model_image is given twice, as 'a' and 'b'"),
    ):
        with pytest.raises(click.BadParameter, match=re.escape(needle)):
            file_tags((given,), {"model_image": "a"})
    result = CliRunner().invoke(main, ["submit", "--help"])
    assert "--tag NAME=VALUE" in result.output and "drop_columns" in result.output


def test_the_local_stack_sweeps_after_seconds_and_production_after_a_quarter_hour(tmp_path):
    """Issue 28, item 9: the local stack kept the production grace (900 s), so
    `scorefleet sweep` found a lost notification only after a quarter of an hour."""
    from workers.localstack.stack import stack_env

    env = stack_env("http://127.0.0.1:1", tmp_path)
    assert load(env).sweep.grace == 10
    production = {k: v for k, v in env.items() if k != "SCOREFLEET_SWEEP_GRACE_SECONDS"}
    assert load(production).sweep.grace == 900
