"""What the steps need to read a file's data: the reading limits from the settings,
and the look at its first bytes (or its footer) that launch takes before any model
starts."""

from __future__ import annotations

from scorefleet.job import Job
from scorefleet.settings import ModelSpec, Settings
from workers.runtime import WorkerRuntime
from workers.scoring.formats import ReadLimits, compression
from workers.scoring.formats import source as data_source
from workers.scoring.protocols import protocol_for


def preflight(rt: WorkerRuntime, j: Job, spec: ModelSpec) -> int | None:
    """What the file's first bytes (CSV, JSON Lines) or footer (Parquet) show, before
    any container starts: BadInput, or the number of rows when known (Parquet)."""
    return data_source.look_first(
        rt.s3, j, spec.extra, read_limits(rt.settings, spec), expansion_limits(rt.settings)
    )


def read_limits(s: Settings, spec: ModelSpec) -> ReadLimits:
    return ReadLimits(
        max_bytes=s.scoring.max_payload_bytes,
        max_group_bytes=s.scoring.max_row_group_bytes,
        header_mode=s.scoring.csv_header,
        send_header=protocol_for(spec.protocol).sends_header(spec),
    )


def expansion_limits(s: Settings) -> compression.Limits:
    """How far a compressed input may expand (SCOREFLEET_MAX_EXPANDED_GB, ..._RATIO)."""
    return compression.Limits(s.scoring.max_expanded_bytes, s.scoring.max_expansion_ratio)
