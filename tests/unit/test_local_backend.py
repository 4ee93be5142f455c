"""The local launch backend with real processes."""

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from scorefleet.errors import ModelError
from scorefleet.job import Failure
from scorefleet.settings import ModelSpec
from tests.helpers import FAKEMODEL, REPO, launched, make_job
from tests.helpers.protocols import invoke, sagemaker
from workers.backends.local.backend import LocalBackend


def job(run_id="sf-00000000000000000001"):
    return make_job(run_id, model_image="test/x")


def spec(mode, *extra):
    cmd = f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} --mode {mode} {' '.join(extra)}"
    return ModelSpec(image=f"test/{mode}", extra={"command": cmd})


@pytest.fixture
def backend(tmp_path):
    b = LocalBackend(tmp_path, launch_timeout=5, log_lines=10)
    yield b
    b.stop_all()


def test_launch_score_teardown(backend):
    j = job()
    ep = backend.launch(j, spec("ok"))
    client = sagemaker(ep.url)
    assert invoke(client, b"a\n1\n2\n", 1, 2).rows == 2
    client.close()
    pid = ep.handle["pid"]
    assert backend.is_alive(j) and "listening" in backend.logs(j, 5)
    # adopting: a second launch for the same run returns the same process
    assert backend.launch(j, spec("ok")).handle["pid"] == pid
    assert backend.teardown(j) is True
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert backend.teardown(j) is False  # idempotent


def test_model_that_crashes_at_start(backend, monkeypatch):
    monkeypatch.setenv("FAKEMODEL_SECRET", "should-not-reach-the-model")
    j = job()
    with pytest.raises(ModelError, match="exited with code 3 before it answered") as err:
        backend.launch(j, spec("crash"))
    assert "weights file is corrupt" in err.value.model_logs
    # the worker's environment is not passed to the model
    assert "should-not-reach-the-model" not in err.value.model_logs
    assert backend.teardown(j)


def test_model_that_never_gets_ready(tmp_path):
    backend = LocalBackend(tmp_path, launch_timeout=1.5)
    j = job()
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=r"did not answer GET /ping within 1\.5s") as err:
        backend.launch(j, spec("never-ready"))
    assert time.monotonic() - t0 < 5
    assert "listening" in err.value.model_logs
    assert backend.teardown(j) and not backend.is_alive(j)


def test_unknown_command(backend):
    with pytest.raises(ModelError, match=r"no model command for image 'test/unknown' on this"):
        backend.launch(job(), ModelSpec(image="test/unknown"))


def test_unknown_command_lists_the_images_the_catalog_serves(tmp_path):
    """Issue 28, item 9: the .error did not say which images have an entry."""
    b = LocalBackend(tmp_path, launch_timeout=5, served=("reg/b:1", "reg/a*"))
    with pytest.raises(ModelError, match=r"an image the catalog lists \(reg/a\*, reg/b:1\)$"):
        b.launch(job(), ModelSpec(image="reg/c:1"))


def test_teardown_stops_children_too(backend, tmp_path):
    # a model whose server runs as a grandchild in its own session
    script = tmp_path / "wrapper.py"
    script.write_text(
        "import os, subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, {str(FAKEMODEL)!r}, '--port', sys.argv[1], '--mode', 'ok'],"
        " start_new_session=True)\n"
        "p.wait()\n"
    )
    j = job()
    ep = backend.launch(
        j, ModelSpec(image="t/w", extra={"command": f"{{python}} {script} {{port}}"})
    )
    parent = psutil.Process(ep.handle["pid"])
    kids = parent.children(recursive=True)
    assert kids
    backend.teardown(j)
    time.sleep(0.2)
    for p in [parent, *kids]:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE


