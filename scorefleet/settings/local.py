"""The local backend's section of the settings (a model process per file, on the
worker's machine): beside :mod:`.sections`, as the kubernetes backend's is in
:mod:`.kubernetes`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scorefleet.settings.catalog import parse_model_aws
from scorefleet.settings.declare import number as num
from scorefleet.settings.declare import var


def _state_dir(value: str) -> Path:
    return Path(value).expanduser() if value else Path.home() / ".local" / "state" / "scorefleet"


@dataclass(frozen=True)
class Local:
    """The local backend (a model process per file, on the worker's machine)."""

    max_live_models: int = var(
        "MAX_LIVE_MODELS",
        "0",
        "local backend: at most this many model processes on the machine at once (running or "
        "warm); a launch beyond it waits its turn in the queue. 0: no limit (kubernetes: use a "
        "ResourceQuota, which launches also wait for)",
        num(0, 10000),
    )
    state_dir: Path = var(
        "STATE_DIR",
        "",
        "local backend: directory for model process records and logs (default: "
        "~/.local/state/scorefleet)",
        _state_dir,
    )
    model_aws: dict[str, str] = var(
        "LOCAL_MODEL_AWS",
        "",
        "local backend: the AWS endpoint, region and credentials of the models themselves, "
        "given to a model whose catalog entry says local_aws (JSON or a file: endpoint_url, "
        "region, access_key_id, secret_access_key); never the worker's own",
        parse_model_aws,
    )
