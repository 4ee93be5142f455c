"""The settings of a worker process (and of ``scorefleet config`` and the chart's
tests): the ONE load that checks everything a worker runs with, every problem
reported at once --

* the core's settings (:func:`scorefleet.settings.load`, what the Lambda checks too),
* the whole model catalog, every key by its owner (:func:`workers.catalog.problems`,
  handed to the core's load so its problems are worded and ordered as the core's),
* the launch backends: that SCOREFLEET_LAUNCH_BACKEND names one, and each backend's
  own variables (:func:`workers.backends.registry.settings_problems`; the kubernetes
  client is not loaded for it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from scorefleet.settings import ConfigError, Settings
from scorefleet.settings import load as load_core
from workers import catalog
from workers.backends.registry import settings_problems as backend_problems


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration as a worker needs it; raise
    :class:`ConfigError` naming every bad variable."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_core(env, check_catalog=catalog.problems)
    except ConfigError as exc:
        problems = list(exc.problems)
    problems += backend_problems(env)
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings
