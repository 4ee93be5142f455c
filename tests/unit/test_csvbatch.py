import csv
import gzip
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorefleet.errors import BadInput
from workers.scoring.formats.compression import Limits, decompress
from workers.scoring.formats.csvsplit import CsvBatcher, detect_header


def chunks(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def run(data: bytes, max_bytes=1024, chunk=37, **kw):
    b = CsvBatcher(decompress(chunks(data, chunk), Limits(10**12, 1e9)), max_bytes, **kw)
    batches = list(b)
    return b, batches


def records(text: str) -> list[list[str]]:
    return [r for r in csv.reader(io.StringIO(text, newline="")) if r]


def test_batches_cover_every_row_in_order_within_the_bound():
    rows = [f"{i},{i * 2.5},x{i}" for i in range(1, 501)]
    data = ("a,b,c\n" + "\n".join(rows) + "\n").encode()
    b, batches = run(data, max_bytes=300)
    assert b.header == b"a,b,c\n"
    assert sum(x.rows for x in batches) == 500 == b.rows
    assert b"".join(x.data for x in batches).decode().splitlines() == rows
    assert all(len(b.payload(x)) <= 300 for x in batches)
    assert all(b.payload(x).startswith(b"a,b,c\n") for x in batches)
    assert [x.first_row for x in batches] == [1] + [
        sum(y.rows for y in batches[:i]) + 1 for i in range(1, len(batches))
    ]


def test_quoted_newlines_are_never_split_and_crlf_bom_blank_lines():
    body = '\ufeffid,text\r\n1,"line one\r\nline two"\r\n\r\n2,plain\r\n3,"a ""quoted"" word"\r\n4,last'
    b, batches = run(body.encode(), max_bytes=40, chunk=5)
    assert b.header == b"id,text\r\n"
    data = b"".join(x.data for x in batches).decode()
    assert records(data) == [
        ["1", "line one\r\nline two"],
        ["2", "plain"],
        ["3", 'a "quoted" word'],
        ["4", "last"],
    ]
    assert b.rows == 4


def test_no_header_detected_for_numeric_first_row():
    b, _ = run(b"1,2,3\n4,5,6\n")
    assert b.header is None and b.rows == 2


def test_header_mode_can_be_forced():
    b, _ = run(b"1,2\n3,4\n", header_mode="present")
    assert b.header == b"1,2\n" and b.rows == 1
    b, _ = run(b"a,b\nc,d\n", header_mode="absent")
    assert b.header is None and b.rows == 2


def test_detect_header_heuristics():
    """The rule's cases (workers/scoring/formats/csvheader.py) are in
    tests/unit/test_csv_values.py; here, its entry point."""
    assert detect_header(b"x,y\n", b"x,y\n1,2\n")
    assert detect_header(b"1,y\n", b"1,y\n1,2\n")  # a name (y) over numbers
    assert not detect_header(b"1,2\n", b"1,2\n3,4\n")


def test_gzip_input_is_decompressed():
    raw = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(1000))
    b, batches = run(gzip.compress(raw), max_bytes=500, chunk=64)
    assert b.rows == 1000 and b"".join(x.data for x in batches) == raw[4:]


def test_truncated_gzip_is_bad_input():
    with pytest.raises(BadInput, match="truncated"):
        run(gzip.compress(b"a,b\n1,2\n" * 100)[:-20])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\r\n\n", "the file is empty"),
        (b"a,b,c\n", "header row but no data rows"),
        (b"a,b,c\n\n\n", "header row but no data rows"),
        (b"a,b\n1,2\n3,\xff\xfe\n", r"^data row 2 \(line 3\) is not valid UTF-8"),
        (b"a,\xff\n1,2\n", r"^the header row \(line 1\) is not valid UTF-8"),
        (b'a,b\n1,2\n3,"never closed\n4,5\n', "quoted field that never ends"),
        (b"a,b\n1," + b"9" * 3000 + b"\n", "larger than the largest mini-batch"),
    ],
)
def test_bad_input(data, message):
    with pytest.raises(BadInput, match=message):
        run(data, max_bytes=1024)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.text(alphabet=st.sampled_from('ab,"\n é1'), max_size=8), min_size=2, max_size=2
        ),
        min_size=1,
        max_size=40,
    ),
    max_bytes=st.integers(min_value=80, max_value=400),
    chunk=st.integers(min_value=1, max_value=50),
    crlf=st.booleans(),
)
def test_property_batches_reassemble_to_the_same_records(rows, max_bytes, chunk, crlf):
    """Whatever the quoting, line endings, chunking and batch size: the batches hold
    the same records in the same order, each batch within the bound."""
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n" if crlf else "\n").writerows([["h1", "h2"], *rows])
    expected = records(out.getvalue())[1:]
    try:
        b, batches = run(
            out.getvalue().encode(), max_bytes=max_bytes, chunk=chunk, header_mode="present"
        )
    except BadInput as exc:  # legitimate only when one record is larger than a batch
        assert "larger than" in str(exc)
        assert any(len(",".join(r).encode()) + 9 > max_bytes - 12 for r in rows)
        return
    assert records(b"".join(x.data for x in batches).decode()) == expected
    assert sum(x.rows for x in batches) == b.rows == len(expected)
    assert all(len(b.payload(x)) <= max_bytes for x in batches)


