"""What scorefleet would do with one file, found without starting a model: the ONE
code path of the launch preflight (``tasks.launch``) and ``scorefleet check``.

:func:`look` runs, in the launch's order, what is checked before any model starts:
the file's tags (the image and whether it is allowed, cluster, namespace:
:func:`scorefleet.submission.validate`), its formats and columns, its first bytes
(or footer) as the scoring step would read them, and the model's declared contract
(the catalog's ``inputs``) against the columns and first rows those bytes hold. It
returns a :class:`Preview` of what it found; a file that cannot be scored has its
:attr:`Preview.error`: the very exception the launch raises, so the file's ``.error``
and ``scorefleet check`` carry the same message. Transient failures (S3 unavailable)
are raised.

What only the scoring step can know is said where it is checked: the model's own
metadata (the v2 protocol), read once the model is ready and checked with the
declared contract against the first mini-batch (:func:`first_batch_check`, which the
score step and ``scorefleet check --full`` share), and what lies beyond the first
bytes (:func:`read_all`: the scoring step's reader, without a model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scorefleet.errors import PermanentError, PipelineError, Rejected
from scorefleet.job import Job
from scorefleet.redact import redact
from scorefleet.settings import ModelSpec, Settings
from scorefleet.storage import outcome
from scorefleet.submission import validate
from workers.scoring.batches import Batch
from workers.scoring.contract import Contract, FileSample, require, sample_of, sample_of_schema
from workers.scoring.contract import mlflow as mlflow_signature
from workers.scoring.contract.spec import declared, with_flags
from workers.scoring.formats import ReadLimits, compression
from workers.scoring.formats import source as data_source
from workers.scoring.formats.base import Reader
from workers.scoring.formats.source import Head
from workers.scoring.protocols import protocol_for


def read_limits(s: Settings, spec: ModelSpec) -> ReadLimits:
    """How the data path reads a file for this image's model."""
    return ReadLimits(
        max_bytes=s.scoring.max_payload_bytes,
        max_group_bytes=s.scoring.max_row_group_bytes,
        header_mode=s.scoring.csv_header,
        send_header=protocol_for(spec.protocol).sends_header(spec),
    )


def expansion_limits(s: Settings) -> compression.Limits:
    """How far a compressed input may expand (SCOREFLEET_MAX_EXPANDED_GB, ..._RATIO)."""
    return compression.Limits(s.scoring.max_expanded_bytes, s.scoring.max_expansion_ratio)


def declared_for(spec: ModelSpec, s3: Any = None) -> Contract | None:
    """The contract the image's catalog entry declares (``inputs``), if any: its
    ``columns``, or the signature of the MLflow model it points to."""
    raw = spec.extra.get("inputs")
    if not raw:
        return None
    if "columns" in raw:
        return declared(spec.image, raw)
    cwd = spec.extra.get("cwd")
    found = mlflow_signature.load(
        str(raw["mlflow"]), image=spec.image, cwd=str(cwd) if cwd else None, s3=s3
    )
    return with_flags(found, raw)


def head_sample(head: Head) -> FileSample | None:
    """What the launch preflight's first bytes (or footer) show of the file's columns."""
    plan = head.plan
    if plan is None:
        return None
    if head.schema is not None:
        return sample_of_schema(plan.input, plan.model, head.schema, head.nulls, head.rows or 0)
    return sample_of(plan.input, plan.model, head.batches, named=head.named)


def first_batch_check(contracts: Sequence[Contract], reader: Reader) -> Callable[[Batch], None]:
    """A check of the first mini-batch (read by ``reader``) against ``contracts``,
    before it is sent: :class:`~scorefleet.errors.ContractMismatch`."""

    def check(batch: Batch) -> None:
        plan = reader.plan
        if plan is None:
            return
        sample = sample_of(plan.input, plan.model, [batch], named=any(plan.input))
        for contract in contracts:
            require(contract, sample)

    return check


@dataclass
class Problem:
    #: the step whose failure the file's .error would name (enqueue: the Lambda)
    step: str
    kind: str
    message: str

    @property
    def line(self) -> str:
        """As the ``.error``'s ``error:`` line says it."""
        return f"{self.kind}: {self.message}"


