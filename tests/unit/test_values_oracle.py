"""The values oracle (issue 24): a property-based differential test of the whole data
path. Random tables of adversarial values, in every input format (CSV, JSON Lines,
Parquet; the streamed ones plain or compressed), every output format, every column
choice (none, kept columns, kept ``*``, chosen model columns), through the real
readers, writers and protocol clients to an echo model of each protocol family on
loopback (CSV-speaking: the SageMaker contract; JSON-speaking: the ``json``
protocol). What the model receives and what the output keeps equal each input value
as the format's reference reader reads it (csv, json, pyarrow), by the crossing
rules of docs/formats.md "Values" (tests/helpers/oracle.py); or the file gets an
error that names the row (line) and the column, for the inputs that may have one.

Examples: the ``values-ci`` Hypothesis profile in CI (``ORACLE_EXAMPLES``, default
600, about 13 s), ``SCOREFLEET_ORACLE_PROFILE=values-long`` for a longer local run
(20,000, about 9 min; with ``--timeout=0``); the seed corpus of the issue's cases is
run each time (``@example``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scorefleet.errors import BadInput, RowsRefused
from scorefleet.settings import ModelSpec
from tests.helpers.oracle import (
    Echo,
    echo_server,
    json_means,
    json_requests,
    read_output,
    received,
    reference,
    same,
    text_means,
)
from workers.scoring.engine import score_stream
from workers.scoring.formats import FORMATS, Columns, ReadLimits, ranged_reader, stream_reader
from workers.scoring.formats.compression import Limits, decompress
from workers.scoring.formats.select import plan
from workers.scoring.protocols import CallLimits
from workers.scoring.protocols.json_http import JsonProtocol
from workers.scoring.protocols.sagemaker import SageMakerProtocol
from workers.scoring.values import cell_text

settings.register_profile(
    "values-ci",
    max_examples=int(os.environ.get("ORACLE_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("CI") == "true",
)
settings.register_profile(
    "values-long",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(os.environ.get("SCOREFLEET_ORACLE_PROFILE", "values-ci"))

# ------------------------------------------------------------------ values
BIG = [2**63 - 1, -(2**63 - 1), -(2**63), 2**53 + 1, -(2**53 + 1), 2**53, 0, -1]
FLOATS = [0.1, -0.0, 0.0, 1e300, 5e-324, 0.30000000000000004, 1.7976931348623157e308, 2.5]
LOOKALIKES = [
    "", "007", "1_000", "1e5", "-0", "+5", " 12", "12 ", "١٢", "１２", "0x10", "1.50",
    "2026-03-02T11:30:00+02:00", "2026-03-02", "2026-03-02 11:30:00", "11:30", "true", "false",
    "TRUE", "null", "NULL", "None", "NA", "n/a", "nan", "NaN", "-inf", "Infinity", "9007199254741227",
    'say "hi"', '"', '""', "a,b", ",", "line\nbreak", "cr\rhere", "crlf\r\nend", "\r", "\n",
    "tab\there", "\ufeffbom", "é", "中文", "😀", " lead", "trail ", "\\", "{}", "[1]",
]  # fmt: skip
#: any text but lone surrogates (not UTF-8) and control characters other than tab, CR,
#: LF (a file of 5 % control bytes is taken for binary data: workers/scoring/formats/magic.py)
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\r\n"),
    max_size=12,
)
STRINGS = st.one_of(st.sampled_from(LOOKALIKES), TEXT)
INTS = st.one_of(st.sampled_from(BIG), st.integers(-(2**63) + 1, 2**63 - 1))
FINITE = st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=False, allow_infinity=False))
KINDS = ("int", "float", "str", "bool")


@dataclass
class Case:
    """One file and how it is scored."""

    fmt: str  # csv | jsonl | parquet
    names: list[str]
    kinds: list[str]  # per column; "a/b": kind a in the first half of the rows, b after
    rows: list[list[Any]]
    out: str
    family: str  # csv | json
    choice: str  # none | keep | all | model
    compression: str = ""
    max_bytes: int = 2000
    crlf: bool = False
    bom: bool = False
    nulls: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def value(kind: str, draw: Any, fmt: str, nulls: bool) -> Any:
    if nulls and fmt != "csv" and draw(st.integers(0, 9)) == 0:
        return None
    if kind == "int":
        return draw(INTS)
    if kind == "float":
        if fmt == "parquet" and draw(st.integers(0, 15)) == 0:
            return draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return draw(FINITE)
    if kind == "bool":
        return draw(st.booleans())
    return draw(STRINGS)


def cell(v: Any) -> str:
    """A value as a CSV file's cell text."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@st.composite
def cases(draw: Any) -> Case:
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet"]))
    width = draw(st.integers(1, 4))
    names = [f"c{i}{draw(st.sampled_from(['', ',x', ' y', 'é', '.z']))}" for i in range(width)]
    kinds = []
    for _ in range(width):
        kind = draw(st.sampled_from(KINDS))
        if fmt != "parquet" and draw(st.integers(0, 5)) == 0:
            kind += "/" + draw(st.sampled_from(KINDS))  # changes kind half way
        kinds.append(kind)
    n = draw(st.integers(1, 40))
    nulls = draw(st.booleans())
    rows = []
    for i in range(n):
        row = []
        for kind in kinds:
            k = kind.split("/")[0 if i < n // 2 or "/" not in kind else 1]
            v = value(k, draw, fmt, nulls)
            row.append(cell(v) if fmt == "csv" else v)
        rows.append(row)
    streamed = fmt != "parquet"
    return Case(
        fmt=fmt,
        names=names,
        kinds=kinds,
        rows=rows,
        out=draw(st.sampled_from(["csv", "jsonl", "parquet"])),
        family=draw(st.sampled_from(["csv", "json"])),
        choice=draw(st.sampled_from(["none", "keep", "all", "model"])),
        compression=draw(st.sampled_from(["", "gz", "bz2", "xz", "zst"])) if streamed else "",
        max_bytes=draw(st.integers(200, 3000)),
        crlf=draw(st.booleans()),
        bom=draw(st.booleans()) and fmt == "csv",
        nulls=nulls,
        extra={"row_group": draw(st.integers(1, 20)), "ascii": draw(st.booleans())},
    )


# ------------------------------------------------------------------ files
def file_bytes(case: Case) -> bytes:
    """The case as its format writes it (plain)."""
    if case.fmt == "csv":
        end = "\r\n" if case.crlf else "\n"
        text = "".join(csv_line(r) + end for r in [case.names, *case.rows])
        return ("\ufeff" if case.bom else "").encode() + text.encode("utf-8")
    if case.fmt == "jsonl":
        ascii_only = bool(case.extra.get("ascii"))
        return b"".join(
            json.dumps(dict(zip(case.names, r, strict=True)), ensure_ascii=ascii_only).encode()
            + (b"\r\n" if case.crlf else b"\n")
            for r in case.rows
        )
    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
    table = pa.table(
        {
            n: pa.array([r[j] for r in case.rows], types[k])
            for j, (n, k) in enumerate(zip(case.names, case.kinds, strict=True))
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=int(case.extra.get("row_group", 5)))
    return buf.getvalue()


def csv_line(fields: list[str]) -> str:
    """One record, a field quoted when it holds a comma, a quote, CR or LF (Python's
    csv.writer leaves a CR unquoted unless it is in its line terminator, which its
    own reader then reads as a line end), or is the only, empty, field."""

    def one(f: str) -> str:
        if any(c in f for c in ',"\r\n') or (f == "" and len(fields) == 1):
            return '"' + f.replace('"', '""') + '"'
        return f

    return ",".join(one(f) for f in fields)


def compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "zst":
        from workers.scoring.formats.compression import _zstd_module

        return bytes(_zstd_module().compress(data))
    return data


def columns_of(case: Case, rnd: random.Random) -> Columns:
    names = case.names
    if case.choice == "keep":
        return Columns(keep=(rnd.choice(names),))
    if case.choice == "all":
        return Columns(keep=("*",))
    if case.choice == "model":
        model = tuple(rnd.sample(names, rnd.randint(1, len(names))))
        return Columns(keep=(rnd.choice(names),), model=model)
    return Columns()


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    yield from echo_server()


def protocol(case: Case, echo: Echo) -> Any:
    url = f"http://127.0.0.1:{echo.port}"
    limits = CallLimits(timeout=20, attempts=1)
    if case.family == "csv":
        return SageMakerProtocol(url, ModelSpec(image="t/echo:1"), limits)
    options = {"path": "/predict", "instances_as": "objects"}
    extra = JsonProtocol.as_entry(options)
    return JsonProtocol(url, ModelSpec(image="t/echo:1", protocol="json", extra=extra), limits)


# ------------------------------------------------------------------ rules
def mixed(case: Case) -> list[str]:
    """Columns whose kind changes (numbers are one kind: int/float is not mixed)."""
    group = {"int": "number", "float": "number", "str": "str", "bool": "bool"}
    return [
        n
        for n, k in zip(case.names, case.kinds, strict=True)
        if len({group[x] for x in k.split("/")}) > 1
    ]


def may_fail(case: Case, message: str) -> bool:
    """Whether this file may end in an .error, and this one names what it must."""
    named = [n for n in case.names if repr(n) in message]
    if case.fmt == "jsonl" and "line " in message:
        numbers = [
            n
            for n, k in zip(case.names, case.kinds, strict=True)
            if set(k.split("/")) == {"int", "float"}
        ]
        if any(n in named for n in mixed(case)):
            return True
        if "holds the integer" in message and any(n in named for n in numbers):
            return True
        lowest = [n for j, n in enumerate(case.names) if any(r[j] == -(2**63) for r in case.rows)]
        if "holds the integer -9223372036854775808" in message and lowest:
            return True  # pyarrow's JSON reader takes -2**63 for a double
    if "holds an infinity" in message and case.family == "json" and named:
        return case.fmt == "parquet" and "data row " in message
    if case.out == "parquet" and "changed type in data rows" in message:
        numbers = any(set(k.split("/")) == {"int", "float"} for k in case.kinds)
        return case.fmt == "csv" or case.family == "csv" or bool(mixed(case)) or numbers
    return False


def sent_ok(case: Case, v: Any, got: Any) -> bool:
    if case.fmt == "csv":
        return got == v if case.family == "csv" else json_means(got, v)
    if case.family == "csv":
        return text_means(got, v)
    if isinstance(v, float) and math.isnan(v):
        return got is None  # NaN goes to JSON as null
    return same(got, v)


def kept_ok(case: Case, v: Any, out: Any) -> bool:
    if case.fmt == "csv":
        return isinstance(out, str) and out == v
    if case.out == "csv":
        return text_means(out, v)
    if case.out == "jsonl" and isinstance(v, float) and not math.isfinite(v):
        return out is None  # JSON has no NaN or infinity: null (docs/formats.md)
    return same(out, v)


def answer_ok(case: Case, got: Any, out: Any, exact_as_text: bool) -> bool:
    """``exact_as_text``: the answer column holds an integer beyond 2**53 beside a
    fraction, which no Arrow number type holds: written as its JSON text."""
    if case.family == "csv":  # got: the CSV text the model answered
        return out == got if case.out == "csv" else json_means(out, got)
    if case.out == "csv":
        return text_means(out, got)
    if (exact_as_text or case.out == "parquet") and isinstance(out, str) and got is not None:
        # a number beside a fraction beyond doubles; in Parquet, a value of a column the
        # first rows made text: its JSON text, exactly (docs/formats.md "Values")
        return out == (got if isinstance(got, str) else cell_text(got))
    return same(out, got)


def beyond_doubles(values: list[Any]) -> bool:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return any(isinstance(v, float) for v in numbers) and any(
        isinstance(v, int) and abs(v) > 2**53 for v in numbers
    )


def check(case: Case, echo: Echo, seed: int) -> None:
    plain = file_bytes(case)
    names, ref = reference(plain, case.fmt)
    assert names == case.names and len(ref) == len(case.rows)
    columns = columns_of(case, random.Random(seed))
    p = plan(columns, names)
    longest = max(len(line) for line in plain.split(b"\n"))
    lim = ReadLimits(max(case.max_bytes, 4 * longest + 600), 1 << 30, "present")
    fmt = FORMATS[case.fmt]
    data = compress(plain, case.compression)
    if fmt.ranged is not None:
        reader = ranged_reader(fmt, io.BytesIO(data), columns, lim, size=len(data))
    else:
        chunks = [data[i : i + 251] for i in range(0, len(data), 251)]
        reader = stream_reader(fmt, decompress(chunks, Limits(1 << 30, 10**6)), columns, lim)
    echo.clear()
    proto = protocol(case, echo)
    sink = io.BytesIO()
    try:
        score_stream(reader, proto.score, sink, FORMATS[case.out], max_in_flight=1)
    except (BadInput, RowsRefused) as exc:
        assert may_fail(case, str(exc)), f"{type(exc).__name__}: {exc}"
        return
    finally:
        proto.close()
    model, keep = list(p.model), list(p.keep)
    got = received(echo, case.family, model)
    assert len(got) == len(ref), "the model was not sent one row per input row"
    for i, r in enumerate(ref):
        for j, m in enumerate(model):
            assert sent_ok(case, r[m], got[i][j]), ("sent", i + 1, m, r[m], got[i][j])
    if case.family == "json" and case.fmt == "csv":  # one type per column per request
        for request in json_requests(echo, model):
            for col in zip(*request, strict=True):
                kinds = {type(v) is str for v in col if v is not None}
                assert len(kinds) <= 1, ("a column sent as text and numbers at once", col)
    _, rows = read_output(sink.getvalue(), case.out)
    if case.out == "csv" and (keep or case.family == "json"):
        rows = rows[1:]  # its header
    assert len(rows) == len(ref), "the output does not hold one row per input row"
    wide = [beyond_doubles([g[j] for g in got]) for j in range(len(model))]
    for i, r in enumerate(ref):
        for k, name in enumerate(keep):
            assert kept_ok(case, r[name], rows[i][k]), ("kept", i + 1, name, r[name], rows[i][k])
        for j, m in enumerate(model):
            out = rows[i][len(keep) + j]
            ok = answer_ok(case, got[i][j], out, wide[j])
            assert ok, ("answer", i + 1, m, got[i][j], out)


# ------------------------------------------------------------------ seeds
def seed_case(fmt: str, kinds: list[str], rows: list[list[Any]], **kw: Any) -> Case:
    base: dict[str, Any] = {"out": "jsonl", "family": "json", "choice": "all", "max_bytes": 200}
    names = [f"c{i}" for i in range(len(kinds))]
    return Case(fmt=fmt, names=names, kinds=kinds, rows=rows, **{**base, **kw})


SEEDS = [
    # 64-bit ids across mini-batches (defect 1), to every output and both families
    *[
        seed_case("jsonl", ["int"], [[v] for v in BIG * 8], out=o, family=f)
        for o in ("jsonl", "parquet", "csv")
        for f in ("json", "csv")
    ],
    # strings that look like dates, and a later "n/a" (defect 2)
    seed_case("jsonl", ["str"], [["2026-03-02T11:30:00+02:00"]] * 30 + [["n/a"]], out="parquet"),
    # CSV text that only looks like numbers, to a JSON model (defect 5), kept and sent
    seed_case("csv", ["str", "str"], [[t, "1"] for t in LOOKALIKES], choice="model"),
    seed_case("csv", ["str"], [[t] for t in LOOKALIKES], family="csv", out="parquet", crlf=True),
    # floats of 17 significant digits, -0.0, extremes; NaN and infinities in Parquet
    seed_case("parquet", ["float"], [[v] for v in FLOATS], out="csv", family="csv"),
    seed_case("parquet", ["float"], [[v] for v in [*FLOATS, float("nan")]], out="jsonl"),
    seed_case("parquet", ["float", "int"], [[float("inf"), 1]], family="json"),
    # quotes, commas, CR, LF, tabs, BOMs, non-ASCII, in every format
    *[
        seed_case(fmt, ["str", "str"], [[t, t[::-1]] for t in LOOKALIKES], out=o, bom=fmt == "csv")
        for fmt in ("csv", "jsonl", "parquet")
        for o in ("csv", "jsonl")
    ],
    # one column's kind changing across mini-batches: numbers, then text
    seed_case("csv", ["int/str"], [[str(i)] for i in range(30)] + [["n/a"]] * 30, out="parquet"),
    seed_case("jsonl", ["int/str"], [[i] for i in range(30)] + [["n/a"]] * 30),
    seed_case("jsonl", ["int/float"], [[2**53 + 1]] * 20 + [[2.5]] * 20, out="parquet"),
    # empty strings and nulls, booleans, a compressed stream
    seed_case("jsonl", ["str", "bool"], [["", None], [None, True], ["", False]] * 9, out="parquet"),
    seed_case("jsonl", ["int", "str"], [[i, "x"] for i in range(50)], compression="gz"),
    seed_case("csv", ["str"], [[""], ["a"], [""]] * 10, family="csv", choice="none", out="csv"),
]


def with_seeds(test: Any) -> Any:
    for case in SEEDS:
        test = example(case=case, seed=0)(test)
    return test


@settings(PROFILE)
@with_seeds
@given(case=cases(), seed=st.integers(0, 2**32 - 1))
def test_values_come_out_as_they_went_in(echo: Echo, case: Case, seed: int) -> None:
    check(case, echo, seed)
