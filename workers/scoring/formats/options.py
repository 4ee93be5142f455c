"""Which format a file is read in and written as, and which of its columns go where.

Pure functions of what the file says about itself (its key, its Content-Type), its
tags and the image's catalog entry; nothing here reads S3 or imports pyarrow.

Input format, first that applies:

1. the file's ``content_type`` tag,
2. the image's catalog ``content_type``,
3. the key's suffix (``.csv``, ``.jsonl``, ``.ndjson``, ``.parquet``; a compression
   suffix such as ``.gz`` after it is looked through),
4. the object's Content-Type (ignored when it is a generic one S3 clients set by
   default, such as ``binary/octet-stream``),
5. CSV (what scorefleet read before it read anything else).

A key suffix and a Content-Type that name two different formats contradict each
other: that is an error unless a tag or the catalog says which one is meant. The
output format is the input's unless the ``output_format`` tag or catalog key says
otherwise. A name that is no format is an error; so is Parquet behind an outer
compression (a Parquet file compresses inside, and is read with ranged GETs).

``csv_header`` (tag, else catalog, else ``SCOREFLEET_CSV_HEADER``): whether a CSV
file's first row is a header, ``present``, ``absent`` or ``auto`` (the rule of
:mod:`.csvheader`).

Column lists (``keep_columns``, ``model_columns``, ``drop_columns``): in tags,
names separated by spaces (S3 tag values cannot hold commas); in the catalog, a JSON
list of names (or one string, split like a tag). A tag overrides the catalog, and
``model_columns``/``drop_columns`` count as one setting (what the model sees): a tag
setting either replaces both of the catalog's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scorefleet.errors import BadInput
from workers.scoring.formats import registry
from workers.scoring.formats.csvheader import MODES as HEADER_MODES
from workers.scoring.formats.kind import Format, ReadLimits
from workers.scoring.formats.select import ALL_COLUMNS, Columns

#: Compression suffixes looked through (the bytes decide the compression:
#: workers.scoring.formats.compression).
COMPRESSION_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd")

#: Content-Types that say nothing about the format (clients' defaults).
GENERIC_TYPES = frozenset(
    {
        "",
        "binary/octet-stream",
        "application/octet-stream",
        "text/plain",
        "application/x-gzip",
        "application/gzip",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
    }
)

#: The tags this module reads (beside the model image and cluster tags).
TAGS = (
    "content_type",
    "output_format",
    "keep_columns",
    "model_columns",
    "drop_columns",
    "csv_header",
)
#: The catalog keys it reads (per image).
CATALOG_KEYS = TAGS


def format_named(value: str, what: str) -> Format:
    """The format a tag or catalog value names; ``ValueError`` listing the names."""
    fmt = registry.by_name(value.split(";", maxsplit=1)[0].strip().lower())
    if fmt is not None:
        return fmt
    formats = registry.FORMATS.values()
    raise ValueError(
        f"{what} {value!r} is not a format scorefleet reads: use "
        f"{', '.join(f.name for f in formats)}, or a media type such as "
        f"{', '.join(f.media_type for f in formats)}"
    )


def split_key(key: str) -> tuple[Format | None, str]:
    """(the format the key's suffix names, the compression suffix after it, or "")."""
    name = key.rsplit("/", 1)[-1].lower()
    compression = ""
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            compression, name = suffix, name[: -len(suffix)]
            break
    return registry.by_suffix(name), compression


def split_names(value: Any, what: str) -> tuple[str, ...]:
    """Column names from a tag (space-separated) or a catalog value (a JSON list of
    names, or one space-separated string)."""
    if isinstance(value, str):
        names = tuple(value.split())
    elif isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value):
        names = tuple(value)
    else:
        raise ValueError(f"{what} must be a list of column names (got {value!r})")
    if not names:
        raise ValueError(f"{what} names no column")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{what} names the column {dup!r} twice")
    return names


def catalog_problems(entry: Mapping[str, Any]) -> list[str]:
    """What is wrong with a catalog entry's format and column keys, one problem per
    key, each naming it (checked at start-up, so a typo fails the worker, not a file:
    :mod:`workers.catalog`)."""
    found: list[str] = []
    for key in ("content_type", "output_format"):
        if key in entry:
            if not isinstance(entry[key], str):
                found.append(f"{key} must be a string")
                continue
            try:
                format_named(entry[key], key)
            except ValueError as exc:
                found.append(str(exc))
    for key in ("keep_columns", "model_columns", "drop_columns"):
        if key in entry:
            try:
                split_names(entry[key], key)
            except ValueError as exc:
                found.append(str(exc))
    if "model_columns" in entry and "drop_columns" in entry:
        found.append("set model_columns or drop_columns, not both")
    if "csv_header" in entry:
        try:
            header_mode(entry["csv_header"], "csv_header")
        except ValueError as exc:
            found.append(str(exc))
    return found


