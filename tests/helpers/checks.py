"""What the tests of ``scorefleet check`` share: the ``.error``'s message, and the
check run in this process against the local stack (what the command runs, without a
Python start per file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

#: what continues a message of several lines in an .error (scorefleet.storage.errordoc)
_GOES_ON = "\n              "


def error_line(text: str) -> str:
    """The ``error:`` of an .error: ``kind: message``, its later lines (a message of
    several lines goes on under its first in the file) as the message has them."""
    written = text.split("error:        ", 1)[1].split("\n\ninput:", 1)[0]
    return written.replace(_GOES_ON, "\n")


def as_written(line: str) -> str:
    """``kind: message`` as an .error holds it: one line per line of the message
    (errordoc.render splits it with str.splitlines, which drops a last line end)."""
    return "\n".join(line.splitlines())


@contextmanager
def in_process(stack: Any) -> Iterator[Callable[[str], Any]]:
    """``scorefleet check --full URI`` as a function, with the stack's settings (set in
    this process's environment while it is open)."""
    from workers.cli.check import run_check
    from workers.settings import load

    mp = pytest.MonkeyPatch()
    for name, value in stack.env.items():
        mp.setenv(name, value)
    try:
        settings = load()
        yield lambda uri: run_check(settings, uri, {}, key=None, full=True)
    finally:
        mp.undo()
