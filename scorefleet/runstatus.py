"""Where is my file? A file's state as its run record tells it (``scorefleet status``
and ``scorefleet runs``), from the record alone: pure functions, no I/O.

The record (scorefleet.storage.ledger) is written at each turn of a run: ``queued`` when its
chain is sent (the Lambda, the sweep), ``running`` with a ``phase`` (launching,
scoring with rows and bytes so far, publishing) while a worker has it, then
``published`` or ``failed`` with the outcome's URI.
"""

from __future__ import annotations

import enum
import shlex
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scorefleet.storage.ledger import Phase, RunState


class FileState(enum.Enum):
    """A file's state as ``scorefleet status`` tells it: the record's state, and
    the phase of a running one."""

    NOT_SEEN = "not seen"  # no run record: never notified (see `scorefleet sweep`)
    QUEUED = "queued"
    LAUNCHING = "launching"
    SCORING = "scoring"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer upload of the key (or a forced rerun) took over


_PHASES: dict[str, FileState] = {
    Phase.LAUNCHING: FileState.LAUNCHING,
    Phase.SCORING: FileState.SCORING,
    Phase.PUBLISHING: FileState.PUBLISHING,
}
_FINAL: dict[str, FileState] = {
    RunState.PUBLISHED: FileState.PUBLISHED,
    RunState.FAILED: FileState.FAILED,
    RunState.SUPERSEDED: FileState.SUPERSEDED,
}


def state_of(record: Mapping[str, Any] | None) -> FileState:
    if record is None:
        return FileState.NOT_SEEN
    state = str(record.get("state", ""))
    if state in _FINAL:
        return _FINAL[state]
    if state == RunState.RUNNING:
        return _PHASES.get(str(record.get("phase", "")), FileState.LAUNCHING)
    return FileState.QUEUED


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class RunView:
    """What ``scorefleet status`` shows about one file (``--json``: these fields)."""

    uri: str
    state: str
    pipeline_id: str
    run_id: str | None = None
    model_image: str | None = None
    #: the model replicas scoring the file, when several (its progress records it)
    replicas: int | None = None
    attempts: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    rows: int | None = None
    bytes_read: int | None = None
    total_bytes: int | None = None
    rejected_rows: int | None = None
    outcome: str | None = None
    error: str | None = None
    #: a running record whose lease has expired: its worker died, a redelivery takes over
    stalled: bool = False
    #: output parts committed (the file goes on from the last after a worker dies),
    #: and how many steps it took: hand-overs at SCOREFLEET_MAX_STEP_SECONDS, and
    #: take-overs from a worker that stopped (issue 26)
    parts_committed: int | None = None
    continued: int = 0
    resumed: int = 0
    rerun: str = ""
    #: where the outcome comes from (scorefleet/provenance.py): model_image,
    #: model_image_id, model_protocol, catalog_entry, scorefleet_version
    provenance: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def view(
    uri: str,
    pipeline_id: str,
    record: Mapping[str, Any] | None,
    *,
    now: float | None = None,
    error_lines: str | None = None,
) -> RunView:
    """The view of one file; ``error_lines``: the first lines of its ``.error``."""
    now = time.time() if now is None else now
    state = state_of(record)
    rec = record or {}
    running = state in {FileState.LAUNCHING, FileState.SCORING, FileState.PUBLISHING}
    rows = _num(rec.get("rows"))
    rejected = _num(rec.get("rejected_rows"))
    read, total = _num(rec.get("bytes_read")), _num(rec.get("total_bytes"))
    attempts = _num(rec.get("attempts"))
    raw = rec.get("resume")
    committed: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    parts = _num(committed.get("parts"))
    replicas = _num(rec.get("replicas"))
    return RunView(
        uri=uri,
        state=state.value,
        pipeline_id=pipeline_id,
        run_id=str(rec["run_id"]) if rec.get("run_id") else None,
        model_image=str(rec["model_image"]) if rec.get("model_image") else None,
        replicas=int(replicas) if replicas is not None else None,
        attempts=int(attempts) if attempts is not None else None,
        queued_at=_num(rec.get("queued_at")),
        started_at=_num(rec.get("started_at")),
        updated_at=_num(rec.get("progress_at")) or _num(rec.get("updated")),
        finished_at=_num(rec.get("finished_at")),
        rows=int(rows) if rows is not None else None,
        bytes_read=int(read) if read is not None else None,
        total_bytes=int(total) if total is not None else None,
        rejected_rows=int(rejected) if rejected is not None else None,
        outcome=str(rec["outcome"]) if rec.get("outcome") else None,
        error=error_lines or (str(rec["error"]) if rec.get("error") else None),
        stalled=running and (_num(rec.get("lease_until")) or 0.0) < now,
        parts_committed=int(parts) if parts is not None and running else None,
        continued=int(_num(committed.get("handovers")) or 0),
        resumed=int(_num(committed.get("resumes")) or 0),
        rerun=f"scorefleet rerun {shlex.quote(uri)}",
        provenance=_provenance(rec.get("provenance")),
    )


