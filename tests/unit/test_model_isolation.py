"""The local backend's cheap isolation of a model process from its worker (same user):
the worker is not dumpable (its /proc/<pid>/environ and memory are closed to the
model), the model gets a fresh private HOME and TMPDIR and none of the worker's
AWS_* or SCOREFLEET_* variables.

These tests run as root here, and root reads any process's environ, dumpable or not:
the /proc test therefore runs the "worker" and the "model" as one unprivileged user
(setpriv to nobody when run as root; as the current user otherwise). What no test
here can show is docs/security.md's list of what remains: the same user can still
signal the worker, ptrace it where yama allows and the process is dumpable, and read
every file that user can read.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from scorefleet.settings import ConfigError, ModelSpec, load
from tests.helpers import FAKEMODEL, REPO, make_job
from workers.backends.local.backend import LocalBackend

HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    if sys.argv[1] == "hardened":
        from workers.process.hardening import make_non_dumpable
        assert make_non_dumpable()
    print("ready", flush=True)
    time.sleep(60)
    """
)
READER = textwrap.dedent(
    """
    import sys
    try:
        data = open(f"/proc/{sys.argv[1]}/environ", "rb").read()
    except PermissionError:
        print("denied")
    else:
        print("read" if b"PLANTED_WORKER_SECRET=hunter2-environ" in data else "other")
    """
)


def as_one_unprivileged_user() -> list[str]:
    if os.geteuid() != 0:
        return []  # already one (the same) unprivileged user for both
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot run as an unprivileged user")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def read_environ_of(mode: str, scripts: Path) -> str:
    """Start a credential holder (hardened or not) and, as the same user, try to read
    its environment from /proc."""
    prefix = as_one_unprivileged_user()
    holder_py, reader_py = scripts / "holder.py", scripts / "reader.py"
    holder_py.write_text(HOLDER.format(repo=str(REPO)))
    reader_py.write_text(READER)
    env = {"PATH": os.environ["PATH"], "PLANTED_WORKER_SECRET": "hunter2-environ"}
    holder = subprocess.Popen(
        [*prefix, sys.executable, str(holder_py), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [*prefix, sys.executable, str(reader_py), str(holder.pid)],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": os.environ["PATH"]},
            check=True,
        )
        return out.stdout.strip()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_process_of_the_same_user_cannot_read_the_workers_environment():
    # scripts the unprivileged user can read (pytest's tmp_path is root's own)
    with tempfile.TemporaryDirectory(prefix="scorefleet-isolation-") as scripts:
        os.chmod(scripts, 0o755)
        assert read_environ_of("plain", Path(scripts)) == "read"  # the hole, unhardened
        assert read_environ_of("hardened", Path(scripts)) == "denied"


def test_every_process_of_the_worker_app_is_non_dumpable(tmp_path):
    """workers.app (worker, beat, Flower, celery call) hardens itself on import."""
    env = {
        **os.environ,
        "SCOREFLEET_INPUT_URI": "s3://data/in/",
        "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        "SCOREFLEET_EVENTS": "false",
    }
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import workers.app; "
        "from workers.process.hardening import is_dumpable; print(is_dumpable())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.fixture
def backend(tmp_path):
    b = LocalBackend(tmp_path / "state", launch_timeout=10, log_lines=10)
    yield b
    b.stop_all()


def model_spec(**env: str) -> ModelSpec:
    cmd = f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} --mode ok"
    return ModelSpec(image="test/ok:1", extra={"command": cmd, **({"env": env} if env else {})})


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_model_gets_a_private_home_and_none_of_the_workers_variables(
    backend, tmp_path, monkeypatch
):
    worker_home = tmp_path / "worker-home"
    (worker_home / ".aws").mkdir(parents=True)
    (worker_home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key=x\n")
    monkeypatch.setenv("HOME", str(worker_home))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret-key")
    monkeypatch.setenv("AWS_PROFILE", "prod")
    monkeypatch.setenv("SCOREFLEET_BROKER_URL", "sqs://k:s@host")
    first, second = make_job("sf-00000000000000000001"), make_job("sf-00000000000000000002")
    env1 = environ_of(backend.launch(first, model_spec(OMP_NUM_THREADS="1")).handle["pid"])
    env2 = environ_of(backend.launch(second, model_spec()).handle["pid"])

    assert not [k for k in env1 if k.startswith(("AWS_", "SCOREFLEET_"))], env1
    assert env1["OMP_NUM_THREADS"] == "1" and env1["PATH"] == os.environ["PATH"]
    home = Path(env1["HOME"])
    assert home != worker_home and home.is_dir() and not (home / ".aws").exists()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert Path(env1["TMPDIR"]).parent == home
    assert env2["HOME"] != env1["HOME"]  # a fresh one per model process
    backend.teardown(first)
    assert not home.exists()  # removed with its model
    assert Path(env2["HOME"]).is_dir()


def test_a_tampered_record_cannot_make_teardown_remove_another_directory(backend, tmp_path):
    """The record is writable by the model (same user): teardown takes only a name
    from it, never a path."""
    victim = tmp_path / "victim"
    victim.mkdir()
    job = make_job("sf-00000000000000000003")
    backend.launch(job, model_spec())
    record = tmp_path / "state" / "local" / job.run_id / "record.json"
    for forged in (str(victim), "../../victim", ".."):
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "home": forged}))
        backend.runs.remove_home(json.loads(record.read_text()))
        assert victim.is_dir()
    assert backend.teardown(job)
    assert victim.is_dir() and (tmp_path / "state").is_dir()


def test_the_catalog_cannot_hand_a_model_the_workers_variables():
    base = {
        "SCOREFLEET_INPUT_URI": "s3://data/in/",
        "SCOREFLEET_OUTPUT_URI": "s3://data/out/",
        "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
    }
    for name in ("AWS_SECRET_ACCESS_KEY", "aws_profile", "SCOREFLEET_BROKER_URL"):
        catalog = {"test/x:1": {"command": "m --port {port}", "env": {name: "v"}}}
        with pytest.raises(ConfigError, match=f"{name}: a model gets no AWS_"):
            load({**base, "SCOREFLEET_MODEL_CATALOG": json.dumps(catalog)})
    ok = {"test/x:1": {"command": "m --port {port}", "env": {"OMP_NUM_THREADS": 1}}}
    assert load({**base, "SCOREFLEET_MODEL_CATALOG": json.dumps(ok)}).models.catalog == ok


def test_a_model_that_dies_leaves_no_home_behind(backend, tmp_path):
    job = make_job("sf-00000000000000000004")
    pid = backend.launch(job, model_spec()).handle["pid"]
    home = Path(environ_of(pid)["HOME"])
    psutil.Process(pid).kill()
    deadline = time.monotonic() + 10
    while backend.is_alive(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.reap(0, lambda run: False) == [job.run_id]
    assert not home.exists()
