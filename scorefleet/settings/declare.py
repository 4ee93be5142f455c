"""How a setting is declared, once: its variable, default, parser, allowed range and
meaning, on the field of the section that holds it (:mod:`.sections`).

A section is a frozen dataclass whose fields are made by :func:`var`. :func:`read`
walks a section's fields, parses each variable from the environment and collects
every problem (with the variable's name) instead of stopping at the first; the
reference table (docs/configuration.md) and ``scorefleet config`` come from the same
fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

PREFIX = "SCOREFLEET_"
T = TypeVar("T")


class ConfigError(ValueError):
    """One or more configuration variables are missing or invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid scorefleet configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


class OutOfRange(ValueError):
    pass


# ---------------------------------------------------------------------- parsers
@dataclass(frozen=True)
class Parser(Generic[T]):
    """Text of a variable -> its value. ``expected`` names what a good value is, in
    the problem reported for a bad one (``... is not <expected> (<why>)``)."""

    parse: Callable[[str], T]
    expected: str = ""

    def problem(self, env: str, value: str, exc: ValueError) -> str:
        detail = f" ({exc})" if str(exc) else ""
        return f"{env}={value!r} is not {self.expected}{detail}"


@dataclass(frozen=True)
class Number(Parser[Any]):
    """An integer or a number within [lo, hi], times ``scale`` (MB -> bytes, ...)."""

    lo: float = 0
    hi: float = 0
    integer: bool = True
    scale: float = 1

    def problem(self, env: str, value: str, exc: ValueError) -> str:
        if isinstance(exc, OutOfRange):
            return f"{env}={value!r} is out of range ({exc})"
        kind = "an integer" if self.integer else "a number"
        return f"{env}={value!r} is not {kind} ({exc})"


def number(lo: float, hi: float, *, integer: bool = True, scale: float = 1) -> Number:
    def parse(value: str) -> Any:
        n = int(value) if integer else float(value)
        if not lo <= n <= hi:
            raise OutOfRange(f"allowed range {lo:g}..{hi:g}")
        return n if scale == 1 else int(n * scale)

    return Number(parse, "", lo, hi, integer, scale)


@dataclass(frozen=True)
class Located(Parser[Any]):
    """A problem reported as ``VAR=value: why`` (S3 URIs say what is wrong themselves)."""

    def problem(self, env: str, value: str, exc: ValueError) -> str:
        return f"{env}={value!r}: {exc}"


def text(value: str) -> str:
    return value


def flag(value: str) -> bool:
    v = value.lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off"}:
        return False
    raise ValueError("use true or false")


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in options:
            raise ValueError("one of " + ", ".join(options))
        return value.lower()

    return parse


_NAME = re.compile(r"^[a-z][a-z0-9-]*\Z", re.ASCII)


def lower_name(value: str) -> str:
    """A name of lowercase letters, digits and '-' (given in any case)."""
    lowered = value.strip().lower()
    if not _NAME.match(lowered):
        raise ValueError("a name of lowercase letters, digits and '-'")
    return lowered


def json_or_file(value: str) -> Any:
    """JSON given inline (an object or a list), or the path of a file holding it."""
    text_ = value
    if not value.lstrip().startswith(("{", "[")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        text_ = path.read_text(encoding="utf-8")
    return json.loads(text_)


def json_value(kind: type, empty: Any) -> Callable[[str], Any]:
    """Inline JSON of ``kind`` (dict or list); ``empty`` when the variable is empty."""

    def parse(value: str) -> Any:
        if not value:
            return empty
        data = json.loads(value)
        if not isinstance(data, kind):
            raise ValueError(f"expected a JSON {'object' if kind is dict else 'list'}")
        return data

    return parse


def nearest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name closest to ``name`` (difflib), if one is at least that close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_key(key: str, known: Iterable[str], what: str = "key") -> str:
    """The problem of a key nobody reads (a typo, or an option of a newer version),
    naming the nearest known one (difflib): ``unknown key 'comand': did you mean
    'command'?``, or, when none is close, the nearest and every known one."""
    names = sorted(set(known))
    close = nearest(key, names)
    if close:
        return f"unknown {what} {key!r}: did you mean {close!r}?"
    far = nearest(key, names, cutoff=0.0)
    hint = f"the nearest is {far!r}; " if far else ""
    return f"unknown {what} {key!r} ({hint}known: {', '.join(names)})"


def comma_list(check: Callable[[str], str] | None = None) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(n.strip() for n in value.split(",") if n.strip())
        return tuple(check(n) for n in items) if check else items

    return parse


# ------------------------------------------------------------------ declaration
@dataclass(frozen=True)
class Variable:
    """One environment variable, as the reference table shows it."""

    name: str  # without the SCOREFLEET_ prefix
    default: str | None
    help: str
    required: bool = False
    parser: Parser[Any] = Parser(text)
    #: the name ``scorefleet config`` shows (the setting's), if not name.lower()
    key: str = ""

    @property
    def env(self) -> str:
        return PREFIX + self.name

    @property
    def shown_as(self) -> str:
        return self.key or self.name.lower()


def var(
    name: str,
    default: str | None,
    help: str,
    parser: Parser[Any] | Callable[[str], Any] = text,
    *,
    expected: str = "",
    required: bool = False,
    key: str = "",
) -> Any:
    """A section field read from ``SCOREFLEET_<name>`` (``default`` when it is empty;
    None: no default). ``parser`` turns the text into the value, raising ValueError;
    a plain function is wrapped with ``expected`` for its problem messages."""
    if not isinstance(parser, Parser):
        parser = Parser(parser, expected)
    elif expected:
        parser = dataclasses.replace(parser, expected=expected)
    variable = Variable(name, default, help, required, parser, key)
    return dataclasses.field(metadata={"variable": variable})


def variables(section: type) -> Iterator[tuple[str, Variable]]:
    """(field name, variable) of a section, in declaration order."""
    for f in dataclasses.fields(section):
        variable = f.metadata.get("variable")
        if isinstance(variable, Variable):
            yield f.name, variable


class Reader:
    """Reads sections from an environment, collecting problems."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, variable: Variable) -> str:
        value = self.environ.get(variable.env, "").strip()
        if not value:
            if variable.required:
                self.problems.append(f"{variable.env} is required: {variable.help}")
            return variable.default or ""
        return value

    def given(self, variable: Variable) -> bool:
        return bool(self.environ.get(variable.env, "").strip())

    def values(self, section: type) -> dict[str, Any]:
        """{field: parsed value, or None where it is bad (and a problem recorded)}."""
        out: dict[str, Any] = {}
        for name, variable in variables(section):
            value = self.raw(variable)
            try:
                out[name] = variable.parser.parse(value)
            except ValueError as exc:
                self.problems.append(variable.parser.problem(variable.env, value, exc))
                out[name] = None
        return out
