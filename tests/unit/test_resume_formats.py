"""Issue 26, the formats' half: a file taken up again at any resume point a piece
gave comes out byte for byte as the undisturbed file, its ``.rejected`` too, for
every pair of input and output formats, plain and compressed, with kept columns and
refused rows. The real scoring loop runs in this process with an in-process model;
the S3 half (commits, take-over, hand-over) is tests/integration/test_resume.py."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest

from scorefleet.errors import RowsRefused
from scorefleet.settings import RejectBudget
from tests.unit.test_formats import CSV, FORMATS, JSONL, PARQUET, as_file, hash_model
from workers.scoring.batches import Batch, Scores
from workers.scoring.engine import ScoreStats, score_stream
from workers.scoring.formats import Columns, ReadLimits, ranged_reader, stream_reader
from workers.scoring.formats.base import Writer
from workers.scoring.formats.compression import Limits, decompress
from workers.scoring.formats.source import splice
from workers.scoring.rejects import RowRejects

#: small mini-batches (and Parquet row groups): many resume points per file
LIM = ReadLimits(max_bytes=6000, max_group_bytes=1 << 30)
NO_LIMITS = Limits(max_expanded=1 << 40, max_ratio=1e9)
KEEP = Columns(keep=("id", "name"), drop=("id",))


def table_of(n: int) -> pa.Table:
    return pa.table(
        {
            "id": [f"id-{i:05d}" for i in range(n)],
            "x": [i * 0.25 for i in range(n)],
            "k": [i % 7 for i in range(n)],
            "name": [
                "BAD" if i % 997 == 3 else (f"n,{i}" if i % 5 == 0 else f"n{i}") for i in range(n)
            ],
        }
    )


def refusing_model(batch: Batch) -> Scores:
    """The hash model, refusing any mini-batch that holds the value BAD (as a model
    answers 400): the file's refused rows go to its .rejected."""
    text = batch.as_csv(header=False)
    if b"BAD" in text:
        raise RowsRefused("cannot score a row holding BAD")
    return hash_model(batch)


@dataclass
class Point:
    """What a commit at one piece would have recorded."""

    out: int  # bytes of output written
    at: dict[str, Any]
    state: dict[str, Any]
    rejects_state: dict[str, Any]
    writer_sides: list[bytes]
    rejects_sides: list[bytes]


@dataclass
class Recorder:
    """Checkpoints that take a point after every piece the writer has settled."""

    sink: io.BytesIO
    spool: io.BytesIO
    rejects: RowRejects
    points: list[Point] = field(default_factory=list)
    wsides: list[bytes] = field(default_factory=list)
    rsides: list[bytes] = field(default_factory=list)
    resume_from: tuple[Point, bytes] | None = None

    def restore(self, writer: Writer) -> None:
        if self.resume_from is not None:
            point, _ = self.resume_from
            writer.restore(point.state, point.writer_sides, b"")

    def written(self, writer: Writer, at: dict[str, Any], stats: ScoreStats) -> None:
        if not writer.settled:
            return
        self.wsides.append(writer.side())
        self.rsides.append(self.rejects.side())
        self.points.append(
            Point(
                self.sink.tell(),
                at,
                writer.state(),
                self.rejects.state(),
                list(self.wsides),
                list(self.rsides),
            )
        )

    def stop(self) -> bool:
        return False


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + 4096] for i in range(0, len(data), 4096)]


def run(
    data: bytes, fmt: Any, out: Any, *, gz: bool, start: Point | None = None
) -> tuple[bytes, bytes, list[Point], ScoreStats]:
    sink, spool = io.BytesIO(), io.BytesIO()
    rejects = RowRejects(RejectBudget.parse("100"), spool, parquet=fmt.rejected_as_table)
    rec = Recorder(sink, spool, rejects)
    if start is not None:
        rec.resume_from = (start, b"")
        rejects.restore(start.rejects_state, start.rejects_sides)
    if fmt.ranged is not None:
        reader = ranged_reader(fmt, io.BytesIO(data), KEEP, LIM, start=start.at if start else None)
    else:
        stream = decompress(chunks(gzip.compress(data) if gz else data), NO_LIMITS)
        if start is not None:
            stream = splice(stream, int(start.at["head"]), int(start.at["offset"]))
        reader = stream_reader(fmt, stream, KEEP, LIM, start=start.at if start else None)
    stats = score_stream(
        reader, refusing_model, sink, out, max_in_flight=3, rejects=rejects, checkpoints=rec
    )
    rejects.writer.close()
    return sink.getvalue(), spool.getvalue(), rec.points, stats