@dataclass
class Preview:
    """What scorefleet would do with the file (``scorefleet check --json``: these)."""

    source: str
    image: str
    protocol: str
    #: the catalog entry as used (sha256 of it), "" when the image has none
    catalog_entry: str
    allowed: bool | None = None
    format: str | None = None
    format_decided_by: str | None = None
    compression: str | None = None
    output_format: str | None = None
    size: int | None = None
    columns: list[str] | None = None
    model_columns: list[str] | None = None
    kept_columns: list[str] | None = None
    #: where the model's contract comes from, and when it is checked
    contract: str | None = None
    contract_checked: str | None = None
    sampled_rows: int = 0
    batch_bytes: int = 0
    rows: int | None = None
    rows_exact: bool = False
    batches: int | None = None
    output: str | None = None
    error_output: str | None = None
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)
    #: not shown: what the launch raises, and what it read
    error: PipelineError | None = field(default=None, repr=False)
    head: Head | None = field(default=None, repr=False)

    def fail(self, step: str, exc: PipelineError) -> None:
        self.error = exc
        self.problem = Problem(step, exc.kind, redact(exc.message))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["error"], data["head"]
        return data


def look(
    settings: Settings,
    s3: Any,
    job: Job,
    spec: ModelSpec,
    *,
    observed: Contract | None = None,
    describe: bool = False,
) -> Preview:
    """Everything checked before a model starts (the module docstring says what), and
    what it found. ``observed``: a contract the model reported itself, as a worker
    last saw it (``scorefleet check``; the score step checks it on the first
    mini-batch). ``describe``: read the file's first rows for its columns and an
    estimate of its rows even when no contract needs them (``scorefleet check``)."""
    p = Preview(
        source=str(job.source),
        image=job.model_image,
        protocol=protocol_for(spec.protocol).name,
        catalog_entry=spec.entry_id,
        batch_bytes=settings.scoring.max_payload_bytes,
    )
    p.allowed = settings.models.image_allowed(job.model_image)
    try:
        validate(settings, job)
    except Rejected as exc:
        p.fail("enqueue", exc)
        return p
    p.output = str(outcome.scoreout_location(settings, job.source))
    where = outcome.error_location_or_none(settings, job.source)
    p.error_output = str(where) if where else None
    step = "launch"
    try:
        head = data_source.look_first(
            s3,
            job,
            spec.extra,
            read_limits(settings, spec),
            expansion_limits(settings),
            sample=describe or observed is not None or bool(spec.extra.get("inputs")),
        )
        _take_head(p, head)
        sample = head_sample(head)
        contract = declared_for(spec, s3)
        if contract is not None:
            p.contract = contract.source
            p.contract_checked = "before the model starts, and on the first mini-batch"
            if sample is None:
                p.notes.append(
                    "the first bytes hold no whole row: the contract is checked on the "
                    "first mini-batch"
                )
            require(contract, sample)
        if observed is not None:
            step = "score"
            p.contract = f"{p.contract}; {observed.source}" if p.contract else observed.source
            p.contract_checked = "once the model is ready, before the first mini-batch"
            require(observed, sample)
    except PermanentError as exc:
        p.fail(step, exc)
    return p


def _take_head(p: Preview, head: Head) -> None:
    p.head = head
    opts = head.described.options
    p.format, p.format_decided_by = opts.input.label, opts.decided_by
    p.output_format = opts.output.label
    p.compression = opts.compression.lstrip(".") or ("yes" if head.compressed else "none")
    p.size = head.described.size
    if head.plan is not None:
        p.columns = list(head.plan.input)
        p.model_columns = list(head.plan.model)
        p.kept_columns = list(head.plan.keep)
    p.sampled_rows = head.sampled_rows
    if head.rows is not None:
        p.rows, p.rows_exact = head.rows, True
    elif head.whole and head.plan is not None:
        p.rows, p.rows_exact, p.batches = head.sampled_rows, True, len(head.batches)
    elif head.sampled_bytes and not head.compressed and p.size:
        p.rows = round(head.sampled_rows * p.size / head.sampled_bytes)
        p.batches = max(1, math.ceil(p.size / max(1, p.batch_bytes)))


def read_all(
    settings: Settings, s3: Any, job: Job, spec: ModelSpec, contracts: Sequence[Contract]
) -> tuple[int, int]:
    """Read the whole file as the scoring step does, without a model: (rows, mini-
    batches); the first mini-batch checked against ``contracts``. Raises what the
    scoring step would (:class:`~scorefleet.errors.BadInput`, ...)."""
    _described, reader = data_source.open_described(
        s3, job, spec.extra, read_limits(settings, spec), expansion_limits(settings)
    )
    check = first_batch_check(contracts, reader)
    rows = batches = 0
    for piece in reader:
        if batches == 0:
            check(piece.batch)
        rows += piece.batch.rows
        batches += 1
    return rows, batches
