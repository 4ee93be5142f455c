"""Whether a CSV file's first record is a header row: the rule, stated once.

``csv_header`` (a file's tag, the image's catalog entry, or ``SCOREFLEET_CSV_HEADER``
for the whole stack, first that is set) says ``present`` or ``absent``; ``auto`` (the
default) applies this rule to the first record and the records below it in the
file's first 64 KiB (at most :data:`SAMPLE_RECORDS`), cell by cell, each cell
stripped of spaces:

* a *number* is a decimal number in ASCII digits (``-1``, ``2.50``, ``1e-3``; not
  ``nan``, ``inf``, ``1_000`` or other scripts' digits); a *name* looks like a
  column name: a letter or ``_`` first, then letters, digits, ``_``, ``.`` or ``-``
  (no space); anything else non-empty is *text*.

1. **Header** if a column whose cells below are numbers has a first cell that is
   not a number (``id`` over ``1, 2, 3``; a column named ``nan``).
2. **Header** if the first record is ``0,1,...,n-1`` (pandas' default column names,
   ``DataFrame(array).to_csv(index=False)``): with three columns or more, or over
   cells that are not all integers.
3. **Header** if every first cell is a name and, in some column, no cell below is
   (``sentence`` over English sentences).
4. **Data** if the first record has a number over numbers, and each of its other
   cells is empty, a number, or text (not a name) over a column that has text (the
   first of many rows of numbers; ``"Ann Lee",31``; ``1,2,3`` over ``4,5,x``).
5. Otherwise scorefleet cannot tell, and says so in the ``.error`` instead of
   guessing: a name over names (``region`` over ``north``, ``bob`` over ``ann``) may be
   a header or the first value, and a header of numbers over numbers (``2024`` over
   ``3``) looks like data. ``csv_header=present|absent`` settles it.

A header can therefore never be scored as a data row without an ``.error``, nor a
first data row silently taken for a header, except by rules 2 and 3, which a
file's first data row would have to match exactly (docs/formats.md).
"""

from __future__ import annotations

import csv
import io
import re

from scorefleet.errors import BadInput

#: Records below the first one that the rule looks at.
SAMPLE_RECORDS = 100
#: How a file says its header (tag and catalog ``csv_header``, SCOREFLEET_CSV_HEADER).
MODES = ("auto", "present", "absent")

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_NAME = re.compile(r"[^\W\d]\w*(?:[.\-]\w+)*\Z")

EMPTY, NUMBER, NAME, TEXT = "empty", "number", "name", "text"


def kind(cell: str) -> str:
    """What a cell looks like to the rule: empty, a number, a name, or text."""
    cell = cell.strip()
    if not cell:
        return EMPTY
    if _NUMBER.match(cell):
        return NUMBER
    if _NAME.match(cell):
        return NAME
    return TEXT


def has_header(first: list[str], below: list[list[str]]) -> bool | None:
    """The rule (module docstring) on a first record and the records below it: True
    (a header), False (data), or None (it cannot tell)."""
    width = len(first)
    columns: list[set[str]] = [set() for _ in range(width)]
    for record in below:
        for j, cell in enumerate(record[:width]):
            columns[j].add(kind(cell))
    seen = [c - {EMPTY} for c in columns]
    mine = [kind(c) for c in first]
    if any(s == {NUMBER} and k in (NAME, TEXT) for s, k in zip(seen, mine, strict=True)):
        return True  # 1. a name over numbers
    if width >= 2 and [c.strip() for c in first] == [str(i) for i in range(width)]:
        ints = all(_INTEGER.match(c.strip()) for r in below for c in r[:width] if c.strip())
        if width >= 3 or not ints:
            return True  # 2. pandas' default names
        return None
    if not below:  # one record: numbers are a row, anything else a header
        return not all(k in (NUMBER, EMPTY) for k in mine)
    if all(k in (NAME, EMPTY) for k in mine) and any(
        s and NAME not in s for s in seen
    ):  # 3. names over text
        return True
    numbers = [s == {NUMBER} and k == NUMBER for s, k in zip(seen, mine, strict=True)]
    like = [
        k in (EMPTY, NUMBER) or (k == TEXT and TEXT in s) for s, k in zip(seen, mine, strict=True)
    ]
    if any(numbers) and all(like):
        return False  # 4. a row like the rows below it
    return None


def detect_header(first: bytes, sample: bytes, line: int = 1) -> bool:
    """Apply the rule to ``first`` (the first record, as bytes) and the records after
    it in ``sample`` (the file's first bytes, ``first`` included); :class:`BadInput`
    when it cannot tell (``line``: the first record's line, for the message)."""
    fields = _fields(first)
    rest = sample[len(first) :]
    cut = rest.rfind(b"\n") + 1  # whole records only
    below: list[list[str]] = []
    try:
        text = rest[:cut].decode("utf-8", errors="replace")
        for record in csv.reader(io.StringIO(text, newline="")):
            if record and record != [""]:
                below.append(record)
            if len(below) >= SAMPLE_RECORDS:
                break
    except csv.Error:
        pass
    found = has_header(fields, below)
    if found is not None:
        return found
    shown = first.decode("utf-8", errors="replace").rstrip("\r\n")
    shown = shown if len(shown) <= 120 else shown[:120] + "..."
    hint = ""
    if shown.lstrip().startswith("{"):
        hint = " (it looks like JSON Lines: name it .jsonl or tag it content_type=jsonl)"
    elif len(fields) == 1 and any(sep in shown for sep in (";", "\t", "|")):
        hint = " (is the file separated by ';', tabs or '|'? commas are expected)"
    raise BadInput(
        f"scorefleet cannot tell whether the first row (line {line}: {shown!r}) is a header "
        f"or data{hint}: say which with the tag csv_header=present or csv_header=absent "
        "(or csv_header in the image's catalog entry; SCOREFLEET_CSV_HEADER for the whole "
        "stack). The rule: docs/formats.md, 'CSV header'"
    )


def _fields(record: bytes) -> list[str]:
    text = record.decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        return next(csv.reader([text]), [""])
    except csv.Error:
        return text.split(",")
