import csv
import gzip
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.errors import BadInput
from workers.compression import Limits, decompress
from workers.csvbatch import CsvBatcher, detect_header


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
    assert detect_header(b"x,y\n", b"x,y\n1,2\n")
    assert not detect_header(b"1,y\n", b"1,y\n1,2\n")


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
        (b"a,b\n1,2\n3,\xff\xfe\n", "data row 2 is not valid UTF-8"),
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
            st.text(alphabet=st.sampled_from('ab,"\n é1'), max_size=8), min_size=2, max_size=3
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
