"""Issue 24's cases of the bad-input corpus (tests/e2e/test_bad_input_corpus.py): the
value defects and their families, each ending in a correct .scoreout or an .error
whose text says what to do. (key, body, tags, expect) as the corpus's Case takes them."""

from __future__ import annotations

import io
import json
from typing import Any

HASH = {"model_image": "test/hash:1"}
SENTENCES = (
    b'sentence\n"Home went, the and early to school park."\nEarly to john the went park dog '
    b'ran.\n"John dog mary and, went and home john."\nLeft a school early left went ran.\n'
    b'Sue cat to and dog ran and left.\n"The, school a john left ran ran and."\nPark park '
    b"early left.\nSue to late park the left and.\n"
)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _binary_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2], "b": pa.array([b"ok", b"\xff\xfe"], pa.binary())})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


VALUE_CASES: list[tuple[str, bytes, dict[str, str], str]] = [
    (
        "v/ragged-balanced.csv",
        b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n",
        HASH,
        "error:data row 2 (line 3) has 2 fields, the header has 3; every row needs the same",
    ),
    (
        "v/ragged-quoted.csv",
        b'a,b,c\n1,"2,x",3\n4,5\n6,7,8,9\n',
        HASH,
        "error:data row 2 (line 3) has 2 fields",
    ),
    ("v/cr-only.csv", b"a,b\r1,2\r3,4\r", HASH, "error:save it with LF or CRLF line ends"),
    (
        "v/lone-cr.csv",
        b"a,b\n1,2\n3\r,4\n",
        HASH,
        "error:data row 2 (line 3) has a carriage return (CR) that does not end its line",
    ),
    (
        "v/nul-after-64k.csv",
        b"a,b\n" + b"1,2\n" * 20000 + b"3,\x004\n",
        HASH,
        "error:data row 20001 (line 20002) holds a NUL byte",
    ),
    (
        "v/header-or-data.csv",
        b"region,2024,2025\nnorth,1.5,2.0\nsouth,2.5,3.0\n",
        HASH,
        "error:tag csv_header=present or csv_header=absent",
    ),
    (
        "v/header-said.csv",
        b"region,2024,2025\nnorth,1.5,2.0\nsouth,2.5,3.0\n",
        {**HASH, "csv_header": "present"},
        "rows:2",
    ),
    (
        "v/header-said-absent.csv",
        b"1bob,paris\n2ann,london\n",  # (the hash model takes a first cell of a letter for a header)
        {**HASH, "csv_header": "absent"},
        "rows:2",
    ),
    (
        "v/header-bad-word.csv",
        b"a,b\n1,2\n",
        {**HASH, "csv_header": "sometimes"},
        "error:the csv_header tag must be one of auto, present, absent",
    ),
    ("v/header-named-nan.csv", b"nan,x\n1,2\n3,4\n", HASH, "rows:2"),
    ("v/one-text-column.csv", SENTENCES, HASH, "rows:8"),
    (
        "v/semicolons.csv",
        b"name;city\nbob;paris\n",
        HASH,
        "error:is the file separated by ';', tabs or '|'? commas are expected",
    ),
    (
        "v/ids.jsonl",
        _jsonl([{"id": 9007199254741227 + 3 * i, "x": 0.5} for i in range(400)]),
        {**HASH, "keep_columns": "id", "drop_columns": "id"},
        "ids:9007199254741227",
    ),
    (
        "v/dates-then-na.jsonl",
        _jsonl([{"t": "2026-03-02T11:30:00+02:00"}] * 3000 + [{"t": "n/a"}]),
        HASH,
        "rows:3001",
    ),
    (
        "v/nan-literal.jsonl",
        b'{"a": 1}\n{"a": NaN}\n',
        HASH,
        "error:line 2 holds NaN, which is not a JSON number: write null",
    ),
    ("v/key-twice.jsonl", b'{"a": 1, "a": 2}\n', HASH, "error:line 1 has the key 'a' twice"),
    (
        "v/id-beside-fraction.jsonl",
        b'{"a": 9007199254740993}\n{"a": 2.5}\n',
        HASH,
        "error:write such ids as strings",
    ),
    (
        "v/number-too-big.jsonl",
        b'{"a": 1e400}\n',
        HASH,
        "error:line 1 cannot be read: Number too big",
    ),
    (
        "v/binary-column.parquet",
        _binary_parquet(),
        HASH,
        "error:data row 2, column 'b' holds bytes that are not UTF-8 text",
    ),
]
