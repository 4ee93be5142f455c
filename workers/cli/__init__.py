"""The ``scorefleet`` command (``scorefleet = workers.cli:main``, or ``python -m
workers.cli``): its verbs in :mod:`.commands`, the run views (``status``, ``runs``,
``sweep``) in :mod:`.runs`, and how a command finds the running local stack's
settings in :mod:`.stackenv`."""

from workers.cli.commands import main

__all__ = ["main"]
