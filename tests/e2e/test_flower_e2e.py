"""Flower on SQS, end to end: moto's server, the bridge, a real worker and the real
``celery -A workers.app flower`` process (with basic auth), no mocks.

Scores a good file, a failing one and one whose score step is retried, then checks
through Flower's HTTP API (and the celery CLI) what an operator would look at;
restarts Flower and the worker and checks that SQS queues and SNS subscriptions
stay bounded; kills Flower and lets the sweeper clean up; drives the tasks page in
headless Chromium.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import helpers
from tests.helpers import Outcomes
from tests.helpers.monitoring import queues, subscriptions
from workers.localstack.stack import BUCKET, QUEUE, LocalStack, emulator_client
from workers.monitoring import monitor

pytestmark = pytest.mark.slow

USER, PASSWORD = "ops", "flower-e2e-password"
NS = monitor.namespace(QUEUE)
STEPS = ("launch", "score", "upload", "teardown")
FILES = {
    "good.csv": (b"a,b\n1,2\n3,4\n", "test/ok:1"),
    "bad.csv": (b"a,b\n1,2\n", "test/crash:1"),
    "retried.csv": (b"a,b\n1,2\n", "test/flaky-task:1"),
    # refused by the Lambda: no chain runs (issue 28, item 4)
    "refused.csv": (b"a,b\n1,2\n", "evil.example/miner:1"),
}


class Flower:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.stack.flower_port}"

    def get(self, path: str, auth: bool = True, timeout: float = 10) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, headers=self.auth if auth else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def tasks(self) -> dict[str, dict[str, Any]]:
        return self.json("/api/tasks")  # type: ignore[no-any-return]

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        log = (self.stack.state_dir / "logs" / "flower.log").read_text()[-3000:]
        raise AssertionError(f"Flower: {what} not seen in {timeout}s; flower.log tail:\n{log}")


def run_id_of(stack: LocalStack, key: str) -> str:
    """The run id the worker used for in/<key> (tagged on its outcome)."""
    s3 = emulator_client("s3", stack.endpoint)
    for suffix in (".scoreout", ".error"):
        try:
            tags = s3.get_object_tagging(Bucket=BUCKET, Key=f"out/{key}{suffix}")["TagSet"]
        except s3.exceptions.NoSuchKey:
            continue
        return {t["Key"]: t["Value"] for t in tags}["pipeline_id"]
    raise AssertionError(f"no outcome for {key}")


def monitor_counts(stack: LocalStack) -> dict[str, int]:
    names = queues(stack.endpoint, f"{NS}-")
    return {
        "ev": sum(n.startswith(f"{NS}-ev-") for n in names),
        "pidbox": sum(n.startswith(f"{NS}-pidbox-") for n in names),
        "reply": sum(n.startswith(f"{NS}-reply-") for n in names),
        "subscriptions": len(subscriptions(stack.endpoint, f"{NS}-")),
    }


#: A task that only an earlier stack in the same state directory ever saw.
STALE_TASK = "sf-00000000000000000000-launch"


def leave_an_earlier_stacks_flower_state(state_dir: Path) -> None:
    """What Flower saved when an earlier stack stopped in ``state_dir`` (Flower's own
    state class and file format): a task of a file the new emulator never had."""
    import shelve

    from flower.events import EventsState

    state = EventsState(max_tasks_in_memory=100)
    then = time.time() - 3600
    state.event(
        {
            "type": "task-received",
            "uuid": STALE_TASK,
            "name": "tasks.launch",
            "args": f"s3://{BUCKET}/in/earlier-run.csv",
            "kwargs": "{}",
            "hostname": "local0@earlier",
            "timestamp": then,
            "local_received": then,
            "clock": 1,
        }
    )
    with shelve.open(str(state_dir / "flower-state")) as db:
        db["events"] = state
        db["counter"] = dict(state.counter)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("flower-stack")
    leave_an_earlier_stacks_flower_state(state_dir)
    st = LocalStack(
        state_dir,
        workers=1,
        concurrency=4,
        flower=True,
        catalog=helpers.test_catalog(),
        extra_env={
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "scorefleet-examples/,test/",
            "SCOREFLEET_LAUNCH_TIMEOUT": "4",
            "SCOREFLEET_RETRY_BACKOFF": "1",
            "SCOREFLEET_RETRY_BACKOFF_MAX": "2",
            "SCOREFLEET_RETRY_MAX": "2",
            "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
        },
    )
    st.start()
    try:
        st.wait_worker_ready()
        st.wait_flower_ready()
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def flower(stack: LocalStack) -> Flower:
    return Flower(stack)


@pytest.fixture(scope="module")
def scored(stack: LocalStack, flower: Flower) -> dict[str, str]:
    """Drop the files, wait for their outcomes; {key: run id}."""
    outcomes = Outcomes(stack)
    for key, (body, image) in FILES.items():
        outcomes.put(key, body, {"model_image": image})
    for key in FILES:
        outcomes.wait(key, timeout=90)
    return {key: run_id_of(stack, key) for key in FILES}


def expected_states(run_ids: dict[str, str]) -> dict[str, str]:
    good, bad, retried = run_ids["good.csv"], run_ids["bad.csv"], run_ids["retried.csv"]
    states = {f"{good}-{s}": "SUCCESS" for s in STEPS}
    states |= {f"{retried}-{s}": "SUCCESS" for s in STEPS}
    # the model crashes at launch: no score; the failure tail publishes the .error
    states |= {f"{bad}-launch": "FAILURE", f"{bad}-upload": "SUCCESS", f"{bad}-teardown": "SUCCESS"}
    return states


def chain_states_seen(flower: Flower, run_ids: dict[str, str]) -> Callable[[], Any]:
    want = expected_states(run_ids)

    def check() -> dict[str, dict[str, Any]] | None:
        tasks = flower.tasks()
        got = {tid: tasks.get(tid, {}).get("state") for tid in want}
        return tasks if got == want else None

    return check


# ------------------------------------------------------------------- the API
def test_worker_is_listed_online_with_its_pool(stack, flower):
    def with_stats() -> dict[str, Any] | None:
        # a worker Flower knows of from events alone has no "stats" until an inspect
        # reply arrives (under load, after the first refresh: seen once in make test)
        listed = flower.json("/api/workers?refresh=1")
        ours = [v for n, v in (listed or {}).items() if n.startswith("local0@")]
        return listed if ours and all("stats" in v for v in ours) else None

    workers = flower.wait("the worker's stats", with_stats, timeout=30)
    (name,) = [n for n in workers if n.startswith("local0@")]
    assert workers[name]["stats"]["pool"]["max-concurrency"] == stack.concurrency

    def heartbeating() -> dict[str, Any] | None:
        # the list Flower builds from events may still be empty: a worker-online sent
        # before Flower's event queue was subscribed is missed, the next heartbeat counts
        data = json.loads(flower.get("/workers?json=1")[1])["data"]
        info = next((w for w in data if w["hostname"] == name), None)
        return info if info and info["heartbeats"] and info["freq"] == 10.0 else None

    info = flower.wait("a heartbeat", heartbeating, timeout=30)
    assert info["hostname"] == name and info["status"] is True


def test_every_step_of_every_file_with_its_state(stack, flower, scored):
    tasks = flower.wait("all chain steps", chain_states_seen(flower, scored))
    good, bad, retried = scored["good.csv"], scored["bad.csv"], scored["retried.csv"]
    for run, key in ((good, "good.csv"), (bad, "bad.csv"), (retried, "retried.csv")):
        for step in STEPS:
            task = tasks.get(f"{run}-{step}")
            if task is None:
                continue
            # one line per step per file, named by step, showing the file
            assert task["name"] == f"tasks.{step}"
            assert task["args"] == f"s3://{BUCKET}/in/{key}"
            assert f"'run_id': '{run}'" in task["kwargs"]
            assert task["worker"].startswith("local0@")
            assert task["received"] and task["started"]
    assert f"{bad}-score" not in tasks
    assert "exited with code 3" in tasks[f"{bad}-launch"]["exception"]
    assert tasks[f"{good}-teardown"]["runtime"] > 0
    assert "'published': 's3://" in tasks[f"{good}-upload"]["result"] or tasks[f"{good}-upload"][
        "result"
    ].startswith("{'pipeline_id'")
    # retried through SQS, still one line, still showing the file
    assert tasks[f"{retried}-score"]["retries"] >= 1
    # operators search by file name
    found = flower.json("/api/tasks?search=bad.csv")
    assert set(found) == {f"{bad}-launch", f"{bad}-upload", f"{bad}-teardown"}
    found = flower.json("/api/tasks?search=kwargs:model_image=test/ok:1")
    assert set(found) == {f"{good}-{s}" for s in STEPS}


def test_a_file_refused_by_the_lambda_has_its_failed_line(stack, flower, scored):
    """Issue 28, item 4: a file refused up front (an image not allowed) was in
    `scorefleet status` only; Flower had nothing for it."""
    run = scored["refused.csv"]
    task = flower.wait(
        "the refusal's line",
        lambda: (t := flower.tasks().get(f"{run}-refused")) and t.get("state") == "FAILURE" and t,
    )
    assert task["name"] == "tasks.refused"
    assert task["args"] == f"s3://{BUCKET}/in/refused.csv"
    assert "evil.example/miner:1" in task["exception"] and "not allowed" in task["exception"]
    assert not any(f"{run}-{step}" in flower.tasks() for step in STEPS)
    assert set(flower.json("/api/tasks?search=refused.csv")) == {f"{run}-refused"}


def test_a_new_stack_starts_flower_with_fresh_state(stack, flower, scored):
    """Issue 12, item 12: the tasks an earlier stack's Flower saved in this state
    directory are gone with that stack's emulator; a new stack shows only its own."""
    flower.wait("all chain steps", chain_states_seen(flower, scored))
    tasks = flower.tasks()
    assert STALE_TASK not in tasks
    assert not any("earlier-run.csv" in str(t.get("args")) for t in tasks.values())


