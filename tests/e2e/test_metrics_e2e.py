"""The workers' Prometheus metrics on the local stack: scrape worker0 before and after
two files (one scored, one whose model crashes at start) and check the counts."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Outcomes

pytestmark = pytest.mark.slow

ROWS = 300


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def quiet(url: str, seconds: float = 3.0, timeout: float = 60) -> dict:
    """A scrape once nothing has changed for ``seconds`` (earlier tests' files done)."""
    deadline = time.monotonic() + timeout
    last = scrape(url)
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = scrape(url)
        moving = {k for k, v in now.items() if "step_duration" in k[0] and last.get(k) != v}
        if not moving:
            return now
        last = now
    raise AssertionError("the worker never went quiet")


def value(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scrape_after_two_files_counts_them(outcomes: Outcomes, stack):
    url = stack.urls["metrics0"]
    before = quiet(url)
    tag = uuid.uuid4().hex[:8]
    ok, crash = f"metrics-{tag}/ok.csv", f"metrics-{tag}/crash.csv"
    body = ("a,b\n" + "".join(f"{i},1\n" for i in range(ROWS))).encode()
    outcomes.put(ok, body, {"model_image": "test/ok:1"})
    outcomes.put(crash, body, {"model_image": "test/crash:1"})
    assert outcomes.wait(ok)[0] == ".scoreout"
    assert outcomes.wait(crash)[0] == ".error"
    after = quiet(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("scorefleet_files_started_total") == 2
    assert delta("scorefleet_files_published_total") == 1
    failed = {
        k: v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0] == "scorefleet_files_failed_total" and v != before.get(k, 0.0)
    }
    assert list(failed.values()) == [1.0], failed
    ((_, labels),) = failed
    assert dict(labels)["step"] == "launch", labels
    assert delta("scorefleet_rows_scored_total") == ROWS
    assert delta("scorefleet_model_start_seconds_count") == 1  # the crash never got ready
    assert delta("scorefleet_minibatch_seconds_count") >= 1
    assert delta("scorefleet_step_duration_seconds_count", step="score", result="done") == 1
    assert delta("scorefleet_step_duration_seconds_count", step="upload", result="done") == 2
    assert delta("scorefleet_queue_wait_seconds_count", step="launch") >= 2
    assert value(after, "scorefleet_rows_rejected_total") == value(
        before, "scorefleet_rows_rejected_total"
    )
