"""The model catalog (``SCOREFLEET_MODEL_CATALOG``), checked in one call.

:func:`problems` checks every key of every entry, each by its owner:

* the core's keys (``protocol`` as a name, ``max_rejected_rows``, ``env``, the image
  patterns): :func:`scorefleet.settings.catalog.entry_problems`, which the Lambda runs
  too;
* the entry's protocol and its options (``v2: {...}``, the sagemaker options at the
  top level or in ``sagemaker: {...}``): :mod:`workers.scoring.protocols.registry`;
* the formats' keys (``content_type``, ``keep_columns``, ...):
  :mod:`workers.scoring.formats.options`;
* the launch backends' keys (``command``, ``resources``, ``port``, ...):
  :mod:`workers.backends.registry`, whichever backend runs (a catalog may serve both);
* the model's declared input contract (``inputs``): :mod:`workers.scoring.contract`;
* any other key is refused, naming the nearest known one.

Every problem is reported at once, each naming the image and the key. The worker
runs it at start-up and ``scorefleet config`` runs it (both through
:func:`workers.settings.load`), ``scorefleet up`` on the catalogs it is given, and
the chart's tests on the rendered ConfigMap: a catalog one of them refuses, they all
refuse with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scorefleet.settings.catalog import CORE_KEYS
from scorefleet.settings.catalog import entry_problems as core_problems
from scorefleet.settings.declare import unknown_key
from workers.backends.registry import catalog_options
from workers.scoring.contract import CATALOG_KEYS as CONTRACT_KEYS
from workers.scoring.contract import catalog_problems as contract_problems
from workers.scoring.formats.options import CATALOG_KEYS as FORMAT_KEYS
from workers.scoring.formats.options import catalog_problems as format_problems
from workers.scoring.protocols.registry import catalog_keys as protocol_keys
from workers.scoring.protocols.registry import entry_problems as protocol_problems


def known_keys() -> frozenset[str]:
    """Every key a catalog entry may hold (asked of the owners: a new protocol, format
    or backend brings its keys with it)."""
    return frozenset(
        {*CORE_KEYS, *protocol_keys(), *FORMAT_KEYS, *CONTRACT_KEYS, *catalog_options()}
    )


class CatalogError(ValueError):
    """A model catalog with problems (:attr:`problems`, each naming image and key)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        text = problems[0] if len(problems) == 1 else "".join(f"\n  - {p}" for p in problems)
        super().__init__(text)


def problems(catalog: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Everything wrong with a catalog (an object of entries), every problem."""
    return [p for image, entry in catalog.items() for p in entry_problems(image, entry)]


def check(catalog: Mapping[str, Mapping[str, Any]]) -> None:
    """:class:`CatalogError` listing every problem of ``catalog``."""
    found = problems(catalog)
    if found:
        raise CatalogError(found)


def entry_problems(image: str, entry: Mapping[str, Any]) -> list[str]:
    """Everything wrong with one entry, in the order of its keys' owners."""
    found = core_problems(image, entry)
    found += protocol_problems(image, entry)
    found += [f"{image}: {p}" for p in format_problems(entry)]
    found += [f"{image}: {p}" for p in contract_problems(entry)]
    for key, checks in catalog_options().items():
        if key in entry:
            for check_value in checks:
                try:
                    check_value(entry[key])
                except ValueError as exc:
                    found.append(f"{image}: {key}: {exc}")
                    break
    known = known_keys()
    found += [f"{image}: {unknown_key(k, known)}" for k in entry if k not in known]
    return found
