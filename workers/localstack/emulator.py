"""The local stack's S3/SQS/SNS emulator: moto in server mode, delivering what S3
delivers.

    python -m workers.localstack.emulator -H 127.0.0.1 -p PORT      (the arguments of moto.server)

moto's S3 notifications carry neither ``versionId`` nor ``sequencer``, which real
S3 always sends (``sequencer`` always, ``versionId`` on a versioned bucket). Without
them every upload of the same bytes looks like the same upload, so the local stack
would not behave as production does (issue 10: A -> B -> A published B's scores).
This launcher adds both to every S3 event record before moto sends it: the
version id of the very object version the event is about, and a sequencer that
grows with every event (as S3's does for the events of one key).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()
_counter = itertools.count()


def next_sequencer() -> str:
    """Hex, and larger for every later event (S3's are compared the same way)."""
    with _lock:
        return f"{time.time_ns():016X}{next(_counter) % 0x10000:04X}"


def with_s3_fields(event: dict[str, Any], bucket: Any, key: Any) -> dict[str, Any]:
    """``event`` (moto's S3 event) with ``versionId`` and ``sequencer`` added."""
    for record in event.get("Records", []):
        obj = record["s3"]["object"]
        version = getattr(key, "version_id", None)
        if getattr(bucket, "is_versioned", False) and version not in (None, "", "null"):
            obj["versionId"] = version
        obj["sequencer"] = next_sequencer()
    return event


def install() -> None:
    """Wrap moto's S3 event builder (fails loudly if moto's layout changed)."""
    from moto.s3 import notifications

    original = notifications._get_s3_event  # the one place moto builds S3 event records

    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        return with_s3_fields(original(event_name, bucket, key, notification_id), bucket, key)

    notifications._get_s3_event = get_s3_event


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
