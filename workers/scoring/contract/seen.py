"""The contracts models reported themselves (the v2 protocol's metadata), kept where
``scorefleet check`` finds them: ``<state prefix>contracts/<image hash>.json``.

A model's own metadata is read by the score step, once the model is ready; ``scorefleet
check`` starts no model, so it knows such a contract only as a worker last saw it. A
worker writes it when it reads one it has not written before in this process (one
PUT per image and process, not per file); the check reads it (one GET) and says when
and by which run it was seen. An image whose model has not run yet has none: the
check says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from scorefleet.s3uri import S3Uri
from scorefleet.settings import Settings
from scorefleet.storage import s3io
from workers.scoring.contract.spec import Contract

log = logging.getLogger(__name__)

_written: dict[str, str] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Seen:
    contract: Contract
    seen_at: float
    run_id: str


def location(settings: Settings, image: str) -> S3Uri:
    digest = hashlib.sha256(image.encode()).hexdigest()[:24]
    return settings.storage.state_uri.join(f"contracts/{digest}.json")


def remember(s3: Any, settings: Settings, image: str, contract: Contract, run_id: str) -> bool:
    """Keep ``contract`` as the one ``image``'s model reported, unless this process
    already wrote it (best effort: a failure is logged, scoring goes on). True if
    written."""
    body = contract.to_json()
    key = f"{image}\n{body}"
    with _lock:
        if _written.get(image) == key:
            return False
    uri = location(settings, image)
    data = {"image": image, "contract": body, "seen_at": time.time(), "run_id": run_id}
    try:
        s3.put_object(
            Bucket=uri.bucket,
            Key=uri.key,
            Body=json.dumps(data).encode(),
            ContentType="application/json",
        )
    except Exception as exc:
        log.warning("could not keep the model's contract for scorefleet check: %s", exc)
        return False
    with _lock:
        _written[image] = key
    return True


def recall(s3: Any, settings: Settings, image: str) -> Seen | None:
    """The contract ``image``'s model last reported, if a worker kept one."""
    found = s3io.get_json(s3, location(settings, image))
    if found is None:
        return None
    data = found[0]
    if not isinstance(data, dict) or data.get("image") != image:
        return None
    return Seen(
        Contract.from_json(data.get("contract") or {}),
        float(data.get("seen_at") or 0),
        str(data.get("run_id") or ""),
    )
