"""The steps' shape (issue 13): pure policies, typed states that still read the JSON
of messages queued by older workers, and dependencies passed in (the worker's
runtime), never looked up by a step body."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path
from typing import Any

import pytest

from scorefleet.job import Job, SkipReason, pipeline_id
from scorefleet.settings import load
from scorefleet.storage.ledger import FINISHED_STATES, Claim, RunState
from tasks.policies import compute_backoff, lease_wait, wait_delay
from tests.helpers import REPO, make_job
from workers import runtime
from workers.runtime import WorkerRuntime


# ------------------------------------------------------------------- policies
def test_compute_backoff_is_exponential_with_jitter_and_capped():
    rng = random.Random(7)
    for retries in range(12):
        ceiling = min(300, 2 * 2**retries)
        for _ in range(50):
            delay = compute_backoff(retries, 2, 300, rng)
            assert max(1, round(ceiling / 2)) <= delay <= max(1, round(ceiling))
    assert compute_backoff(0, 0, 300, rng) == 1  # never under a second (SQS DelaySeconds)


def test_compute_backoff_reads_nothing_but_its_arguments():
    """Same arguments, same seed: same delays (no settings, no global random state)."""
    first = [compute_backoff(r, 1.5, 60, random.Random(3)) for r in range(8)]
    random.seed(99)  # the global generator plays no part
    assert [compute_backoff(r, 1.5, 60, random.Random(3)) for r in range(8)] == first


def test_wait_policies():
    rng = random.Random(1)
    assert wait_delay(30, rng) == 30
    assert all(2 <= wait_delay(None, rng) <= 6 for _ in range(50))
    assert all(41 <= lease_wait(40.5, rng) <= 43 for _ in range(50))
    assert lease_wait(5000, rng) == 900  # SQS delays at most 15 minutes


# ------------------------------------------------------------- typed states
def test_skip_reasons_cover_the_claims_that_skip():
    skipping = [c for c in Claim if c not in (Claim.CLAIMED, Claim.HELD)]
    assert all(SkipReason(c.value) for c in skipping)


def test_run_states_are_the_strings_of_the_records():
    assert {s.value for s in FINISHED_STATES} == {"published", "failed", "superseded"}
    assert json.dumps({"state": RunState.RUNNING}) == '{"state": "running"}'


#: A job as a worker before issue 13 sent it (the score step's result, warm mode).
OLD_MESSAGE = {
    **make_job().to_dict(),
    "handle": {"pid": 4242, "released": True},
    "skipped": "superseded",
}
OLD_MESSAGE.pop("released")


def test_a_message_queued_before_the_upgrade_reads_the_same():
    job = Job.from_dict(json.loads(json.dumps(OLD_MESSAGE)))
    assert job.model.released is True and job.model.handle == {"pid": 4242}
    assert job.skipped is SkipReason.SUPERSEDED
    # and what the new worker sends is plain JSON again, read back the same
    again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job
    assert json.loads(json.dumps(job.to_dict()))["skipped"] == "superseded"


def test_an_unknown_skip_reason_is_refused():
    with pytest.raises(ValueError, match="not a valid SkipReason"):
        Job.from_dict({**OLD_MESSAGE, "skipped": "because"})


class FakeBackend:
    def __init__(self) -> None:
        self.torn_down: list[str] = []

    def teardown(self, job: Job) -> bool:
        self.torn_down.append(job.run_id)
        return True


@pytest.fixture
def fake_runtime() -> Any:
    settings = load(
        {
            "SCOREFLEET_INPUT_URI": "s3://bkt/in/",
            "SCOREFLEET_OUTPUT_URI": "s3://bkt/out/",
            "SCOREFLEET_ALLOWED_IMAGE_PREFIXES": "test/",
        }
    )
    backend = FakeBackend()
    runtime.reset()
    runtime._process.append(WorkerRuntime(settings, None, None, _backend=backend))  # type: ignore[arg-type]
    yield backend
    runtime.reset()


@pytest.mark.parametrize("released", [True, False])
def test_teardown_of_an_old_message_honours_its_released_flag(fake_runtime, released):
    from tasks.teardown import teardown

    pid = pipeline_id("bkt", "in/a.csv", None, "e")
    old = {**make_job(pid, bucket="bkt").to_dict(), "handle": {"pid": 1, "released": released}}
    old.pop("released")
    result = teardown.apply(args=[json.loads(json.dumps(old))])
    assert result.successful(), result.traceback
    assert fake_runtime.torn_down == ([] if released else [pid])


# ------------------------------------------------------- explicit dependencies
STEP_MODULES = ("launch", "score", "upload", "teardown")


@pytest.mark.parametrize("name", STEP_MODULES)
def test_step_bodies_get_their_dependencies_passed_in(name):
    """Only tasks/base.py (run_step) asks for the process's runtime; a step module
    never names the runtime module, so its body can only use what it is given."""
    tree = ast.parse((REPO / "tasks" / f"{name}.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    imported = {
        alias.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "workers"
        for alias in n.names
    }
    assert "runtime" not in names and "runtime" not in imported


def test_one_module_per_step_and_concern():
    modules = sorted(p.stem for p in (REPO / "tasks").glob("*.py"))
    assert modules == sorted(
        ["__init__", "base", "inputs", "policies", "operations", "sweep", *STEP_MODULES]
    )
    assert all(len(p.read_text().splitlines()) < 500 for p in Path(REPO / "tasks").glob("*.py"))


def _compared_strings(path: Path) -> set[str]:
    """The string constants ``path`` compares anything with (==, !=, in, not in)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                elts = side.elts if isinstance(side, ast.Set | ast.Tuple | ast.List) else [side]
                found |= {e.value for e in elts if isinstance(e, ast.Constant)}
    return found


def test_no_step_is_told_apart_by_its_name():
    """Issue 23: what sets a step apart in the machinery every step shares (run_step,
    the heartbeat) is what the step declares (tasks.base.Step), never its name."""
    from scorefleet.job import STEPS
    from tasks.launch import LAUNCH
    from tasks.score import SCORE
    from tasks.teardown import TEARDOWN
    from tasks.upload import UPLOAD

    for path in (REPO / "tasks" / "base.py", REPO / "workers" / "process" / "heartbeat.py"):
        assert not _compared_strings(path) & set(STEPS), path
    declared = (LAUNCH, SCORE, UPLOAD, TEARDOWN)
    assert [s.name for s in declared] == list(STEPS)
    assert [s.name for s in declared if s.claims] == ["launch"]
    assert [s.name for s in declared if s.lease] == ["launch", "score"]
    # (issue 26: the score step counts its waits as hand-overs)
    assert [s.name for s in declared if s.on_wait] == ["launch", "score"]