def test_reaper_removes_old_and_finished_runs(backend):
    a, b, c = (
        job("sf-0000000000000000000a"),
        job("sf-0000000000000000000b"),
        job("sf-0000000000000000000c"),
    )
    for j in (a, b, c):
        backend.launch(j, spec("ok"))
    removed = backend.reap(3600, lambda run: run == b.run_id)
    assert removed == [b.run_id]
    assert backend.is_alive(a) and not backend.is_alive(b) and backend.is_alive(c)
    assert sorted(backend.reap(0, lambda run: False)) == sorted([a.run_id, c.run_id])


def test_the_endpoint_comes_from_the_runs_own_record(backend, tmp_path):
    """What the score step uses: the port this backend recorded for the run (any
    worker on the machine reads the same record), never the job's endpoint field."""
    j = job()
    ep = backend.launch(j, spec("ok"))
    j = launched(j, "http://127.0.0.1:9/attacker", {})
    assert backend.endpoint(j) == ep.url
    assert LocalBackend(tmp_path, launch_timeout=5).endpoint(j) == ep.url
    assert backend.endpoint(job("sf-00000000000000000002")) is None  # no such run
    backend.teardown(j)
    assert backend.endpoint(j) is None


def test_another_process_can_tear_down(backend, tmp_path):
    """Teardown may run in another worker process: it only needs the state dir."""
    j = job()
    pid = backend.launch(j, spec("ok")).handle["pid"]
    code = (
        f"import sys; sys.path.insert(0, {os.getcwd()!r}); from pathlib import Path; "
        "from workers.backends.local.backend import LocalBackend; from tests.unit.test_local_backend import job; "
        f"print(LocalBackend(Path({str(tmp_path)!r}), 5).teardown(job()))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    time.sleep(0.1)
    backend.runs.reap_children()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_log_tail_keeps_the_first_lines_of_a_long_log(tmp_path):
    from workers.backends.local.processes import tail

    log = tmp_path / "model.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    lines = tail(log, 20).splitlines()
    assert lines[:6] == ["line 0", "line 1", "line 2", "line 3", "line 4", "[...]"]
    assert lines[6:] == [f"line {i}" for i in range(985, 1000)]
    log.write_text("only\nthree\nlines\n")
    assert tail(log, 20) == "only\nthree\nlines"


@pytest.fixture
def warm_backend(tmp_path):
    b = LocalBackend(tmp_path, launch_timeout=5, warm_idle=30, warm_max=2)
    yield b
    b.stop_all()


def test_warm_mode_reuses_a_healthy_model_of_the_same_image(warm_backend):
    a, b, c = (
        job("sf-0000000000000000000a"),
        job("sf-0000000000000000000b"),
        job("sf-0000000000000000000c"),
    )
    first = warm_backend.launch(a, spec("ok"))
    assert warm_backend.teardown(a)  # parked, not stopped
    assert psutil.pid_exists(first.handle["pid"])
    second = warm_backend.launch(b, spec("ok"))
    assert second.handle["pid"] == first.handle["pid"] and second.warm
    assert "now scores" in warm_backend.logs(b, 5)
    # another image never gets it
    other = warm_backend.launch(c, spec("hash"))
    assert other.handle["pid"] != first.handle["pid"]
    # a failed run's model is stopped, not parked
    b = replace(b, failure=Failure(step="score", kind="ModelError", message="wrong rows"))
    warm_backend.teardown(b)
    assert (
        not psutil.pid_exists(first.handle["pid"])
        or psutil.Process(first.handle["pid"]).status() == psutil.STATUS_ZOMBIE
    )


def test_warm_models_expire_and_dead_ones_are_not_reused(warm_backend):
    a, b = job("sf-0000000000000000000a"), job("sf-0000000000000000000b")
    pid = warm_backend.launch(a, spec("ok")).handle["pid"]
    warm_backend.teardown(a)
    os.kill(pid, 9)  # the parked model dies while idle
    time.sleep(0.2)
    fresh = warm_backend.launch(b, spec("ok"))
    assert fresh.handle["pid"] != pid and not fresh.warm
    warm_backend.teardown(b)
    assert warm_backend.reap(3600, lambda run: False) == []  # not idle long enough
    warm_backend.warm.idle = 0.01
    time.sleep(0.05)
    assert warm_backend.reap(3600, lambda run: False) == [b.run_id]
    assert not warm_backend.is_alive(b)


def test_concurrent_launches_never_share_a_warm_model(warm_backend):
    from concurrent.futures import ThreadPoolExecutor

    first = job("sf-0000000000000000000a")
    warm_backend.launch(first, spec("ok"))
    warm_backend.teardown(first)
    jobs = [job(f"sf-00000000000000000{i:03d}") for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        eps = list(pool.map(lambda j: warm_backend.launch(j, spec("ok")), jobs))
    assert sum(1 for e in eps if e.warm) == 1
    assert len({e.handle["pid"] for e in eps}) == 4


def test_a_model_killed_while_starting_is_worth_another_try(backend):
    import threading

    from scorefleet.errors import ModelUnavailable, is_transient

    j = job()

    # a model that never answers /ping, killed from outside while the launch waits
    def kill_soon():
        for _ in range(100):
            rec = backend.runs.record(j.run_id)
            if rec and "pid" in rec:  # written before the model runs, its pid once known
                time.sleep(0.2)
                os.kill(rec["pid"], 9)
                return
            time.sleep(0.02)

    threading.Thread(target=kill_soon, daemon=True).start()
    with pytest.raises(ModelUnavailable, match="exited on signal SIGKILL") as err:
        backend.launch(j, spec("never-ready"))
    assert is_transient(err.value)


# A worker killed -9 at the wrong moment. The harness runs a launch in a process of
# its own and kills that process (SIGKILL, as the OOM killer or a node going away
# would) right after the model process was created, right after its record was
# written, or (warm mode) while it stops a parked model; it writes the pid of the
# model process to a file first.
KILLED_LAUNCH = """
import os, signal, subprocess, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from workers.backends.local import backend as local, runs
from scorefleet.settings import ModelSpec
from tests.helpers import make_job

state, pid_file, moment, command = sys.argv[1:5]
real_popen, real_write = subprocess.Popen, local.write_record

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class Popen(real_popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Path(pid_file).write_text(str(self.pid))
        if moment == "started":
            die()

def write_record(run_dir, rec):
    real_write(run_dir, rec)
    if moment == "recorded" and "pid" in rec:
        die()

subprocess.Popen, local.write_record = Popen, write_record
job = make_job("sf-000000000000000000aa", model_image="test/x")
backend = local.LocalBackend(Path(state), 5, warm_idle=60)
backend.launch(job, ModelSpec(image="test/x", extra={{"command": command}}))
if moment == "expiring":  # park it (a success), then die while stopping it
    assert backend.teardown(job)
    runs.stop_tree = lambda proc, grace=0: die()
    backend.warm.expire(idle=-1)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def killed_worker(state: Path, moment: str, command: str) -> int:
    """Run the harness until it is killed at ``moment``; the pid of its model process."""
    import subprocess

    pid_file = state.parent / "pid"
    harness = KILLED_LAUNCH.format(repo=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", harness, str(state), str(pid_file), moment, command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    return int(pid_file.read_text())


@pytest.mark.parametrize("moment", ["started", "recorded"])
def test_a_worker_killed_mid_launch_leaves_no_model_running(tmp_path, moment):
    """Reported: a worker killed between starting a model process and writing the
    run's record left that model running forever (nothing knew its pid; the reaper
    could not find it). Now the model runs only once its record exists."""
    state, ran, model = tmp_path / "state", tmp_path / "model-ran", tmp_path / "model.py"
    model.write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    pid = killed_worker(state, moment, f"{{python}} {model} {ran} --port {{port}}")
    try:
        # what the reaper does once the run is over (tasks.reap), on another worker
        LocalBackend(state, launch_timeout=5).reap(0, lambda run_id: True)
        deadline = time.monotonic() + 10
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pid), f"the model process {pid} still runs, and nothing knows of it"
        assert not ran.exists() or gone(int(ran.read_text()))
        assert list((state / "local").iterdir()) == []
        assert list((state / "local-homes").iterdir()) == []  # its HOME too
    finally:
        for leftover in (pid, int(ran.read_text()) if ran.exists() else None):
            if leftover and not gone(leftover):
                os.kill(leftover, 9)


def test_a_worker_killed_while_it_stops_a_parked_model_leaves_none_running(tmp_path):
    """The same family in warm mode: a parked model is renamed out of its pool before
    it is stopped (so no launch claims it); a worker killed in between left it
    running where neither the pool's expiry nor the reaper looked."""
    state = tmp_path / "state"
    command = f"{{python}} {FAKEMODEL} --host {{host}} --port {{port}} --mode ok"
    pid = killed_worker(state, "expiring", command)
    try:
        assert not gone(pid)  # parked, then left behind
        LocalBackend(state, launch_timeout=5).reap(3600, lambda run_id: False)
        assert gone(pid), "the parked model still runs, and nothing knows of it"
        assert [p.name for p in (state / "local").iterdir()] == ["_warm"]
        assert list((state / "local" / "_warm").glob("*/*")) == []  # the pools are empty
        assert list((state / "local-homes").iterdir()) == []
    finally:
        if not gone(pid):
            os.kill(pid, 9)


def test_a_launch_waits_a_moment_for_a_model_of_its_image_that_is_scoring(tmp_path):
    """Issue 17: with no room for another model, a launch that finds the warm pool
    empty takes the model of its image that is being parked, rather than going back
    to the queue (its claim handed back, its first bytes read again); a launch of an
    image none of whose models is scoring waits its turn in the queue at once."""
    from concurrent.futures import ThreadPoolExecutor

    from scorefleet.errors import AtCapacity

    b = LocalBackend(tmp_path, launch_timeout=5, warm_idle=30, warm_max=2, max_live=1)
    try:
        a, c = job("sf-0000000000000000000a"), job("sf-0000000000000000000c")
        first = b.launch(a, spec("ok"))
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(b.launch, c, spec("ok"))
            time.sleep(0.3)
            assert not waiting.done()  # no room: it waits for a's model
            assert b.teardown(a)  # a is scored: its model is parked
            second = waiting.result(timeout=10)
        assert second.handle["pid"] == first.handle["pid"] and second.warm
        other = job("sf-0000000000000000000d")
        started = time.monotonic()
        with pytest.raises(AtCapacity):
            b.launch(other, spec("hash"))  # no model of its image is scoring
        assert time.monotonic() - started < 1.5
    finally:
        b.stop_all()


def test_making_room_never_stops_a_parked_model_of_the_image_being_launched(tmp_path, monkeypatch):
    """A model of the launch's own image parked between its look at the pool and its
    count of the live models is taken, not stopped to make room for a new one of the
    same image (as `_make_room` did: it stopped the oldest parked model, any image)."""
    b = LocalBackend(tmp_path, launch_timeout=5, warm_idle=30, warm_max=2, max_live=1)
    try:
        a, c = job("sf-0000000000000000000a"), job("sf-0000000000000000000c")
        first = b.launch(a, spec("ok"))
        assert b.teardown(a)  # parked
        # c looked at the pool before a's model got there
        monkeypatch.setattr(b.warm, "claim_or_wait", lambda j, s, room, replica=0: None)
        second = b.launch(c, spec("ok"))
        assert second.handle["pid"] == first.handle["pid"] and second.warm
    finally:
        b.stop_all()


def test_has_parked_and_park_hand_a_ready_model_to_the_pool(tmp_path):
    """Warm mode's launch hand-over: `park` puts a run's ready model in the pool at
    once, `has_parked` sees it; without warm mode neither does anything."""
    b = LocalBackend(tmp_path, launch_timeout=5, warm_idle=30, warm_max=2)
    cold = LocalBackend(tmp_path / "cold", launch_timeout=5)
    try:
        a = job("sf-0000000000000000000a")
        assert not b.has_parked(spec("ok"))
        pid = b.launch(a, spec("ok")).handle["pid"]
        assert b.park(a) and b.has_parked(spec("ok")) and not b.has_parked(spec("hash"))
        assert b.endpoint(a) is None  # no longer the run's
        c = job("sf-0000000000000000000c")
        assert b.launch(c, spec("ok")).handle["pid"] == pid  # any run of the image takes it
        assert not b.has_parked(spec("ok"))
        assert cold.launch(a, spec("ok")) and not cold.park(a) and not cold.has_parked(spec("ok"))
        assert cold.is_alive(a)
    finally:
        b.stop_all()
        cold.stop_all()


def test_release_parks_in_warm_mode_and_leaves_the_model_to_teardown_otherwise(tmp_path):
    """What the score step asks once its file is scored (issue 23: it no longer tests
    the warm settings and calls teardown itself): a warm backend parks the run's model
    for the next file of its image now; without warm mode the run keeps it."""
    warm = LocalBackend(tmp_path, launch_timeout=5, warm_idle=30, warm_max=2)
    cold = LocalBackend(tmp_path / "cold", launch_timeout=5)
    try:
        a, c = job("sf-0000000000000000000a"), job("sf-0000000000000000000c")
        pid = cold.launch(c, spec("ok")).handle["pid"]
        assert cold.release(c) is False
        assert cold.is_alive(c) and cold.endpoint(c)  # still the run's: teardown stops it
        assert cold.teardown(c) and gone(pid)
        pid = warm.launch(a, spec("ok")).handle["pid"]
        assert warm.release(a) is True
        assert warm.endpoint(a) is None and warm.has_parked(spec("ok")) and not gone(pid)
        assert warm.teardown(a) is False  # nothing left for teardown
        b = job("sf-0000000000000000000b")
        again = warm.launch(b, spec("ok"))
        assert again.warm and again.handle["pid"] == pid
    finally:
        warm.stop_all()
        cold.stop_all()


def test_the_backend_is_split_along_its_concerns():
    """Issue 23: LocalBackend was one 443-line class in a 528-line module; its warm pool,
    capacity, state directory and reaper are modules of their own, none over 500 lines."""
    package = REPO / "workers" / "backends" / "local"
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert {"warm.py", "capacity.py", "runs.py", "reaper.py"} <= sizes.keys()
    assert max(sizes.values()) <= 500, sizes


# ------------------------------------------ the models' own AWS access (issue 25)
MODEL_AWS = {
    "endpoint_url": "http://127.0.0.1:4566",
    "region": "eu-west-1",
    "access_key_id": "model-key",
    "secret_access_key": "model-secret",
}
#: a model that writes its environment to a file, then serves as the fake model
ENV_DUMP = (
    "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); "
    f"os.execv(sys.executable, [sys.executable, {str(FAKEMODEL)!r}, '--port', sys.argv[2]])"
)


def env_spec(out: Path, **extra):
    import shlex

    cmd = f"{{python}} -c {shlex.quote(ENV_DUMP)} {out} {{port}}"
    return ModelSpec(image="test/env", extra={"command": cmd, **extra})


def test_local_aws_hands_the_model_its_own_credentials_and_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "worker-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://worker-endpoint")
    b = LocalBackend(tmp_path / "state", launch_timeout=5, model_aws=MODEL_AWS)
    try:
        out = tmp_path / "env.json"
        b.launch(job(), env_spec(out, local_aws=True))
        env = json.loads(out.read_text())
        assert env["AWS_ACCESS_KEY_ID"] == "model-key"
        assert env["AWS_SECRET_ACCESS_KEY"] == "model-secret"
        assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert "worker-key" not in out.read_text() and "worker-secret" not in out.read_text()
        # an entry that does not say local_aws: no AWS_* at all, as before
        plain = tmp_path / "plain.json"
        b.launch(job("sf-00000000000000000002"), env_spec(plain))
        assert not [k for k in json.loads(plain.read_text()) if k.startswith("AWS_")]
    finally:
        b.stop_all()


