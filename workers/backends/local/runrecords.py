"""The local backend's record of each run, ``STATE_DIR/local/<run id>/record.json``
(pid, start time, port, image, protocol): how any worker on the machine finds, tears
down or reuses a model another started (workers/backends/local/backend.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scorefleet.settings import ModelSpec
from workers.scoring.protocols import protocol_for


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((run_dir / "record.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data


def spec_of(rec: dict[str, Any]) -> ModelSpec:
    """What readiness needs of a model's catalog entry, from its run record (its
    protocol's options, as :meth:`~workers.scoring.protocols.ModelProtocol.raw_options`
    gave them)."""
    protocol = str(rec.get("protocol") or "")
    options = dict(rec.get("protocol_options") or {})
    return ModelSpec(
        image=str(rec.get("image", "")),
        protocol=protocol,
        extra=protocol_for(protocol).as_entry(options),
    )


def write_record(run_dir: Path, rec: dict[str, Any]) -> None:
    tmp = run_dir / "record.json.tmp"
    tmp.write_text(json.dumps(rec))
    tmp.replace(run_dir / "record.json")
