"""The local stack's catalog entries for the protocol end-to-end tests: the example
catalog (examples/catalog.json: one iris server per protocol, run from the checkout),
and misbehaving servers of every protocol (tests/helpers/protocol_servers.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers.servers.venvs import REPO

FAKE = REPO / "tests" / "helpers" / "protocol_servers.py"
EXAMPLE_CATALOG = REPO / "examples" / "catalog.json"

#: the fake server's options per protocol (as in tests/test_protocol_contract.py)
FAKE_OPTIONS: dict[str, dict[str, Any]] = {
    "sagemaker": {"response_header": True},
    "v2": {"protocol": "v2", "v2": {"model_name": "fake", "datatype": "BYTES"}},
    "json": {"protocol": "json", "json": {"path": "/predict", "ready_path": "/health"}},
    "lambda": {"protocol": "lambda", "lambda": {"response": "prediction"}},
    "sas-executions": {"protocol": "sas-executions", "sas": {"columns": ["P_score", "fields"]}},
}


def fake(protocol: str, mode: str) -> dict[str, Any]:
    return {
        "command": f"{{python}} {FAKE} --port {{port}} --mode {mode}",
        **FAKE_OPTIONS[protocol],
    }


def example_catalog() -> dict[str, Any]:
    """examples/catalog.json, its commands run from the checkout's root."""
    entries = json.loads(EXAMPLE_CATALOG.read_text())
    return {image: {**entry, "cwd": str(REPO)} for image, entry in entries.items()}


def protocol_catalog() -> dict[str, Any]:
    catalog = example_catalog()
    for protocol in FAKE_OPTIONS:
        catalog[f"test/die-{protocol}:1"] = fake(protocol, "die")
        catalog[f"test/refuse-{protocol}:1"] = fake(protocol, "refuse")
    return catalog