def test_the_broker_tab_shows_the_sqs_queues_and_their_depths(stack, flower):
    """Issue 12, item 12: Flower's Broker tab on SQS lists the task queues and the
    dead-letter queue with their depths (it said "'sqs' broker is not supported")."""
    sqs = emulator_client("sqs", stack.endpoint)
    dlq_url = sqs.get_queue_url(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody="a dead letter for the depth to show")
    status, page = flower.get("/broker")
    text = page.decode()
    assert status == 200 and "not supported" not in text, text[:2000]
    api = flower.json("/api/queues/length")["active_queues"]
    by_name = {q["name"]: q for q in api}
    assert {QUEUE, f"{QUEUE}-steps", f"{QUEUE}-dlq"} <= set(by_name), api
    assert by_name[f"{QUEUE}-dlq"]["messages"] >= 1
    assert by_name[f"{QUEUE}-dlq"]["messages_ready"] >= 1
    for name in (QUEUE, f"{QUEUE}-steps", f"{QUEUE}-dlq"):
        assert f"<td>{name}</td>" in text


def test_authentication_and_metrics(stack, flower, scored):
    assert flower.get("/api/workers", auth=False)[0] == 401
    assert flower.get("/tasks", auth=False)[0] == 401
    assert flower.get("/tasks")[0] == 200
    status, body = flower.get("/metrics", auth=False)
    assert status == 200
    text = body.decode()
    assert 'flower_events_total{task="tasks.launch",type="task-failed"' in text
    assert "flower_worker_online" in text
    assert flower.get("/healthcheck", auth=False) == (200, b"OK")


