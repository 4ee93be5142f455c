"""Every input and output format: the one list of them.

A new format is one module beside this one that ends with its ``FORMAT =
Format(...)`` (:class:`.kind.Format`: names, media type, suffixes, reader, writer,
preflight), plus one line in :data:`FORMATS` and its section in docs/formats.md
(docs/development.md, "Extension points"). Everything that picks a format by a
name, a media type or a key suffix asks this registry.
"""

from __future__ import annotations

from workers.scoring.formats.csv import FORMAT as CSV
from workers.scoring.formats.jsonl import FORMAT as JSONL
from workers.scoring.formats.kind import Format
from workers.scoring.formats.parquet import FORMAT as PARQUET

#: every format by its name; the first is the default (a file nothing else names)
FORMATS: dict[str, Format] = {f.name: f for f in (CSV, JSONL, PARQUET)}
DEFAULT: Format = next(iter(FORMATS.values()))


def by_name(name: str) -> Format | None:
    """The format a name or media type (lower case, no parameters) means."""
    for fmt in FORMATS.values():
        if name in fmt.names:
            return fmt
    return None


def by_suffix(name: str) -> Format | None:
    """The format a file name's suffix (lower case) says."""
    for fmt in FORMATS.values():
        if name.endswith(fmt.suffixes):
            return fmt
    return None
