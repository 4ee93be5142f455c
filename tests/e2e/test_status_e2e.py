"""``scorefleet status`` on the local stack: a long file is seen scoring with its rows
so far, then published with its rows and bytes; the CLI prints the same."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from scorefleet.settings import load
from tests.helpers import Outcomes, run_cli
from workers.cli.runs import status_view
from workers.localstack.stack import BUCKET

pytestmark = pytest.mark.slow

ROWS = 200_000  # about 2.5 MB: ~50 mini-batches of 0.05 MB, each 0.5 s in the slow model


def test_status_follows_a_long_file(outcomes: Outcomes, stack):
    key = f"status-{uuid.uuid4().hex[:8]}.csv"
    body = ("a,b\n" + "".join(f"{i},{i % 9}\n" for i in range(ROWS))).encode()
    outcomes.put(key, body, {"model_image": "test/slow:1"})
    uri = f"s3://{BUCKET}/in/{key}"
    settings = load(stack.env)
    s3 = outcomes.s3
    seen: list[tuple[str, int | None]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            v = status_view(settings, s3, uri)
        except Exception:  # not uploaded as far as S3 is concerned yet
            time.sleep(0.2)
            continue
        seen.append((v.state, v.rows))
        if v.state in {"published", "failed"}:
            break
        time.sleep(0.5)
    states = [s for s, _ in seen]
    assert states[-1] == "published", seen
    scoring = [rows for s, rows in seen if s == "scoring" and rows]
    assert scoring and 0 < scoring[0] < ROWS, seen  # rows so far, before the end
    final = status_view(settings, s3, uri)
    assert final.rows == ROWS and final.bytes_read == len(body) == final.total_bytes
    assert final.attempts == 1 and final.outcome == f"s3://{BUCKET}/out/{key}.scoreout"
    assert final.queued_at <= final.started_at <= final.finished_at
    res = run_cli(["workers.cli", "status", uri, "--json"], {**os.environ, **stack.env})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["state"] == "published"
    res = run_cli(["workers.cli", "runs", "--since", "10m"], {**os.environ, **stack.env})
    assert res.returncode == 0 and key in res.stdout, res.stdout + res.stderr