CASES = [
    (fmt, out, gz)
    for fmt in FORMATS.values()
    for out in FORMATS.values()
    for gz in ((False, True) if fmt.stream is not None else (False,))
]


@pytest.mark.parametrize(
    ("fmt", "out", "gz"),
    CASES,
    ids=lambda v: v.name if hasattr(v, "name") else ("gz" if v else "plain"),
)
def test_a_file_taken_up_at_any_resume_point_comes_out_the_same(fmt, out, gz, monkeypatch):
    from workers.scoring.formats import parquet_writer

    monkeypatch.setattr(parquet_writer, "ROW_GROUP_ROWS", 300)  # several row groups out
    data = as_file(table_of(3000), fmt, row_group=700)
    whole, rejected, points, stats = run(data, fmt, out, gz=gz)
    assert stats.rejected == 4 and rejected  # the rows holding BAD
    assert len(points) >= 4, "too few resume points to test"
    # the first, the last but one and a few between (every one: ~5 times slower)
    step = max(1, (len(points) - 1) // 4)
    for point in [*points[: len(points) - 1 : step], points[-2]]:
        # the output as a commit at this point left it, and the .rejected: its rows
        # refused before the point come back from the commits, into the new spool
        again, rejected_again, _, stats_again = run(data, fmt, out, gz=gz, start=point)
        assert whole[: point.out] + again == whole, point.at
        assert rejected_again == rejected, point.at
        assert (stats_again.rows, stats_again.rejected) == (stats.rows, stats.rejected)


def test_parquet_output_is_what_one_pyarrow_writer_makes():
    """The row groups written one at a time and the footer built from theirs: the
    same bytes as pyarrow's own writer of the same row groups."""
    import pyarrow.parquet as pq

    from workers.scoring.formats import parquet_footer as footer

    t = table_of(5000)
    ref = io.BytesIO()
    writer = pq.ParquetWriter(ref, t.schema)
    writer.write_table(t, row_group_size=1500)
    writer.close()
    out, groups, template = bytearray(footer.MAGIC), [], None
    for i, offset in enumerate(range(0, t.num_rows, 1500)):
        one = footer.split(footer.one_group_file(t.slice(offset, 1500), t.schema))
        template = template or one.meta
        groups.append(footer.moved(one.row_group, len(out) - 4, i))
        out += one.body
    out += footer.footer(template, groups)
    assert bytes(out) == ref.getvalue()
    meta = ref.getvalue()[-8 - int.from_bytes(ref.getvalue()[-8:-4], "little") : -8]
    assert footer.encode(footer.decode(meta)) == meta  # a round trip changes nothing


def test_the_points_are_where_the_input_goes_on():
    """A CSV point's offset is the byte after its last row; a JSON Lines one the same;
    a Parquet one the row that comes next."""
    data = as_file(table_of(3000), CSV)
    *_, points = run(data, CSV, CSV, gz=False)[:3]
    for p in points:
        assert data[p.at["offset"] - 1 : p.at["offset"]] == b"\n"
        rows = list(csv.reader(io.StringIO(data[: p.at["offset"]].decode(), newline="")))
        assert len(rows) - 1 == p.at["rows"]
    data = as_file(table_of(3000), JSONL)
    points = run(data, JSONL, JSONL, gz=False)[2]
    assert all(data[: p.at["offset"]].count(b"\n") == p.at["rows"] for p in points)
    data = as_file(table_of(3000), PARQUET, row_group=700)
    points = run(data, PARQUET, CSV, gz=False)[2]
    assert [p.at["next"] for p in points] == sorted({p.at["next"] for p in points})
