"""What a contract is (:class:`Contract`, its :class:`Column` s and their types), and
the catalog's ``inputs`` that declares one (checked at start-up by
:func:`catalog_problems`, through :mod:`workers.catalog`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scorefleet.settings.declare import unknown_key

#: The types a contract's column may have, and how messages name them.
TYPES: dict[str, str] = {
    "any": "any value",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "text",
    "datetime": "a date-time",
    "binary": "bytes",
}
#: Other names of the types (MLflow's, Arrow's, common ones), lower case.
TYPE_ALIASES: dict[str, str] = {
    **{n: "number" for n in ("double", "float", "float32", "float64", "decimal", "numeric")},
    **{n: "integer" for n in ("int", "long", "int32", "int64", "short")},
    "bool": "boolean",
    **{n: "string" for n in ("str", "text", "utf8")},
    "timestamp": "datetime",
    "bytes": "binary",
}
#: The catalog key this module reads (workers/catalog.py asks).
CATALOG_KEYS = ("inputs",)
#: The options of ``inputs``, and of each of its ``columns``.
INPUT_OPTIONS = frozenset({"columns", "mlflow", "closed", "ordered"})
COLUMN_OPTIONS = frozenset({"name", "type", "required", "nullable"})


def type_named(value: Any, what: str) -> str:
    """A contract type from its name or an alias; ValueError listing the types."""
    name = str(value).strip().lower() if isinstance(value, str) else ""
    name = TYPE_ALIASES.get(name, name)
    if name not in TYPES:
        raise ValueError(f"{what} must be one of {', '.join(TYPES)}, not {value!r}")
    return name


@dataclass(frozen=True)
class Column:
    """One input of a model."""

    name: str  # "" for a column known by its position only (a tensor's)
    type: str = "any"
    required: bool = True
    nullable: bool = True

    def shown(self) -> str:
        flags = [] if self.required else ["optional"]
        if not self.nullable:
            flags.append("no empty value")
        extra = f", {', '.join(flags)}" if flags else ""
        return f"{self.name or '(by position)'} ({self.type}{extra})"


@dataclass(frozen=True)
class Contract:
    """What a model takes, and where that is said (:attr:`source`, for messages)."""

    columns: tuple[Column, ...]
    #: other columns than these are refused
    closed: bool = False
    #: the model reads its columns by position: the file's must come in this order
    ordered: bool = False
    #: the columns have no names (a tensor): they are matched by position
    positional: bool = False
    #: where the contract comes from ("the model catalog's inputs for reg/iris:1")
    source: str = ""
    #: what to change on the model's side when the model does take such files
    remedy: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": [
                {"name": c.name, "type": c.type, "required": c.required, "nullable": c.nullable}
                for c in self.columns
            ],
            "closed": self.closed,
            "ordered": self.ordered,
            "positional": self.positional,
            "source": self.source,
            "remedy": self.remedy,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Contract:
        return cls(
            columns=tuple(
                Column(
                    name=str(c.get("name", "")),
                    type=type_named(c.get("type", "any"), "type"),
                    required=bool(c.get("required", True)),
                    nullable=bool(c.get("nullable", True)),
                )
                for c in data.get("columns") or []
            ),
            closed=bool(data.get("closed")),
            ordered=bool(data.get("ordered")),
            positional=bool(data.get("positional")),
            source=str(data.get("source", "")),
            remedy=str(data.get("remedy", "")),
        )


# --------------------------------------------------------------------- the catalog
def _flag(raw: Mapping[str, Any], key: str, where: str = "") -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{where}{key} must be true or false, not {value!r}")
    return value


def _column(raw: Any, i: int) -> Column:
    where = f"columns[{i}]"
    if isinstance(raw, str) and raw:
        return Column(name=raw)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a column name or an object {{'name': ..., 'type': ...}}")
    unknown = sorted(set(raw) - COLUMN_OPTIONS)
    if unknown:
        raise ValueError(
            f"{where}: " + "; ".join(unknown_key(k, COLUMN_OPTIONS, "option") for k in unknown)
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name is required (the column's name)")
    return Column(
        name=name,
        type=type_named(raw.get("type", "any"), f"{where}.type"),
        required=_flag(raw, "required", f"{where}.") if "required" in raw else True,
        nullable=_flag(raw, "nullable", f"{where}.") if "nullable" in raw else True,
    )


def parse_inputs(raw: Any) -> Mapping[str, Any]:
    """The catalog's ``inputs`` checked (ValueError naming the option): exactly one of
    ``columns`` (a list) and ``mlflow`` (where an MLmodel file is), and the flags."""
    if not isinstance(raw, Mapping):
        raise ValueError('expected an object, e.g. {"columns": [{"name": "x", "type": "number"}]}')
    unknown = sorted(set(raw) - INPUT_OPTIONS)
    if unknown:
        raise ValueError("; ".join(unknown_key(k, INPUT_OPTIONS, "option") for k in unknown))
    if ("columns" in raw) == ("mlflow" in raw):
        raise ValueError("give either columns (the model's columns) or mlflow (its MLmodel file)")
    if "columns" in raw:
        cols = raw["columns"]
        if not isinstance(cols, list) or not cols:
            raise ValueError("columns must be a list of the model's columns")
        parsed = [_column(c, i) for i, c in enumerate(cols)]
        names = [c.name for c in parsed]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"columns names {dup!r} twice")
    else:
        ref = raw["mlflow"]
        if not isinstance(ref, str) or not ref.strip():
            raise ValueError(
                "mlflow must be where the model's MLmodel file is: a path (or its folder), "
                "or an s3:// URI"
            )
    _flag(raw, "closed")
    _flag(raw, "ordered")
    return raw


def catalog_problems(entry: Mapping[str, Any]) -> list[str]:
    """What is wrong with an entry's ``inputs``, each naming it."""
    if "inputs" not in entry:
        return []
    try:
        parse_inputs(entry["inputs"])
    except ValueError as exc:
        return [f"inputs: {exc}"]
    return []


def declared(image: str, raw: Mapping[str, Any]) -> Contract:
    """The contract of an entry's ``inputs`` that lists its ``columns``."""
    parse_inputs(raw)
    return Contract(
        columns=tuple(_column(c, i) for i, c in enumerate(raw["columns"])),
        closed=bool(raw.get("closed")),
        ordered=bool(raw.get("ordered")),
        source=f"the model catalog's inputs for {image}",
        remedy=f"change inputs in the model catalog's entry for {image} (SCOREFLEET_MODEL_CATALOG)",
    )


def with_flags(contract: Contract, raw: Mapping[str, Any]) -> Contract:
    """``contract`` with the catalog's ``closed`` / ``ordered`` where it gives them."""
    if "closed" in raw:
        contract = replace(contract, closed=bool(raw["closed"]))
    if "ordered" in raw:
        contract = replace(contract, ordered=bool(raw["ordered"]))
    return contract
