"""The settings of a worker process (and of ``scorefleet config``): the core's
(:func:`scorefleet.settings.load`) plus the kubernetes backend's own checks
(:mod:`workers.backends.kubernetes.config`), every problem reported at once."""

from __future__ import annotations

import os
from collections.abc import Mapping

from scorefleet.settings import ConfigError, Settings
from scorefleet.settings import load as load_core
from workers.backends.kubernetes import config as k8s_config


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration as a worker needs it; raise
    :class:`ConfigError` naming every bad variable."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_core(env)
    except ConfigError as exc:
        problems = list(exc.problems)
    problems += k8s_config.problems(env)
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings
