"""Split a streamed CSV file into line-aligned mini-batches of bounded size.

The input arrives as byte chunks (from S3) and leaves as :class:`CsvChunk` objects
whose payload, header included, never exceeds ``max_bytes`` (SageMaker's
MaxPayloadInMB idea). Records are never split: a newline inside a quoted field
is not a record boundary. Along the way the input is checked for what a model
would choke on or silently mis-score: empty file, header without rows, bytes that
are not UTF-8, an unterminated quoted field, a single record larger than a batch.
Blank lines are dropped; a UTF-8 byte-order mark is removed. Compressed input is
decompressed before it gets here (workers.scoring.formats.compression).

Memory: one batch plus one chunk, whatever the file size.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from scorefleet.errors import BadInput
from workers.scoring.formats.csvheader import detect_header
from workers.scoring.formats.magic import binary_problem

BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 64 * 1024
#: every byte but the comma and the newline (what is left of a record: its commas)
_NOT_SEPARATORS = bytes(b for b in range(256) if b not in b",\n")
_LONE_CR = re.compile(rb"\r(?!\n)")
_NUL_HINT = ": the file is binary or damaged here; a CSV file holds text"
_CR_HINT = (
    " that does not end its line and is outside quotes: a value holding a line break "
    "must be quoted, and lines end with LF or CRLF"
)


def where(row: int, line: int | None) -> str:
    """``data row 7``, or ``data row 7 (line 9)`` when the line number differs."""
    return f"data row {row}" + (f" (line {line})" if line is not None and line != row else "")


@dataclass(frozen=True)
class CsvChunk:
    index: int  # 0-based batch number
    first_row: int  # 1-based number of its first data row in the file
    rows: int
    data: bytes  # the records, each ending with a newline; no header
    first_line: int | None = None  # 1-based line of its first record in the file
    last_line: int | None = None  # ... and of the end of its last record
    end: int = 0  # the (decompressed) file's offset just past its last record

    @property
    def last_row(self) -> int:
        return self.first_row + self.rows - 1

    @property
    def span(self) -> str:
        """Its rows as a user reads them: ``data rows 5-9 (lines 6-12)``."""
        if self.rows == 1:
            return where(self.first_row, self.first_line)
        text = f"data rows {self.first_row}-{self.last_row}"
        if self.first_line is not None and (self.first_line, self.last_line) != (
            self.first_row,
            self.last_row,
        ):
            text += f" (lines {self.first_line}-{self.last_line})"
        return text


def keep_bom(data: bytes) -> bytes:
    """``data`` for pyarrow's CSV reader, which takes a U+FEFF starting its input for
    a byte-order mark and drops it: a value's own one (a mini-batch, an answer, whose
    first value starts with it) is kept behind a blank line that ``skip_rows=1`` skips
    (only then: ``skip_rows=int(data.startswith(BOM))``)."""
    return b"\n" + data if data.startswith(BOM) else data


def take(buf: bytearray, n: int) -> bytes:
    """Remove and return the first ``n`` bytes of ``buf``, copying them once."""
    with memoryview(buf) as view:
        out = bytes(view[:n])
    del buf[:n]
    return out


class CsvBatcher:
    """Iterate over :class:`CsvChunk` objects; :attr:`header` is known after the first.

    ``start``: a resume point (:meth:`position` of an earlier batcher of the same
    file): ``chunks`` are then the file's first ``start["head"]`` bytes (its header)
    followed by its bytes from ``start["offset"]`` on, and the batches, rows and
    lines go on from there as they did in that batcher."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        max_bytes: int,
        *,
        header_mode: str = "auto",
        send_header: bool = True,
        start: Mapping[str, Any] | None = None,
    ) -> None:
        self._chunks = iter(chunks)
        self.max_bytes = max_bytes
        self.start = start
        if start is not None:  # the header was found before: no guess this time
            header_mode = "present" if start["header"] else "absent"
        self.header_mode = header_mode
        self.send_header = send_header
        self.header: bytes | None = None  # the header record, with its newline
        self.rows = 0
        self.lines = 0  # physical lines consumed so far (header and blank lines included)
        self.fields: int | None = None  # fields per record: the header's, or the first row's
        self.bytes_in = 0  # bytes consumed from the (decompressed) stream so far
        self._buf = bytearray()
        self._eof = False
        self._plain = True  # the last scanned batch has no quote character
        #: the file's offset of its first record (past the header)
        self.data_start = 0

    # ------------------------------------------------------------------ input
    def _fill(self, want: int) -> None:
        while len(self._buf) < want and not self._eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._eof = True
                return
            self._buf += chunk
            self.bytes_in += len(chunk)

    def _offset(self) -> int:
        """The file's offset of the first byte not consumed yet."""
        consumed = self.bytes_in - len(self._buf)
        if self.start is None or consumed < int(self.start["head"]):
            return consumed
        return consumed - int(self.start["head"]) + int(self.start["offset"])

    def position(self, batch: CsvChunk) -> dict[str, Any]:
        """Where the file goes on after ``batch`` (the last one yielded), as
        ``start`` takes it."""
        return {
            "offset": batch.end,
            "head": self.data_start,
            "rows": self.rows,
            "lines": self.lines,
            "header": self.header is not None,
            "fields": self.fields,
        }

    # ------------------------------------------------------------ boundaries
    def _scan(self, limit: int) -> tuple[int, int, bool]:
        """Find the last record boundary at or before ``limit`` in the buffer.

        Returns (cut, records, has_blank): ``cut`` is the index just past the last
        complete record's newline (0 if none), ``records`` how many newline-ended
        records lie before it (blank ones included), ``has_blank`` whether one of
        them is blank.
        """
        buf = self._buf
        end = min(limit, len(buf))
        self._plain = buf.find(b'"', 0, end) < 0
        if self._plain:  # fast path: no quoting at all
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:
                return 0, 0, False
            blank = (
                buf.startswith((b"\n", b"\r\n"))
                or buf.find(b"\n\n", 0, cut) >= 0
                or buf.find(b"\n\r\n", 0, cut) >= 0
            )
            return cut, buf.count(b"\n", 0, cut), blank
        # quote-aware: a newline ends a record only when the quotes before it pair up
        pos, cut, records, blank, in_quotes = 0, 0, 0, False, False
        while True:
            nl = buf.find(b"\n", pos, end)
            if nl < 0:
                return cut, records, blank
            if buf.count(b'"', pos, nl) % 2:
                in_quotes = not in_quotes
            if not in_quotes:
                if nl == cut or (nl == cut + 1 and buf[cut] == 0x0D):
                    blank = True
                records += 1
                cut = nl + 1
            pos = nl + 1

    def _first_record_end(self) -> int:
        """Index just past the first record's newline (0 if not in the buffer yet)."""
        buf, pos, in_quotes = self._buf, 0, False
        while (nl := buf.find(b"\n", pos)) >= 0:
            if buf.count(b'"', pos, nl) % 2:
                in_quotes = not in_quotes
            if not in_quotes:
                return nl + 1
            pos = nl + 1
        return 0

    @staticmethod
    def _drop_blank(data: bytes) -> tuple[bytes, int]:
        """Remove blank records; returns (data, number of records left)."""
        out = io.BytesIO()
        kept, start, in_quotes = 0, 0, False
        while start < len(data):
            nl = data.index(b"\n", start)
            line = data[start : nl + 1]
            starts_inside = in_quotes
            if line.count(b'"') % 2:
                in_quotes = not in_quotes
            if starts_inside or line.strip(b"\r\n"):
                out.write(line)
                if not in_quotes:
                    kept += 1  # this line ends a record
            start = nl + 1
        return out.getvalue(), kept

    def _check_utf8(self, data: bytes, first_row: int, first_line: int) -> None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            row, line = _position(data, exc.start, first_row, first_line)
            raise BadInput(
                f"{where(row, line)} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                "save the file as UTF-8 (CSV UTF-8 in spreadsheet programs)"
            ) from exc

    # ----------------------------------------------------------------- fields
    def _check_fields(self, data: bytes, raw: bytes, records: int, batch: CsvChunk) -> None:
        """Every record of ``data`` (``raw``: the same before blank lines were
        dropped) has :attr:`fields` fields, holds no NUL byte and no carriage return
        outside quotes that does not end its line, or :class:`BadInput` names the
        first record that does."""
        if self.fields is None:
            self.fields = _field_count(data[: data.find(b"\n") + 1] or data)
        outside = data if self._plain else b"".join(data.split(b'"')[::2])
        if b"\x00" in data:
            self._refuse_at(raw, raw.index(b"\x00"), batch, "holds a NUL byte (\\x00)", _NUL_HINT)
        if b"\r" in outside and _LONE_CR.search(outside):
            pos = _lone_cr(raw)
            if pos is not None:
                self._refuse_at(raw, pos, batch, "has a carriage return (CR)", _CR_HINT)
        # commas and newlines outside quotes, record by record: ",,\n,,\n" for 3 fields
        if outside.translate(None, _NOT_SEPARATORS) != (b"," * (self.fields - 1) + b"\n") * records:
            self._name_bad_record(raw, batch)

    def _refuse_at(self, raw: bytes, pos: int, batch: CsvChunk, what: str, hint: str) -> None:
        first_line = (batch.first_line or batch.first_row) - _leading_blank_lines(raw)
        row, line = _position(raw, pos, batch.first_row, first_line)
        raise BadInput(f"{where(row, line)} {what}{hint}")

    def _name_bad_record(self, raw: bytes, batch: CsvChunk) -> None:
        text = raw.decode("utf-8", errors="replace")
        reader = csv.reader(io.StringIO(text, newline=""))
        row, end = batch.first_row - 1, 0
        first_line = batch.first_line or 1
        leading = _leading_blank_lines(raw)
        try:
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not fields or fields == [""]:
                    continue  # a blank line
                row += 1
                if len(fields) != self.fields:
                    what = "the header has" if self.header else "the first row has"
                    line = first_line - leading + start - 1
                    hint = ""
                    if self.fields == 1 and any(sep in text for sep in (";", "\t", "|")):
                        hint = " (is the file separated by ';', tabs or '|'? commas are expected)"
                    raise BadInput(
                        f"{where(row, line)} has {len(fields)} fields, {what} {self.fields}; "
                        f"every row needs the same columns{hint}"
                    )
        except csv.Error:
            return  # a quoting problem: reported where the batcher finds it
        if not self._plain:
            return  # a quote inside a field: the csv module reads every row as whole
        raise BadInput(f"{batch.span}: the rows do not all have {self.fields} fields")

    # ------------------------------------------------------------------ header
    def _read_header(self) -> None:
        self._fill(_SNIFF_BYTES)
        problem = binary_problem(bytes(self._buf[:_SNIFF_BYTES]))
        if problem:
            raise BadInput(problem)
        if self._buf.startswith(BOM):
            del self._buf[: len(BOM)]
        while self._buf and self._buf[0] in b"\r\n":  # leading blank lines
            if self._buf[0] == 0x0A:
                self.lines += 1
            del self._buf[:1]
            if not self._buf:
                self._fill(_SNIFF_BYTES)
        if not self._buf.strip():
            raise BadInput("the file is empty")
        head = bytes(self._buf[:_SNIFF_BYTES])
        if b"\n" not in head and b"\r" in head.rstrip(b"\r") and head.count(b'"') % 2 == 0:
            raise BadInput(
                "the file's lines end with a carriage return (CR) alone, as old Mac OS "
                "wrote them: save it with LF or CRLF line ends (in Excel: CSV UTF-8)"
            )
        cut = self._first_record_end()
        while cut == 0 and not self._eof:
            self._fill(len(self._buf) + _SNIFF_BYTES)
            cut = self._first_record_end()
            if cut == 0 and len(self._buf) > self.max_bytes:
                raise BadInput(self._too_big_message(1))
        if cut == 0:  # a single record without a final newline
            self._buf += b"\n"
            cut = len(self._buf)
        first = bytes(self._buf[:cut])
        if self.header_mode == "present":
            has_header = True
        elif self.header_mode == "absent":
            has_header = False
        else:
            sample = bytes(self._buf[:_SNIFF_BYTES])
            has_header = detect_header(first, sample, self.lines + 1)
        if has_header:
            try:
                first.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(
                    f"the header row (line {self.lines + 1}) is not valid UTF-8 (byte "
                    f"0x{first[exc.start]:02x}); save the file as UTF-8 (CSV UTF-8 in "
                    "spreadsheet programs)"
                ) from exc
            self.header = first if first.endswith(b"\n") else first + b"\n"
            self.fields = _field_count(self.header)
            self.lines += first.count(b"\n")
            del self._buf[:cut]

    def _too_big_message(self, row: int) -> str:
        mb = self.max_bytes / (1024 * 1024)
        line = self.lines + _leading_blank_lines(bytes(self._buf[:4096])) + 1
        return (
            f"{where(row, line)} (with the header) is larger than the largest mini-batch "
            f"({mb:g} MB, SCOREFLEET_MAX_PAYLOAD_MB) or never ends (an unterminated quote?)"
        )

    # -------------------------------------------------------------------- loop
    def __iter__(self) -> Iterator[CsvChunk]:
        self._read_header()
        self.data_start = self.bytes_in - len(self._buf)
        if self.start is not None:
            if self.data_start != int(self.start["head"]):
                raise ValueError(
                    f"the header ends at byte {self.data_start}, not at "
                    f"{self.start['head']} as when the resume point was taken"
                )
            self.rows, self.lines = int(self.start["rows"]), int(self.start["lines"])
            self.fields = self.start["fields"]
        header_len = len(self.header) if (self.header and self.send_header) else 0
        room = self.max_bytes - header_len
        if room <= 0:
            raise BadInput("the header row alone is larger than the largest mini-batch")
        index = 0
        while True:
            self._fill(room + 1)
            if not self._buf:
                break
            cut, records, blank = self._scan(room)
            if cut == 0:
                if self._eof and len(self._buf) <= room:
                    if self._buf.count(b'"') % 2:
                        line = self.lines + _leading_blank_lines(bytes(self._buf[:4096])) + 1
                        raise BadInput(
                            f"{where(self.rows + 1, line)} has a quoted field that never ends"
                        )
                    self._buf += b"\n"  # last record without a newline
                    continue
                raise BadInput(self._too_big_message(self.rows + 1))
            raw = data = take(self._buf, cut)
            newlines = records if self._plain else raw.count(b"\n")  # all lines, blank too
            first_line = self.lines + 1
            self.lines += newlines
            if blank:
                data, records = self._drop_blank(raw)
                if not records:
                    continue
            first_row = self.rows + 1
            self._check_utf8(raw, first_row, first_line)
            batch = CsvChunk(
                index=index,
                first_row=first_row,
                rows=records,
                data=data,
                first_line=first_line + (_leading_blank_lines(raw) if blank else 0),
                last_line=self.lines - (_trailing_blank_lines(raw) if blank else 0),
                end=self._offset(),
            )
            self._check_fields(data, raw, records, batch)
            self.rows += records
            yield batch
            index += 1
        if self.rows == 0:
            raise BadInput(
                "the file has a header row but no data rows"
                if self.header
                else "the file has no data rows"
            )

    def payload(self, batch: CsvChunk) -> bytes:
        """What is sent to the model for ``batch`` (header first when configured)."""
        if self.header and self.send_header:
            return self.header + batch.data
        return batch.data


def csv_fields(record: bytes) -> list[str]:
    """The fields of one CSV record (a header line)."""
    text = record.decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        return next(csv.reader([text]), [""])
    except csv.Error:
        return text.split(",")


def _field_count(record: bytes) -> int:
    return len(csv_fields(record))


def _leading_blank_lines(data: bytes) -> int:
    stripped = data.lstrip(b"\r\n")
    return data[: len(data) - len(stripped)].count(b"\n")


def _trailing_blank_lines(data: bytes) -> int:
    """Blank lines at the end of ``data`` (which ends with a record's newline)."""
    stripped = data.rstrip(b"\r\n")
    return max(0, data[len(stripped) :].count(b"\n") - 1)


def _lone_cr(data: bytes) -> int | None:
    """Where the first carriage return outside quotes that is not part of a CRLF is
    in ``data`` (None: every one is inside quotes)."""
    in_quotes = False
    for m in re.finditer(rb'"|\r(?!\n)', data):
        if m.group() == b'"':
            in_quotes = not in_quotes
        elif not in_quotes:
            return m.start()
    return None


def _position(data: bytes, pos: int, first_row: int, first_line: int) -> tuple[int, int]:
    """(data row, line) of byte ``pos`` of ``data``, whose first line is ``first_line``
    and whose first record is data row ``first_row`` (blank lines skipped,
    newlines inside quotes kept within their record)."""
    row, line, start, in_quotes = first_row, first_line, 0, False
    record_started = False
    while True:
        nl = data.find(b"\n", start)
        if nl < 0 or nl >= pos:
            return row, line
        piece = data[start : nl + 1]
        if not in_quotes and not piece.strip(b"\r\n"):
            pass  # blank line
        else:
            record_started = True
        if piece.count(b'"') % 2:
            in_quotes = not in_quotes
        if not in_quotes and record_started:
            row += 1
            record_started = False
        line += 1
        start = nl + 1