# ------------------------------------------------- issue 12, item 8: row numbers
def test_a_wrong_column_count_is_named_by_its_row_and_line_in_the_file():
    """The issue's case at a smaller scale: a 5-field row deep in a file that spans
    many mini-batches is named by its data row and line in the file, not by its
    place in its mini-batch, and found by the batcher, not the model."""
    rows = [f"{i}.1,{i}.2,{i}.3,{i}.4" for i in range(1, 2001)]
    rows[1500 - 1] = "1,2,3,4,5"  # data row 1500, line 1501
    data = ("a,b,c,d\n" + "\n".join(rows) + "\n").encode()
    with pytest.raises(BadInput) as err:
        run(data, max_bytes=2048, chunk=300)
    assert str(err.value).startswith("data row 1500 (line 1501) has 5 fields, the header has 4"), (
        err.value
    )


def test_row_and_line_numbers_count_blank_lines_and_quoted_newlines():
    data = b'id,text\n\n1,"two\nlines"\n\n2,ok\n3,x,extra\n'
    with pytest.raises(BadInput, match=r"^data row 3 \(line 7\) has 3 fields, the header has 2"):
        run(data, max_bytes=1024)
    without_header = b"1,2\n3,4\n5\n"
    with pytest.raises(BadInput, match=r"^data row 3 has 1 fields, the first row has 2"):
        run(without_header, max_bytes=1024)


def test_batches_know_their_lines():
    data = b"a,b\n\n1,2\n3,4\n\n5,6\n"
    _, batches = run(data, max_bytes=1024)
    (batch,) = batches
    assert (batch.first_row, batch.last_row, batch.first_line, batch.last_line) == (1, 3, 3, 6)
    assert batch.span == "data rows 1-3 (lines 3-6)"


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    bad=st.data(),
    blanks=st.sets(st.integers(min_value=0, max_value=60)),
    quoted=st.sets(st.integers(min_value=0, max_value=60)),
    max_bytes=st.integers(min_value=60, max_value=300),
)
def test_property_the_first_bad_row_is_named_exactly(n, bad, blanks, quoted, max_bytes):
    """Whatever the blank lines, quoted newlines and batch size: the error names the
    first record with a wrong field count by its data row and its line."""
    i_bad = bad.draw(st.integers(min_value=1, max_value=n))
    lines, row_line = ["h1,h2"], {}
    for i in range(1, n + 1):
        if i in blanks:
            lines.append("")
        row_line[i] = sum(x.count("\n") + 1 for x in lines) + 1
        value = f'"q\n{i}"' if i in quoted else str(i)
        lines.append(f"{value},x,extra" if i == i_bad else f"{value},x")
    data = ("\n".join(lines) + "\n").encode()
    with pytest.raises(BadInput) as err:
        run(data, max_bytes=max_bytes, chunk=17)
    line = row_line[i_bad]
    want = f"data row {i_bad}" + (f" (line {line})" if line != i_bad else "")
    assert str(err.value).startswith(f"{want} has 3 fields, the header has 2"), (
        str(err.value),
        data,
    )


@pytest.mark.parametrize(
    ("head", "needle"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "looks like a PNG image, not CSV"),
        (b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00", "looks like a Parquet file"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "old-style Microsoft Office file"),
        (b"\xff\xfea\x00,\x00b\x00\n\x00", "UTF-16 text"),
        (bytes(range(256)) * 4, "looks like binary data"),
    ],
)
def test_binary_files_are_named_by_their_magic_bytes(head, needle):
    with pytest.raises(BadInput, match=needle) as err:
        run(head)
    assert "data row" not in str(err.value)
    # the same inside gzip: named by what it decompresses to
    with pytest.raises(BadInput, match=needle):
        run(gzip.compress(head))


def test_an_excel_workbook_is_named_as_one():
    from workers.scoring.formats.magic import excel_problem

    head = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00xl/workbook.xml"
    assert "Excel workbook (.xlsx)" in (excel_problem(head) or "")
    assert excel_problem(b"PK\x03\x04\x14\x00data.csv") is None  # a plain zip: compression's


def test_text_that_starts_like_a_signature_is_still_csv():
    b, _ = run(b"BMI,weight\n21.5,70\n")  # "BM" starts a bitmap, "MZ" an .exe
    assert b.header == b"BMI,weight\n" and b.rows == 1
