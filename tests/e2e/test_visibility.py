"""Steps longer than the SQS visibility timeout, and retries that wait longer than
it, are not delivered to a second worker (issue 6)."""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers import FAKEMODEL, Outcomes
from workers.localstack.stack import LocalStack

pytestmark = pytest.mark.slow

VISIBILITY = 5


@pytest.fixture(scope="module")
def short_vt_stack(tmp_path_factory):
    catalog = {
        "test/slow:1": {"command": f"{{python}} {FAKEMODEL} --port {{port}} --mode slow --delay 2"},
        "test/flaky-task:1": {
            "command": f"{{python}} {FAKEMODEL} --port {{port}} --mode fail-n --fails 3"
        },
    }
    st = LocalStack(
        tmp_path_factory.mktemp("vt"),
        workers=2,
        concurrency=2,
        flower=False,
        beat=False,
        catalog=catalog,
        extra_env={
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
            "SCOREFLEET_VISIBILITY_TIMEOUT": str(VISIBILITY),
            "SCOREFLEET_MAX_PAYLOAD_MB": "0.01",  # ~10 KB batches: many of them
            "SCOREFLEET_MAX_IN_FLIGHT": "1",
            "SCOREFLEET_RETRY_BACKOFF": "8",  # the retry waits longer than the VT
            "SCOREFLEET_RETRY_BACKOFF_MAX": "8",
        },
    )
    st.start()
    try:
        st.wait_worker_ready()
        yield st
    finally:
        st.stop()


def receptions(stack: LocalStack, step: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for log in (stack.state_dir / "logs").glob("worker*.log"):
        for task_id in re.findall(rf"Task tasks\.{step}\[([^\]]+)\] received", log.read_text()):
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def test_a_step_longer_than_the_visibility_timeout_runs_once(short_vt_stack):
    out = Outcomes(short_vt_stack)
    rows = b"".join(b"%d,%d\n" % (i, i) for i in range(6000))  # ~6 batches x 2 s = ~12 s
    t0 = time.monotonic()
    out.put("slow.csv", b"a,b\n" + rows, {"model_image": "test/slow:1"})
    suffix, body, _ = out.wait("slow.csv", timeout=120)
    took = time.monotonic() - t0
    assert suffix == ".scoreout", body.decode()
    assert took > 2 * VISIBILITY, (
        f"scoring took {took:.1f}s: not longer than the visibility timeout"
    )
    assert list(receptions(short_vt_stack, "score").values()) == [1]
    assert out.versions("slow.csv.scoreout") == 1


def test_a_retry_waiting_longer_than_the_visibility_timeout_is_not_duplicated(short_vt_stack):
    out = Outcomes(short_vt_stack)
    before = receptions(short_vt_stack, "score")
    out.put("flaky.csv", b"a,b\n1,2\n", {"model_image": "test/flaky-task:1"})
    suffix, body, _ = out.wait("flaky.csv", timeout=120)
    assert suffix == ".scoreout", body.decode()
    time.sleep(VISIBILITY + 1)
    new = {k: v for k, v in receptions(short_vt_stack, "score").items() if k not in before}
    assert list(new.values()) == [2]  # the first attempt and its one retry, nothing more
    assert out.versions("flaky.csv.scoreout") == 1
