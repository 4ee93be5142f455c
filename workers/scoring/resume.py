"""The resume plan (issue 26): may this delivery of the score step take the file up
from an earlier attempt's committed parts, and from where?

A delivery that is not a first one (a redelivery after a worker died, a retry) or
that continues a step that handed the file over looks at the run record's committed
parts (scorefleet.storage.commits) and takes them up only if everything still
holds; otherwise it starts over, as before, and says why in the log:

* the entry is this run's own, in its staging prefix (not a record from another run);
* its writer's lease has expired (a live writer's upload is never touched: this
  delivery then starts an attempt of its own, as before; a writer that missed its
  last heartbeat, its lease about to end, is waited for, the message back in the
  queue: SQS hands a dead worker's message on about when its lease ends);
* the source read is the same upload (version id, ETag, size) and everything that
  decides the output is the same (``options``: the formats, the columns, the
  mini-batch size, the image and its catalog entry, the file's budget of refused rows);
* the upload is there and its first parts are exactly the ones committed (number,
  size and ETag: the parts digest), with every side object and the held object;
* nobody took it over meanwhile (the take-over is a conditional write).

Then the delivery becomes the upload's writer and goes on from the committed point:
the reader from ``at``, the writer and the ``.rejected`` restored, the upload
continued after its last committed part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from scorefleet.errors import LeaseHeld
from scorefleet.job import Job
from scorefleet.s3uri import S3Uri
from scorefleet.settings import ModelSpec, Settings
from scorefleet.storage import commits, s3io
from scorefleet.storage.commits import Committed
from scorefleet.storage.ledger import Ledger, writer_lease
from scorefleet.storage.multipart import Continued, list_parts, parts_digest
from workers.scoring.checkpoint import Base, Bundle, side_key, stem
from workers.scoring.formats import ReadLimits
from workers.scoring.formats.source import Described

log = logging.getLogger(__name__)

#: Changes whenever what a committed part means changes (a resume point's fields, a
#: writer's state): parts committed by another version are never taken up.
VERSION = 1


def fingerprint(described: Described, lim: ReadLimits, spec: ModelSpec, budget: str) -> str:
    """Everything that decides a file's output bytes, as one digest: parts made
    under other settings are not taken up (the output would mix two)."""
    o = described.options
    data = {
        "version": VERSION,
        "input": o.input.name,
        "output": o.output.name,
        "columns": [list(o.columns.keep), o.columns.model, list(o.columns.drop)],
        "csv_header": o.csv_header,
        "limits": [lim.max_bytes, lim.max_group_bytes, lim.header_mode, lim.send_header],
        "image": spec.image,
        "protocol": spec.protocol,
        "catalog": spec.extra,
        "budget": budget,
    }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def source_of(job: Job, described: Described) -> dict[str, Any]:
    """The upload read, as a committed part records it."""
    return {"version_id": job.version_id, "etag": described.etag, "size": described.size}


@dataclass
class Plan:
    """Where a delivery takes the file up: the staging upload and the checkpointer's
    base (scorefleet.storage.commits.Committed, as taken over)."""

    staging: S3Uri
    continued: Continued
    base: Base
    rejects_sides: list[bytes]

    @property
    def entry(self) -> Committed:
        assert self.base.entry is not None
        return self.base.entry


class StartOver(Exception):
    """The committed parts cannot be taken up (says why)."""


def find(
    s3: Any,
    ledger: Ledger,
    settings: Settings,
    job: Job,
    *,
    source: dict[str, Any],
    options: str,
    token: str,
) -> Plan | None:
    """The plan to take the file up, or None (nothing committed, a live writer, or
    something that does not hold: logged, and the earlier upload left to be aborted
    as a dead one)."""
    entry = commits.of(ledger.get(job.pipeline_id))
    if entry is None:
        return None
    try:
        return _plan(s3, ledger, settings, job, entry, source, options, token)
    except StartOver as why:
        log.warning(
            "not taking %s up from its %d committed part(s) (data row %d): %s; starting over",
            job.source,
            entry.parts,
            entry.rows,
            why,
        )
        return None


def _plan(
    s3: Any,
    ledger: Ledger,
    settings: Settings,
    job: Job,
    entry: Committed,
    source: dict[str, Any],
    options: str,
    token: str,
) -> Plan | None:
    why = commits.belongs(settings, job, entry)
    if why:
        raise StartOver(why)
    lease = ledger.writers(job.pipeline_id).get(entry.key, 0.0)
    left = lease - time.time()
    visibility = settings.broker.visibility_timeout
    if 0 < left < (writer_lease(visibility) - visibility / 3) / 2:
        # a live writer renews its lease every third of the visibility timeout, so it
        # always has more than its lease less that third left: this one missed its
        # beat (its worker died about when SQS handed its message on)
        raise LeaseHeld(
            f"the attempt writing {entry.key} missed its heartbeat; its lease runs out "
            f"in {left:.0f}s",
            delay=math.ceil(left) + 1,
        )
    if left > 0:
        log.info(
            "the attempt writing %s is alive (its lease runs %.0fs more): this delivery "
            "scores the file on its own",
            entry.key,
            left,
        )
        return None
    if entry.source != source:
        raise StartOver(f"the source is not the upload the parts were made from ({entry.source})")
    if entry.options != options:
        raise StartOver(
            "what decides the output changed since (formats, columns, mini-batch size, "
            "the image's catalog entry, the budget of refused rows, or this worker's version)"
        )
    bucket = settings.storage.state_uri.bucket
    parts = _parts(s3, bucket, entry)
    sides = _objects(s3, bucket, entry)
    held = Bundle()
    if entry.held:
        held = Bundle.unpack(_get(s3, bucket, entry.held, "the hand-over's held bytes"))
    mine = commits.take_over(ledger, job, entry, token, settings.broker.visibility_timeout)
    if mine is None:
        log.info("another delivery took %s's committed parts over first", job.source)
        return None
    writer_sides = [w for b in sides for w in b.writer] + held.writer
    rejects_sides = [r for b in sides for r in b.rejects] + held.rejects
    base = Base(
        entry=mine,
        writer_sides=writer_sides,
        writer_held=held.held,
        pending=Bundle(list(held.writer), list(held.rejects)),
    )
    return Plan(
        staging=S3Uri(bucket, entry.key),
        continued=Continued(entry.upload_id, parts, held.tail),
        base=base,
        rejects_sides=rejects_sides,
    )


def _parts(s3: Any, bucket: str, entry: Committed) -> list[Any]:
    """The committed parts as S3 lists them, checked against the entry."""
    if entry.upload_id is None:
        if entry.parts:
            raise StartOver("the record names parts but no upload")
        return []
    try:
        listed = list_parts(s3, bucket, entry.key, entry.upload_id)
    except ClientError as exc:
        if s3io.error_code(exc) in {"NoSuchUpload", "404"}:
            raise StartOver("its staging upload is gone (aborted)") from exc
        raise
    parts = listed[: entry.parts]
    if [p.number for p in parts] != list(range(1, entry.parts + 1)):
        raise StartOver(
            f"a committed part is missing (the upload has parts {[p.number for p in parts]}, "
            f"{entry.parts} were committed)"
        )
    if parts_digest(parts) != entry.digest or sum(p.size for p in parts) != entry.size:
        raise StartOver("a committed part is not the one committed (its size or ETag changed)")
    return parts


def _objects(s3: Any, bucket: str, entry: Committed) -> list[Bundle]:
    """The side objects of the committed parts, in order."""
    if not entry.sides:
        return []
    prefix = f"{stem(entry.key)}.side-"
    found = s3io.list_prefix(s3, S3Uri(bucket, prefix))
    wanted = {side_key(entry.key, n) for n in range(1, entry.parts + 1)}
    keys = sorted(u.key for u in found if u.key in wanted)
    if len(keys) != entry.sides:
        raise StartOver(f"{entry.sides - len(keys)} of its parts' side objects are missing")
    with ThreadPoolExecutor(8) as pool:
        data = list(pool.map(lambda k: _get(s3, bucket, k, "a part's side object"), keys))
    return [Bundle.unpack(d) for d in data]


def _get(s3: Any, bucket: str, key: str, what: str) -> bytes:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if s3io.error_code(exc) in {"NoSuchKey", "404"}:
            raise StartOver(f"{what} is missing") from exc
        raise
    return body
