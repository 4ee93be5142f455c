"""The ``local`` backend's catalog keys (``command``, ``cwd``, ``local_aws``) and their
checks. Importing this module loads nothing of the backend itself."""

from __future__ import annotations

from typing import Any

from scorefleet.settings import ModelSpec


def check_command(value: Any) -> None:
    if not isinstance(value, str) or "{port}" not in value:
        raise ValueError(
            "expected a string with a {port} placeholder, e.g. "
            '"{python} serve.py --host {host} --port {port}"'
        )


def check_cwd(value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError("expected the path of a directory")


def check_local_aws(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            "expected true or false (true: the model gets SCOREFLEET_LOCAL_MODEL_AWS as its "
            "AWS endpoint and credentials)"
        )


#: the per-image catalog keys of the local backend
CATALOG_OPTIONS = {"command": check_command, "cwd": check_cwd, "local_aws": check_local_aws}


def command_of(spec: ModelSpec) -> str | None:
    """The command that serves an image's model (catalog ``command``), if any."""
    command = spec.extra.get("command")
    return str(command) if command else None