def header_mode(value: Any, what: str) -> str:
    """A ``csv_header`` value (tag or catalog): auto, present or absent."""
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in HEADER_MODES:
        raise ValueError(
            f"{what} must be one of {', '.join(HEADER_MODES)} (whether a CSV file's first "
            f"row is a header), not {value!r}"
        )
    return str(mode)


def check_catalog_entry(entry: Mapping[str, Any]) -> None:
    """``ValueError`` for a catalog entry whose format or column keys are wrong."""
    found = catalog_problems(entry)
    if found:
        raise ValueError("; ".join(found))


@dataclass(frozen=True)
class DataOptions:
    input: Format
    output: Format
    compression: str  # the key's compression suffix ("" if none)
    columns: Columns
    #: how the input format was decided, for messages ("the key's suffix .csv")
    decided_by: str = ""
    #: a CSV file's header, as its tag or the catalog says (None: SCOREFLEET_CSV_HEADER)
    csv_header: str | None = None

    def limits(self, lim: ReadLimits) -> ReadLimits:
        """The reading limits of this file: the stack's, with its own ``csv_header``."""
        if self.csv_header is None or self.csv_header == lim.header_mode:
            return lim
        return replace(lim, header_mode=self.csv_header)


def _pick(tags: Mapping[str, str], catalog: Mapping[str, Any], key: str) -> tuple[Any, str]:
    if tags.get(key):
        return tags[key], f"the {key} tag"
    if key in catalog:
        return catalog[key], f"the catalog's {key} for this image"
    return None, ""


def resolve(
    key: str,
    object_content_type: str,
    tags: Mapping[str, str],
    catalog: Mapping[str, Any],
) -> DataOptions:
    """The formats and columns for one file; :class:`BadInput` when they are unknown
    or contradict each other."""
    try:
        return _resolve(key, object_content_type, tags, catalog)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _resolve(
    key: str, object_content_type: str, tags: Mapping[str, str], catalog: Mapping[str, Any]
) -> DataOptions:
    by_suffix, compression = split_key(key)
    ctype = object_content_type.split(";", maxsplit=1)[0].strip().lower()
    named, where = _pick(tags, catalog, "content_type")
    if named is not None:
        fmt = format_named(str(named), where)
        decided = where
    elif by_suffix is not None:
        fmt, decided = by_suffix, "the key's suffix"
        other = registry.by_name(ctype)
        if ctype not in GENERIC_TYPES and other is not None and other is not by_suffix:
            raise ValueError(
                f"the key's suffix says {by_suffix.label} but the object's Content-Type "
                f"{ctype!r} says {other.label}; tag the file content_type=csv|jsonl|parquet "
                "to say which it is"
            )
    elif ctype not in GENERIC_TYPES:
        fmt = format_named(ctype, "the object's Content-Type")
        decided = "the object's Content-Type"
    else:
        fmt, decided = registry.DEFAULT, "the default (no known suffix or Content-Type)"
    if fmt.stream is None and compression:
        raise ValueError(
            f"the file is {fmt.label} behind an outer {compression} compression, which "
            f"cannot be read in ranges: {fmt.label} compresses its columns itself, upload "
            f"the {fmt.suffixes[0]} file as it is"
        )
    out_named, out_where = _pick(tags, catalog, "output_format")
    output = format_named(str(out_named), out_where) if out_named is not None else fmt
    header, header_where = _pick(tags, catalog, "csv_header")
    return DataOptions(
        input=fmt,
        output=output,
        compression=compression,
        columns=_columns(tags, catalog),
        decided_by=decided,
        csv_header=header_mode(header, header_where) if header is not None else None,
    )


def _columns(tags: Mapping[str, str], catalog: Mapping[str, Any]) -> Columns:
    keep_value, keep_where = _pick(tags, catalog, "keep_columns")
    keep = split_names(keep_value, keep_where) if keep_value is not None else ()
    if ALL_COLUMNS in keep and keep != (ALL_COLUMNS,):
        raise ValueError(f"{keep_where}: '*' keeps every column and stands alone")
    source: Mapping[str, Any] = (
        tags if (tags.get("model_columns") or tags.get("drop_columns")) else catalog
    )
    where = "tag" if source is tags else "catalog entry"
    model_value = source.get("model_columns") or None
    drop_value = source.get("drop_columns") or None
    if model_value is not None and drop_value is not None:
        raise ValueError(f"the {where} sets both model_columns and drop_columns: set one")
    model = split_names(model_value, f"model_columns ({where})") if model_value else None
    drop = split_names(drop_value, f"drop_columns ({where})") if drop_value else ()
    return Columns(keep=keep, model=model, drop=drop)