def _provenance(value: Any) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str) and v} or None


#: How ``scorefleet status`` labels each provenance field.
PROVENANCE_LABELS = (
    ("model_image_id", "image id"),
    ("model_protocol", "protocol"),
    ("catalog_entry", "catalog"),
    ("scorefleet_version", "scorefleet"),
)


def _when(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "-"
    clock = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))
    return f"{clock} UTC ({ago(now - stamp)} ago)"


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


#: decimal units, as S3 and the AWS console count
_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def size_unit(size: float) -> tuple[float, str]:
    """The unit ``size`` bytes read best in: (its size in bytes, its name)."""
    return next(((u, name) for u, name in _UNITS if size >= u), (1.0, "bytes"))


def progress_text(v: RunView) -> str:
    parts = []
    if v.rows is not None:
        parts.append(f"{v.rows:,} rows")
    if v.bytes_read is not None:
        # in the unit of the whole file: a small file in kB or bytes, not "0.0 of 0.0 MB"
        unit, name = size_unit(max(v.total_bytes or 0, v.bytes_read))
        digits = 0 if unit == 1.0 else 1
        of = f" of {v.total_bytes / unit:,.{digits}f}" if v.total_bytes else ""
        parts.append(f"{v.bytes_read / unit:,.{digits}f}{of} {name} read")
    if v.rejected_rows:
        parts.append(f"{v.rejected_rows:,} rows rejected")
    return ", ".join(parts)


def render(v: RunView, *, now: float | None = None) -> str:
    """``scorefleet status`` as text."""
    now = time.time() if now is None else now
    state = v.state
    if state == FileState.SCORING.value and progress_text(v):
        state += f" ({progress_text(v)} so far)"
    elif state == FileState.PUBLISHED.value and progress_text(v):
        state += f" ({progress_text(v)})"
    if v.stalled:
        state += " - stalled: its worker stopped renewing the lease; a redelivery takes over"
    lines = [
        f"file        {v.uri}",
        f"state       {state}",
        f"pipeline    {v.pipeline_id}"
        + (f"  (run {v.run_id})" if v.run_id and v.run_id != v.pipeline_id else ""),
    ]
    if v.state == FileState.NOT_SEEN.value:
        lines.append(
            "            no run record: its notification has not come (yet); the sweep "
            "queues it after its grace period, or queue it now:"
        )
    if v.model_image:
        several = f" ({v.replicas} replicas)" if v.replicas and v.replicas > 1 else ""
        lines.append(f"model       {v.model_image}{several}")
    if v.attempts:
        lines.append(f"attempts    {v.attempts}")
    if v.parts_committed:
        lines.append(
            f"committed   {v.parts_committed} output part(s): a worker that stops, the file "
            "goes on from the last"
        )
    if v.continued:
        lines.append(
            f"continued   {v.continued} time(s): each step hands the file on at "
            "SCOREFLEET_MAX_STEP_SECONDS"
        )
    if v.resumed:
        lines.append(f"resumed     {v.resumed} time(s) from its last committed part")
    for label, stamp in (
        ("queued", v.queued_at),
        ("started", v.started_at),
        ("updated", v.updated_at),
        ("finished", v.finished_at),
    ):
        if stamp is not None:
            lines.append(f"{label:11} {_when(stamp, now)}")
    if v.outcome:
        lines.append(f"outcome     {v.outcome}")
    for key, label in PROVENANCE_LABELS:
        if v.provenance and v.provenance.get(key):
            lines.append(f"{label:11} {v.provenance[key]}")
    if v.error:
        lines.append("error       " + "\n            ".join(v.error.splitlines()))
    lines.append(f"rerun       {v.rerun}")
    return "\n".join(lines) + "\n"