def test_local_aws_without_the_variable_fails_the_launch_naming_it(tmp_path):
    b = LocalBackend(tmp_path / "state", launch_timeout=5)
    with pytest.raises(ModelError, match="no SCOREFLEET_LOCAL_MODEL_AWS"):
        b.launch(job(), env_spec(tmp_path / "x.json", local_aws=True))
    assert not (tmp_path / "x.json").exists() and b.runs.replicas(job().run_id) == []


def test_the_models_credential_is_never_the_workers():
    from scorefleet.settings import ConfigError, load
    from tests.unit.test_settings import BASE

    aws = json.dumps({**MODEL_AWS, "access_key_id": "worker-key"})
    with pytest.raises(ConfigError, match="LOCAL_MODEL_AWS: its access_key_id is the worker's"):
        load({**BASE, "AWS_ACCESS_KEY_ID": "worker-key", "SCOREFLEET_LOCAL_MODEL_AWS": aws})
    with pytest.raises(ConfigError, match=r"LOCAL_MODEL_AWS=.*missing: secret_access_key"):
        bad = {k: v for k, v in MODEL_AWS.items() if k != "secret_access_key"}
        load({**BASE, "SCOREFLEET_LOCAL_MODEL_AWS": json.dumps(bad)})
    ok = load({**BASE, "SCOREFLEET_LOCAL_MODEL_AWS": json.dumps(MODEL_AWS)})
    assert ok.local.model_aws == MODEL_AWS