def test_celery_inspect_and_events_from_the_command_line(stack, flower):
    env = {**os.environ, **stack.env}
    for command, needle in (("ping", "pong"), ("active", "local0@"), ("stats", "max-concurrency")):
        proc = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "workers.app", "inspect", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0 and needle in proc.stdout, (command, proc.stdout, proc.stderr)
    dump = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "events", "--dump"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(25)  # two heartbeats (every 10 s)
    finally:
        dump.send_signal(signal.SIGTERM)
        out, _ = dump.communicate(timeout=30)
    assert "heartbeat" in out and "local0@" in out, out[-2000:]
    # both sessions removed their queues on the way out
    counts = monitor_counts(stack)
    assert counts["ev"] == 1, counts  # Flower's


# ---------------------------------------------------------------- the browser
def chromium_or_skip() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = (
        "Debian's chromium and chromium-driver are not installed "
        "(apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason + ": .ci/run installs them, so CI must have them")
    pytest.skip(reason)


def test_tasks_page_in_headless_chromium(stack, flower, scored, tmp_path):
    chromium, driver_path = chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    flower.wait("all chain steps", chain_states_seen(flower, scored))
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1600,1000",
    ):
        opts.add_argument(arg)
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(options=opts, service=service)
    try:
        browser.set_page_load_timeout(30)
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": flower.auth})
        browser.get(flower.base + "/tasks")
        wait = WebDriverWait(browser, 30)

        def rows(b: Any) -> list[str]:
            return list(
                b.execute_script(
                    "return Array.from(document.querySelectorAll('#tasks-table tbody tr'))"
                    ".map(r => r.innerText)"
                )
            )

        try:
            wait.until(lambda b: sum(BUCKET in r for r in rows(b)) >= 11)
        except Exception:
            browser.save_screenshot(str(tmp_path / "failed.png"))
            logs = browser.get_log("browser")
            raise AssertionError(
                f"rows: {rows(browser)}\nconsole: {logs}\nscreenshot: {tmp_path / 'failed.png'}"
            ) from None
        text = "\n".join(rows(browser))
        for key in FILES:
            assert f"s3://{BUCKET}/in/{key}" in text
        for state in ("SUCCESS", "FAILURE"):
            assert state in text
        shot = tmp_path / "flower-tasks.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if target := os.environ.get("SCOREFLEET_DOCS_SCREENSHOT"):
            shutil.copyfile(shot, target)
        assert "earlier-run.csv" not in text  # a new stack: no tasks of an earlier one
        # search by file name, as an operator would
        browser.find_element(By.CSS_SELECTOR, "input[type=search]").send_keys("bad.csv")
        wait.until(lambda b: len(rows(b)) == 3 and all("in/bad.csv" in r for r in rows(b)))
        # the Broker tab, from the navigation: the SQS queues with their depths
        browser.find_element(By.LINK_TEXT, "Broker").click()
        wait.until(lambda b: b.execute_script("return document.querySelector('#queue-table')"))
        queue_rows = browser.execute_script(
            "return Array.from(document.querySelectorAll('#queue-table tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
        )
        by_name = {r[0]: r for r in queue_rows}
        assert {QUEUE, f"{QUEUE}-steps", f"{QUEUE}-dlq"} <= set(by_name), queue_rows
        for name in (QUEUE, f"{QUEUE}-steps", f"{QUEUE}-dlq"):
            messages, unacked, ready = by_name[name][1:4]
            assert messages.isdigit() and unacked.isdigit() and ready.isdigit(), by_name[name]
        assert "not supported" not in browser.page_source
        browser.save_screenshot(str(tmp_path / "flower-broker.png"))
    finally:
        browser.quit()
    assert Path(tmp_path / "chromedriver.log").exists()


