"""Issue 25: model replicas -- how many a file gets (workers/backends/replicas.py),
starting them together, and one model's interface over several
(workers/scoring/replicaset.py). The backends and the steps with real processes:
tests/integration/test_replicas.py; pods: tests/integration/test_kubernetes_backend.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from scorefleet.errors import AtCapacity, BadInput, ModelError, ModelUnavailable, RowsRefused
from scorefleet.settings import ModelSpec
from tests.helpers import make_job
from workers.backends import replicas
from workers.backends.base import Endpoint
from workers.scoring.batches import Batch, Scores
from workers.scoring.replicaset import ReplicaSet, with_replica_logs

MB = 1024 * 1024


def spec(**extra: Any) -> ModelSpec:
    return ModelSpec(image="test/x:1", extra=extra)


def job(size: int | None = 100 * MB, **tags: str) -> Any:
    return make_job(size=size, data_tags=tags)


# ------------------------------------------------------------------- the plan
def test_a_file_gets_what_the_catalog_allows_and_a_tag_may_ask_for_fewer():
    assert replicas.plan(spec(), job()).count == 1  # the default: one model, as before
    assert replicas.plan(spec(replicas=4), job()).count == 4
    assert replicas.plan(spec(replicas=4), job(replicas="2")).count == 2
    # never more than the catalog allows: capped, and the plan says why
    capped = replicas.plan(spec(replicas=4), job(replicas="9"))
    assert (capped.count, capped.asked, capped.allowed) == (4, 9, 4)
    assert capped.describe() == "4 replicas (catalog allows 4; tag asked 9)"


def test_a_small_file_still_gets_one():
    four = spec(replicas=4)  # min_mb_per_replica 1 by default
    assert replicas.plan(four, job(size=1000)).count == 1
    assert replicas.plan(four, job(size=2 * MB + 5)).count == 2
    assert replicas.plan(four, job(size=None)).count == 4  # size unknown: what is allowed
    assert replicas.plan(spec(replicas=4, min_mb_per_replica=0), job(size=10)).count == 4
    assert replicas.plan(spec(replicas=8, min_mb_per_replica=0.25), job(size=MB)).count == 4


@pytest.mark.parametrize("tag", ["0", "-1", "two", "1.5", "65", " "])
def test_a_bad_replicas_tag_is_refused_naming_the_tag(tag):
    with pytest.raises(BadInput, match="replicas tag"):
        replicas.plan(spec(replicas=4), job(replicas=tag))


def test_the_replicas_tag_travels_with_the_job():
    from scorefleet.s3uri import S3Uri
    from scorefleet.settings import load
    from scorefleet.submission import USED_TAGS, build_job

    settings = load(
        {
            "SCOREFLEET_INPUT_URI": "s3://bkt/in/",
            "SCOREFLEET_OUTPUT_URI": "s3://bkt/out/",
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        }
    )
    j = build_job(
        settings, S3Uri("bkt", "in/x.csv"), {"replicas": "3"}, version_id="v", etag="e", size=1
    )
    assert j.data_tags == {"replicas": "3"} and "replicas" in USED_TAGS


# ---------------------------------------------------------------- starting
def test_replicas_start_together():
    gate = threading.Barrier(3, timeout=5)

    def launch(i: int) -> str:
        gate.wait()  # all three are starting at the same time, or this times out
        return f"ep{i}"

    assert replicas.start(launch, [0, 1, 2], image="i") == [(0, "ep0"), (1, "ep1"), (2, "ep2")]


def test_a_replica_that_fails_to_start_fails_the_launch_naming_it_with_its_logs():
    def launch(i: int) -> str:
        if i == 2:
            raise ModelError("the model exited with code 3", model_logs=f"log of replica {i}")
        return f"ep{i}"

    with pytest.raises(ModelError, match=r"^replica 2 \(of 3\): the model exited") as err:
        replicas.start(launch, [0, 1, 2], image="i")
    assert err.value.model_logs == "log of replica 2"


def test_a_replica_without_room_is_dropped_and_none_with_room_waits():
    class Unschedulable(ModelUnavailable):
        no_room = True

    def launch(i: int) -> str:
        if i == 1:
            raise AtCapacity("quota")
        if i == 3:
            raise Unschedulable("no node")
        return f"ep{i}"

    assert replicas.start(launch, [0, 1, 2, 3], image="i") == [(0, "ep0"), (2, "ep2")]

    def full(i: int) -> str:
        raise AtCapacity(f"quota {i}")

    with pytest.raises(AtCapacity, match="quota 0"):
        replicas.start(full, [0, 1], image="i")


def test_the_jobs_handle_keeps_each_replicas_own():
    started = [
        (0, Endpoint("http://a", {"pod": "p0"})),
        (2, Endpoint("http://c", {"pod": "p2", "replica": 2})),
    ]
    handle = replicas.merged_handle(started)
    assert handle == {"pod": "p0", "replicas": {"2": {"pod": "p2", "replica": 2}}}
    assert replicas.handle_of(handle, 0) == {"pod": "p0", "replicas": handle["replicas"]}
    assert replicas.handle_of(handle, 2) == {"pod": "p2", "replica": 2}
    assert replicas.handle_of(handle, 1) == {}
    assert replicas.handle_of({"replicas": "junk"}, 1) == {}


# ------------------------------------------------------------- the set
def batch(first: int = 1, rows: int = 2) -> Batch:
    return Batch(first, rows, f"data rows {first}-{first + rows - 1}", ("a",), csv=b"1\n" * rows)


class Fake:
    """A protocol client that answers after ``delay`` (or raises ``fail``)."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None, bound: int = 4):
        self.delay, self.fail, self.bound = delay, fail, bound
        self.calls = 0
        self.closed = False

    @property
    def max_in_flight(self) -> int:
        return self.bound

    def score(self, b: Batch) -> Scores:
        self.calls += 1
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return Scores(rows=b.rows, csv=b"x\n" * b.rows)

    def ready(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def test_the_set_is_one_model_with_each_replicas_bound():
    members = [Fake(), Fake(bound=2), Fake()]
    rs = ReplicaSet(list(enumerate(members)))  # type: ignore[arg-type]
    assert rs.max_in_flight == 10 and rs.replicas == [0, 1, 2]
    assert rs.score(batch()).rows == 2
    rs.close()
    assert all(m.closed for m in members)


def test_mini_batches_go_to_the_least_busy_replica():
    slow, fast = Fake(delay=0.3), Fake(delay=0.01)
    rs = ReplicaSet([(0, slow), (1, fast)])  # type: ignore[list-item]
    threads = [threading.Thread(target=rs.score, args=(batch(),)) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.02)  # the first is in flight when the second is sent
    for t in threads:
        t.join()
    assert (slow.calls, fast.calls) == (1, 1)  # not both to the first in turn
    # one at a time: each goes to an idle replica, in turn
    for _ in range(4):
        rs.score(batch())
    assert (slow.calls, fast.calls) == (3, 3)


def test_a_replica_that_stays_unavailable_is_taken_out_and_its_batch_goes_to_another():
    dead, live = Fake(fail=ModelUnavailable("connection refused")), Fake()
    rs = ReplicaSet([(0, dead), (1, live)])  # type: ignore[list-item]
    for _ in range(3):
        assert rs.score(batch()).rows == 2
    assert dead.calls == 1 and live.calls == 3 and rs.failovers == 1


def test_the_last_replicas_failure_is_the_steps_naming_the_replica():
    a = Fake(fail=ModelUnavailable("refused a"))
    b = Fake(fail=ModelUnavailable("refused b"))
    rs = ReplicaSet([(3, a), (5, b)])  # type: ignore[list-item]
    with pytest.raises(ModelUnavailable) as err:
        rs.score(batch())
    assert err.value.replica in (3, 5)  # type: ignore[attr-defined]
    assert a.calls == 1 and b.calls == 1


def test_a_model_error_is_not_sent_elsewhere_and_names_its_replica():
    bad, other = Fake(fail=RowsRefused("HTTP 400 for data rows 1-2")), Fake()
    rs = ReplicaSet([(0, bad), (1, other)])  # type: ignore[list-item]
    with pytest.raises(RowsRefused) as err:
        for _ in range(2):  # the first may go to either
            rs.score(batch())
    assert err.value.replica == 0  # type: ignore[attr-defined]
    asked: list[tuple[int, int]] = []

    def logs(replica: int, lines: int) -> str:
        asked.append((replica, lines))
        return "Traceback: bad value"

    with_replica_logs(err.value, logs, 7)
    assert asked == [(0, 7)]
    assert err.value.model_logs == "(model replica 0)\nTraceback: bad value"
    with_replica_logs(err.value, logs, 7)  # logs already there: not read again
    assert len(asked) == 1


def test_flower_shows_how_many_replicas_score_a_file():
    """The steps' short kwargs (Flower's task list): the replicas, once the launch
    started several; nothing new for a file of one model."""
    from scorefleet.chain import describe_step

    one = make_job().to_dict()
    assert "model_replicas" not in describe_step("tasks.score", one)["kwargsrepr"]
    three = {**one, "model_replicas": [0, 1, 2]}
    assert "'model_replicas': '3'" in describe_step("tasks.score", three)["kwargsrepr"]