# ------------------------------------------------- a port another process took
class _Stranger:
    """An HTTP server of someone else's that answers every GET with 200."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_port_answered_by_another_process_is_not_the_model(tmp_path, monkeypatch):
    """Two launches were handed one port 0.4 s apart (seen in CI): the second model
    could not bind it, and its launch took the first model's answer for its own, so
    the file's score step met another image's model. An answer counts only from the
    model's own process tree; a model that then dies of the taken port is retried
    (ModelUnavailable), not an .error of its own."""
    from scorefleet.errors import ModelUnavailable
    from workers.backends.local import backend as backend_module

    stranger = _Stranger()
    monkeypatch.setattr(backend_module, "free_port", lambda: stranger.port)
    b = LocalBackend(tmp_path, launch_timeout=5, log_lines=10)
    try:
        j = job()
        with pytest.raises(ModelUnavailable, match="another process was listening on its port"):
            b.launch(j, spec("ok"))  # fakemodel cannot bind the stranger's port: it exits
        assert not b.is_alive(j)
    finally:
        stranger.close()
        b.stop_all()


def test_a_model_that_never_binds_beside_a_stranger_is_stopped_and_retried(tmp_path, monkeypatch):
    """The same, with a model that lives on without its port: at the launch's limit it
    is stopped (so the retry chooses another port) and the launch is retried."""
    from scorefleet.errors import ModelUnavailable
    from workers.backends.local import backend as backend_module

    stranger = _Stranger()
    monkeypatch.setattr(backend_module, "free_port", lambda: stranger.port)
    b = LocalBackend(tmp_path, launch_timeout=1.5, log_lines=10)
    sleeper = ModelSpec(
        image="test/sleeper", extra={"command": "{python} -c 'import time; time.sleep(60)'"}
    )
    try:
        j = job()
        with pytest.raises(ModelUnavailable, match="held by another process"):
            b.launch(j, sleeper)
        assert not b.is_alive(j)
    finally:
        stranger.close()
        b.stop_all()


def test_free_port_never_hands_one_port_to_two_launches(monkeypatch):
    from workers.backends.local import processes

    given = iter([40001, 40001, 40002])
    monkeypatch.setattr(processes, "_any_free_port", lambda: next(given))
    monkeypatch.setattr(processes, "_reserved", {})
    assert processes.free_port() == 40001
    assert processes.free_port() == 40002