# ------------------------------------------------------------- restarts, leaks
def test_a_killed_flower_is_swept(stack, flower):
    (proc,) = [p for p in stack.procs if p.name == "flower"]
    flower.json("/api/workers?refresh=1")
    os.kill(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)
    stack.procs.remove(proc)
    # what the killed Flower leaves: its event queue and reply queues (by owner tag)
    sqs = emulator_client("sqs", stack.endpoint)

    def owner(name: str) -> str:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        return str(sqs.list_queue_tags(QueueUrl=url)["Tags"][monitor.TAG_OWNER])

    mine = {n for n in queues(stack.endpoint, f"{NS}-") if owner(n).endswith(f":{proc.popen.pid}")}
    assert any(n.startswith(f"{NS}-ev-") for n in mine), mine
    assert set(subscriptions(stack.endpoint, f"{NS}-")) & mine
    # time passes: nobody refreshes them any more (live owners do)
    for name in mine:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.tag_queue(QueueUrl=url, Tags={monitor.TAG_SEEN: str(int(time.time()) - 3600)})
    call = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "call", "tasks.sweep_monitor_queues"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert call.returncode == 0, call.stderr
    deadline = time.monotonic() + 30
    while set(queues(stack.endpoint, f"{NS}-")) & mine and time.monotonic() < deadline:
        time.sleep(0.25)
    left = set(queues(stack.endpoint, f"{NS}-"))
    assert not left & mine, left & mine
    assert not set(subscriptions(stack.endpoint, f"{NS}-")) & mine
    stack.start_flower()
    stack.wait_flower_ready()
    flower.wait("worker stats", lambda: flower.json("/api/workers?refresh=1"), timeout=30)


