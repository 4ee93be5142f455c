"""What the ``scorefleet`` commands share: where their settings come from, and
one-line answers when the stack or a service cannot be reached.

Settings come from the environment. When ``SCOREFLEET_INPUT_URI`` is not set, the
commands use the local stack of the current directory (``.scorefleet/``): its
``stack.env`` if a stack is running there (its lock is held, see
:mod:`workers.localstack.state`), and otherwise say that none is, and how to start one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from workers.localstack import state as stackstate
from workers.process.reach import START_HINT, unreachable

if TYPE_CHECKING:
    from scorefleet.settings import Settings

DEFAULT_STATE = Path(".scorefleet")


def _apply(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        os.environ.setdefault(name, value)


def local_stack_env(state_dir: Path) -> Path:
    """``stack.env`` of the stack running from ``state_dir``; a one-line
    :class:`click.ClickException` saying why there is none."""
    env_path = state_dir / stackstate.ENV_NAME
    running = stackstate.holder(state_dir) is not None
    if running and env_path.exists():
        return env_path
    if running:
        raise click.ClickException(
            f"the local stack in {state_dir}/ is still starting: try again in a moment"
        )
    if env_path.exists():
        raise click.ClickException(
            f"the local stack in {state_dir}/ is not running (it did not stop cleanly and "
            f"left its stack.env behind): {START_HINT}"
        )
    raise click.ClickException(
        f"no local stack is running in {state_dir}/ and SCOREFLEET_INPUT_URI is not set: "
        f"{START_HINT}, or configure scorefleet (`scorefleet config --markdown` lists the "
        "variables)"
    )


def load_settings(env_file: Path | None) -> Settings:
    """The settings of a command: ``env_file``, the environment, or the local stack
    (checked as a worker checks them: :func:`workers.settings.load`)."""
    from scorefleet.settings import ConfigError
    from workers.settings import load

    if env_file is not None:
        if not env_file.exists():
            raise click.ClickException(f"{env_file} does not exist")
        if (env_file.parent / stackstate.LOCK_NAME).exists():  # a local stack's
            local_stack_env(env_file.parent)
        _apply(stackstate.read_env_file(env_file))
    elif "SCOREFLEET_INPUT_URI" not in os.environ:
        _apply(stackstate.read_env_file(local_stack_env(DEFAULT_STATE)))
    try:
        return load()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class Command(click.Command):
    """Shows its whole first paragraph in ``scorefleet --help``."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return first_paragraph(self.short_help or self.help or "")


class Group(click.Group):
    """A group whose commands show their whole description in ``--help``, and whose
    commands answer an unreachable stack or service in one line (no traceback)."""

    command_class = Command
    group_class = type  # sub-groups are Groups too

    def get_short_help_str(self, limit: int = 45) -> str:
        return first_paragraph(self.short_help or self.help or "")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            message = unreachable(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def first_paragraph(text: str) -> str:
    import inspect

    paragraph = inspect.cleandoc(text).split("\n\n", 1)[0]
    return " ".join(paragraph.split())
