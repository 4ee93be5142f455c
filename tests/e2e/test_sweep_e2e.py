"""End to end on the local stack: notifications lost on their way (the bridge drops a
share of them), the sweep (tasks.sweep on the worker) finds those files, and every
file ends scored exactly once, also those whose notification raced the sweep."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import unquote_plus

import pytest

from scorefleet.celeryconf import make_app
from scorefleet.settings import load
from tests.helpers import Outcomes
from workers.localstack.stack import BUCKET

pytestmark = pytest.mark.slow

FILES = 12


def test_lost_notifications_are_swept_and_every_file_is_scored_once(outcomes: Outcomes, stack):
    base = f"swept-{uuid.uuid4().hex[:8]}"
    keys = [f"{base}/f{i:02d}.csv" for i in range(FILES)]
    bridge = stack.bridge
    before = len(bridge.dropped)
    bridge.drop = 0.5
    try:
        for i, key in enumerate(keys):
            outcomes.put(key, f"a,b\n{i},1\n{i},2\n".encode(), {"model_image": "test/ok:1"})
        # wait until the bridge has seen every notification (handled or lost)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lost = [b for b in bridge.dropped[before:] if base in b]
            notified = sum(1 for k in keys if _record(outcomes, k) is not None)
            if len(lost) + notified >= FILES:
                break
            time.sleep(0.2)
    finally:
        bridge.drop = 0.0
    lost_keys = {_key_of(b).removeprefix("in/") for b in lost}
    assert 0 < len(lost_keys) < FILES, "the bridge should lose some notifications, not all"
    # the sweep runs at once (grace 0), racing the chains of the notified files
    app = make_app(load(stack.env))
    app.send_task("tasks.sweep", kwargs={"prefix": f"s3://{BUCKET}/in/{base}/", "grace_seconds": 0})
    for key in keys:
        suffix, _, _ = outcomes.wait(key, timeout=90)
        assert suffix == ".scoreout", key
    time.sleep(3)  # let duplicate chains run their course
    log = (stack.state_dir / "logs" / "worker0.log").read_text()
    for key in keys:
        assert outcomes.versions(f"{key}.scoreout") == 1, key
        assert log.count(f"published s3://{BUCKET}/out/{key}.scoreout") == 1, key
    for key in lost_keys:
        assert f"sweep: s3://{BUCKET}/in/{key} had no outcome and no run: queued" in log


def _key_of(body: str) -> str:
    return unquote_plus(json.loads(body)["Records"][0]["s3"]["object"]["key"])


def _record(outcomes: Outcomes, key: str):
    from scorefleet.storage.ledger import Ledger
    from tests.integration.test_sweep import pid_of

    settings = load(outcomes.stack.env)
    return Ledger(settings, outcomes.s3).get(pid_of(outcomes.s3, BUCKET, f"in/{key}"))