def score_and_see(stack: LocalStack, flower: Flower, key: str) -> str:
    """Score in/<key> with the ok model and wait until Flower shows its four steps."""
    outcomes = Outcomes(stack)
    outcomes.put(key, b"a\n1\n", {"model_image": "test/ok:1"})
    outcomes.wait(key, timeout=60)
    run = run_id_of(stack, key)
    flower.wait(f"the steps of {key}", steps_done(flower, run))
    return run


def steps_done(flower: Flower, run: str) -> Callable[[], bool]:
    def check() -> bool:
        tasks = flower.tasks()
        return all(tasks.get(f"{run}-{s}", {}).get("state") == "SUCCESS" for s in STEPS)

    return check


def test_restarting_flower_and_workers_leaves_queues_bounded(stack, flower):
    before_restarts = score_and_see(stack, flower, "before-restarts.csv")
    flower.json("/api/workers?refresh=1")
    before = monitor_counts(stack)
    assert before["ev"] == 1 and before["pidbox"] == 1
    for _ in range(3):
        stack.stop_flower()
        stack.start_flower()
        stack.wait_flower_ready()
        # the previous Flower's state came back, and it still hears the worker
        flower.wait("persisted tasks", steps_done(flower, before_restarts), timeout=30)
        flower.wait("worker stats", lambda: flower.json("/api/workers?refresh=1"), timeout=30)
    # new work after the restarts shows up
    score_and_see(stack, flower, "after-restarts.csv")
    # workers that go away take their control queue with them; the restarted
    # one (same name) is heard again
    for _ in range(2):
        stack.restart_worker(0)
    (worker,) = [p for p in stack.procs if p.name == "worker0"]

    def restarted_worker_answers() -> bool:
        workers = flower.json("/api/workers?refresh=1")
        return any(w.get("stats", {}).get("pid") == worker.popen.pid for w in workers.values())

    flower.wait("the restarted worker's stats", restarted_worker_answers, timeout=30)
    after = monitor_counts(stack)
    assert after["ev"] == 1 and after["pidbox"] == 1, (before, after)
    assert after["reply"] <= max(before["reply"], 8), (before, after)
    assert after["subscriptions"] == after["ev"] + after["pidbox"], after
