"""Issue 6's bad-input corpus on the local stack: every case ends in a correct
.scoreout or a clear .error (or, for events that are not new input files, in
nothing at all), the worker keeps running, and no credential leaks."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from scorefleet.s3uri import ERROR_SUFFIX, SCOREOUT_SUFFIX, S3Uri, output_uri
from scorefleet.storage.s3io import encode_tags
from tests.e2e.bad_input_values import VALUE_CASES
from tests.helpers import PLANTED_ENV_SECRETS, Outcomes, gzip_member_of, s3_notification, s3_record
from tests.helpers.checks import as_written, error_line, in_process
from tests.helpers.fakemodel import LEAKED_KEY_ID, LEAKED_SECRET, hash_row, records
from workers.localstack.stack import BUCKET, IRIS_IMAGE, emulator_client
from workers.scoring.formats.preflight import HEAD_BYTES

pytestmark = pytest.mark.slow

HASH = {"model_image": "test/hash:1"}
FORGED_LINE = "2026-12-01 00:00:00,000 WARNING [sf-00000000000000000000 -] x: published"
IRIS = {"model_image": IRIS_IMAGE}
LONG_NAME = "long/" + "k" * (1024 - len("in/long/") - len(".csv")) + ".csv"  # a 1,024-byte key


@dataclass
class Case:
    key: str
    body: bytes
    tags: dict[str, str] | None
    expect: str  # "scoreout" (content = the hash model's answer), "rows:N", or "error:<needle>"
    plain: bytes | None = None  # what the body holds once decompressed (for "scoreout")
    put: dict[str, Any] = field(default_factory=dict)  # more PutObject arguments


def hashed(body: bytes) -> bytes:
    return b"".join(hash_row(r) for r in records(body))


CASES = [
    Case(
        "c/crlf-quoted-newlines.csv",
        b'a,b\r\n1,"two\r\nlines"\r\n2,"say ""hi"""\r\n3,x',
        HASH,
        "scoreout",
    ),
    Case("c/utf8-bom.csv", "\ufeffa,b\n1,été\n2,ü\n".encode(), HASH, "scoreout"),
    Case("c/only-bom.csv", "\ufeff".encode(), HASH, "error:the file is empty"),
    Case("c/blank-lines-only.csv", b"\n\r\n\n", HASH, "error:the file is empty"),
    Case("c/header-crlf-only.csv", b"a,b\r\n\r\n", HASH, "error:header row but no data rows"),
    Case("c/no-final-newline.csv", b"a,b\r\n1,2\r\n3,4", HASH, "scoreout"),
    Case("c/blank-lines-between.csv", b"a,b\n\n1,2\n\n\n3,4\n\n", HASH, "scoreout"),
    Case(
        "c/five-mb-line.csv",
        b"a,b\n1," + b"9" * 5_000_000 + b"\n",
        HASH,
        "error:larger than the largest mini-batch",
    ),
    Case(
        "c/gzip.csv.gz",
        gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(3000))),
        HASH,
        "rows:3000",
    ),
    Case("c/truncated.csv.gz", gzip.compress(b"a,b\n1,2\n" * 500)[:-30], HASH, "error:truncated"),
    Case("c/binary.csv", bytes(range(256)) * 4, HASH, "error:the file looks like binary data"),
    Case(
        "c/cp1252.csv",
        "a,b\n1,\u201cquoted\u201d\n".encode("cp1252"),
        HASH,
        "error:not valid UTF-8",
    ),
    Case(LONG_NAME, b"a,b\n1,2\n", HASH, "scoreout"),
    # S3 itself refuses '&' in tag values (PutObject fails: the file never arrives);
    # '=' and unicode are allowed there and must be refused by us
    Case(
        "c/tag-equals.csv",
        b"a,b\n1,2\n",
        {**HASH, "k8s_namespace": "a=b"},
        "error:not a valid namespace",
    ),
    Case("c/key with & and = ü.csv", b"a,b\n1,2\n", HASH, "scoreout"),
    Case(
        "c/tag-unicode-image.csv",
        b"a,b\n1,2\n",
        {"model_image": "test/mödel:1"},
        "error:not a valid container image",
    ),
    Case(
        "c/tag-cluster.csv",
        b"a,b\n1,2\n",
        {**HASH, "k8s_cluster": "blue=grün"},
        "error:not a valid cluster name",
    ),
    Case(
        "c/namespace-too-long.csv",
        b"a,b\n1,2\n",
        {**HASH, "k8s_namespace": "n" * 64},
        "error:not a valid namespace",
    ),
    Case(
        "c/namespace-upper.csv",
        b"a,b\n1,2\n",
        {**HASH, "k8s_namespace": "Scoring"},
        "error:not a valid namespace",
    ),
    Case(
        "c/iris-ragged.csv",
        b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4\n",
        IRIS,
        "error:data row 1 (line 2) has 3 fields, the header has 4",
    ),
    # the iris example's MLflow signature names these before its model starts (issue 27)
    Case(
        "c/iris-text.csv",
        b"sepal_length,sepal_width,petal_length,petal_width\n5.1,abc,1.4,0.2\n",
        IRIS,
        "error:mistyped: sepal_width: 'abc' on data row 1 is not a number",
    ),
    Case(
        "c/iris-missing-values.csv",
        b"sepal_length,sepal_width,petal_length,petal_width\n5.1,,1.4,\n",
        IRIS,
        "rows:1",
    ),
    Case(
        "c/json-not-csv.csv",
        b'{"a": 1}\n{"a": 2}\n',
        IRIS,
        "error:it looks like JSON Lines: name it .jsonl or tag it content_type=jsonl",
    ),
    Case(
        "c/leaky-model.csv",
        b"a,b\n1,2\n",
        {"model_image": "test/leaky:1"},
        "error:the model rejected data row 1 (line 2) with HTTP 400",
    ),
    Case(
        "c/crash-leaks.csv",
        b"a,b\n1,2\n",
        {"model_image": "test/crash:1"},
        "error:exited with code 3",
    ),
    Case("c/quoted-header.csv", b'"a","b, with comma"\n1,2\n', HASH, "scoreout"),
    # a key that tries to write a log line of its own (tests/unit/test_log_injection.py; a
    # carriage return: moto refuses keys with a newline, S3 does not)
    Case(f"c/forged\r{FORGED_LINE}.csv", b"a,b\n1,2\n", HASH, "scoreout"),
    Case(
        "c/wide.csv",
        (",".join(f"c{i}" for i in range(2000)) + "\n" + ",".join("1" * 2000) + "\n").encode(),
        HASH,
        "scoreout",
    ),
]


# ---- issue 10: compressions in the wild, concatenations, truncations, bombs
PART1 = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(100))
PART2 = b"".join(b"%d,%d\n" % (i, i) for i in range(100, 200))
WHOLE = PART1 + PART2
BGZIP_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _zstd(data: bytes) -> bytes:
    from workers.scoring.formats.compression import _zstd_module

    return bytes(_zstd_module().compress(data))


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.csv", data)
    return buf.getvalue()


def _bomb(expanded: int) -> bytes:
    """gzip of ``expanded`` bytes of a valid CSV row, repeated (about 1000:1)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"0,0,0,0\n" * (1 << 17)
    return b"".join(c.compress(block) for _ in range(expanded // len(block))) + c.flush()


def _bad_crc(data: bytes) -> bytes:
    b = bytearray(data)
    b[-6] ^= 0xFF
    return bytes(b)


GZ1, GZ2 = gzip.compress(PART1), gzip.compress(PART2)
WIDE = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7919) for i in range(4000))
COMPRESSED_CASES = [
    Case("z/two-members.csv.gz", GZ1 + GZ2, HASH, "scoreout", WHOLE),  # cat a.gz b.gz
    Case("z/bgzip.csv.gz", GZ1 + GZ2 + BGZIP_EOF, HASH, "scoreout", WHOLE),
    Case("z/zero-padded.csv.gz", GZ1 + GZ2 + b"\0" * 4096, HASH, "scoreout", WHOLE),
    Case("z/bzip2.csv.bz2", bz2.compress(WHOLE), HASH, "scoreout", WHOLE),
    Case("z/pbzip2.csv.bz2", bz2.compress(PART1) + bz2.compress(PART2), HASH, "scoreout", WHOLE),
    Case("z/xz.csv.xz", lzma.compress(WHOLE), HASH, "scoreout", WHOLE),
    Case(
        "z/xz-two-streams.csv.xz",
        lzma.compress(PART1) + b"\0" * 4 + lzma.compress(PART2),
        HASH,
        "scoreout",
        WHOLE,
    ),
    Case("z/zstd.csv.zst", _zstd(PART1) + _zstd(PART2), HASH, "scoreout", WHOLE),
    Case(
        "z/content-encoding-but-plain.csv",
        WHOLE,
        HASH,
        "scoreout",
        WHOLE,
        {"ContentEncoding": "gzip"},
    ),
    Case(
        "z/content-encoding-gzip.csv",
        gzip.compress(WHOLE),
        HASH,
        "scoreout",
        WHOLE,
        {"ContentEncoding": "gzip", "ContentType": "text/csv"},
    ),
    # the launch preflight's first 64 KiB end 1 byte into member 2: a valid file
    Case(
        "z/64k-ends-in-a-header.csv.gz",
        gzip_member_of(HEAD_BYTES - 1, WIDE) + GZ2,
        HASH,
        "scoreout",
        gzip.decompress(gzip_member_of(HEAD_BYTES - 1, WIDE)) + PART2,
    ),
    Case("z/truncated-second-member.csv.gz", GZ1 + GZ2[:-9], HASH, "error:truncated"),
    Case("z/cut-inside-header.csv.gz", GZ1 + GZ2[:5], HASH, "error:truncated"),
    Case("z/bad-crc.csv.gz", GZ1 + _bad_crc(GZ2), HASH, "error:member 2 cannot be"),
    Case("z/trailing-garbage.csv.gz", GZ1 + b"9,9\n", HASH, "error:bytes after the end"),
    Case("z/truncated.csv.bz2", bz2.compress(WHOLE)[:-10], HASH, "error:truncated"),
    Case("z/truncated.csv.xz", lzma.compress(WHOLE)[:-10], HASH, "error:truncated"),
    Case("z/archive.zip", _zip(WHOLE), HASH, "error:zip archive"),
    Case("z/twice.csv.gz.gz", gzip.compress(gzip.compress(WHOLE)), HASH, "error:compressed or"),
    Case("z/empty.csv.gz", gzip.compress(b""), HASH, "error:the file is empty"),
    Case("z/header-only.csv.gz", gzip.compress(b"a,b\n"), HASH, "error:no data rows"),
    Case("z/bomb.csv.gz", _bomb(64 << 20), HASH, "error:SCOREFLEET_MAX_EXPANSION_RATIO"),
]
CASES += COMPRESSED_CASES


# ---- issue 14: Parquet and JSON Lines
def _parquet(table: Any = None, **kw: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table is None:
        table = pa.table({"id": list(range(200)), "x": [i / 4 for i in range(200)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def _corrupt_footer() -> bytes:
    data = bytearray(_parquet())
    data[-40:-8] = b"\xff" * 32
    return bytes(data)


def _nested() -> bytes:
    import pyarrow as pa

    return _parquet(pa.table({"id": [1, 2], "feats": [{"a": 1.0}, {"a": 2.0}]}))


def _empty_parquet() -> bytes:
    import pyarrow as pa

    return _parquet(pa.table({"id": pa.array([], pa.int64()), "x": pa.array([], pa.float64())}))


FORMAT_CASES = [
    Case(
        "f/corrupt-footer.parquet",
        _corrupt_footer(),
        HASH,
        "error:footer (its metadata) is corrupt",
    ),
    Case("f/truncated.parquet", _parquet()[:700], HASH, "error:the Parquet file is truncated"),
    Case(
        "f/really-csv.parquet", b"a,b\n1,2\n", HASH, "error:is taken for Parquet but is not Parquet"
    ),
    Case("f/nested.parquet", _nested(), HASH, "error:the column 'feats' is nested"),
    Case("f/empty.parquet", _empty_parquet(), HASH, "parquet:0"),
    Case("f/ok.parquet", _parquet(), {**HASH, "keep_columns": "id"}, "parquet:200"),
    Case("f/outer-gzip.parquet.gz", gzip.compress(_parquet()), HASH, "error:behind an outer .gz"),
    Case(
        "f/parquet-bytes.csv", _parquet(), HASH, "error:looks like a Parquet file, not CSV: name it"
    ),
    Case(
        "f/keep-missing.parquet",
        _parquet(),
        {**HASH, "keep_columns": "id customer_id"},
        "error:keep_columns names 'customer_id', which is not a column of the file; "
        "its columns are 'id', 'x'",
    ),
    Case(
        "f/keep-missing.csv",
        b"a,b\n1,2\n",
        {**HASH, "keep_columns": "id"},
        "error:keep_columns names 'id', which is not a column of the file; its columns are 'a', 'b'",
    ),
    Case(
        "f/not-object.jsonl",
        b'{"a": 1}\n[1, 2]\n',
        HASH,
        "error:line 2 is a list, not a JSON object",
    ),
    Case(
        "f/type-change.ndjson",
        b'{"a": 1}\n{"a": "one"}\n',
        HASH,
        "error:line 2: the key 'a' is a string here but a number on line 1",
    ),
    Case(
        "f/unknown-type.csv",
        b"a\n1\n",
        {**HASH, "content_type": "xml"},
        "error:'xml' is not a format",
    ),
]
CASES += FORMAT_CASES
# ---- issue 24: values, headers, line ends
CASES += [Case(key, body, tags, expect) for key, body, tags, expect in VALUE_CASES]


def locations(key: str) -> tuple[str, str]:
    src = S3Uri(BUCKET, f"in/{key}")
    ins, outs = S3Uri(BUCKET, "in/"), S3Uri(BUCKET, "out/")
    return output_uri(ins, outs, src, SCOREOUT_SUFFIX).key, output_uri(
        ins, outs, src, ERROR_SUFFIX
    ).key


def wait_at(s3, key: str, timeout: float = 90) -> tuple[str, bytes]:
    good, bad = locations(key)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for suffix, k in (("scoreout", good), ("error", bad)):
            try:
                return suffix, s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            except s3.exceptions.NoSuchKey:
                pass
        time.sleep(0.1)
    raise AssertionError(f"no outcome for in/{key}")


@pytest.fixture(scope="module")
def corpus(outcomes: Outcomes) -> dict[str, Case]:
    for case in CASES:
        if case.put:
            outcomes.s3.put_object(
                Bucket=BUCKET,
                Key=f"in/{case.key}",
                Body=case.body,
                Tagging=encode_tags(case.tags or {}),
                **case.put,
            )
        else:
            outcomes.put(case.key, case.body, case.tags)
    return {c.key: c for c in CASES}


def test_corpus_is_big_enough():
    assert len(CASES) >= 80


@pytest.mark.parametrize("case", CASES, ids=[c.key[:40] for c in CASES])
def test_case(outcomes, corpus, case):
    got, body = wait_at(outcomes.s3, case.key)
    kind, _, arg = case.expect.partition(":")
    if kind == "error":
        assert got == "error", body.decode()[:500]
        text = body.decode()
        assert arg in text, text
        assert "tasks.rescore" in text
    else:
        assert got == "scoreout", body.decode()[:2000]
        if kind == "parquet":
            import pyarrow.parquet as pq

            assert pq.read_table(io.BytesIO(body)).num_rows == int(arg)
        elif kind == "rows":
            assert len(body.splitlines()) == int(arg) + (1 if case.tags == IRIS else 0)
        elif kind == "ids":  # JSON Lines ids kept exactly, from this one on
            ids = [json.loads(line)["id"] for line in body.splitlines()]
            assert ids == [int(arg) + 3 * i for i in range(len(ids))] and len(ids) == 400
        else:
            plain = case.plain if case.plain is not None else case.body
            assert body == hashed(plain.lstrip("\ufeff".encode()))


SPECIAL_EVENTS = (
    "100 records in one notification",
    "event for the output prefix",
    "delete event",
    "folder marker",
)


def test_special_events(outcomes, corpus, stack):
    """A notification with 100 records (each file also gets its own notification:
    every file must be scored once), events about outputs, deletions and folder
    markers (nothing may happen)."""
    s3, sqs = outcomes.s3, emulator_client("sqs", stack.endpoint)
    keys = [f"hundred/f{i:03d}.csv" for i in range(100)]
    for i, key in enumerate(keys):
        s3.put_object(
            Bucket=BUCKET, Key=f"in/{key}", Body=b"a,b\n%d,%d\n" % (i, i), Tagging=encode_tags(HASH)
        )

    def record(key: str, name: str = "ObjectCreated:Put") -> dict:
        head = s3.head_object(Bucket=BUCKET, Key=key) if name.startswith("ObjectCreated") else {}
        etag = head.get("ETag", '""').strip('"')
        return s3_record(BUCKET, key, event_name=name, size=head.get("ContentLength", 0), etag=etag)

    def send(recs: list) -> None:
        sqs.send_message(
            QueueUrl=stack.urls["events_url"], MessageBody=json.dumps(s3_notification(*recs))
        )

    send([record(f"in/{k}") for k in keys])
    s3.put_object(Bucket=BUCKET, Key="out/sneaky.csv", Body=b"a\n1\n", Tagging=encode_tags(HASH))
    send([record("out/sneaky.csv")])
    send([record("in/hundred/f000.csv", "ObjectRemoved:Delete")])
    s3.put_object(Bucket=BUCKET, Key="in/folder/", Body=b"")
    send([record("in/folder/")])
    for key in keys:
        got, body = wait_at(s3, key)
        assert got == "scoreout", body
    time.sleep(3)  # let the duplicates (each file was notified twice) run their course
    for key in keys[:10]:
        assert outcomes.versions(key + ".scoreout") == 1
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents", [])
    names = [o["Key"] for o in listing]
    assert not any(n.startswith("out/sneaky") and n != "out/sneaky.csv" for n in names)
    assert not any("folder" in n for n in names)
    assert not any(n.startswith("out/out/") for n in names)


def test_no_credentials_in_error_files_or_logs(outcomes, corpus, stack):
    for key in ("c/leaky-model.csv", "c/crash-leaks.csv"):
        wait_at(outcomes.s3, key)
    planted = (LEAKED_KEY_ID, LEAKED_SECRET, "hunter2-secret", *PLANTED_ENV_SECRETS)
    s3 = outcomes.s3
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents", []):
        if obj["Key"].endswith(".error"):
            text = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
            for secret in planted:
                assert secret not in text, (obj["Key"], secret)
    crash = wait_at(s3, "c/crash-leaks.csv")[1].decode()
    assert "***" in crash and "weights file is corrupt" in crash  # masked, not dropped
    for log in (stack.state_dir / "logs").glob("*.log"):
        if log.name == "moto.log":
            continue  # the emulator's own request log
        text = log.read_text()
        for secret in planted:
            assert secret not in text, (log.name, secret)


def test_no_log_line_is_forged_by_a_key(outcomes, corpus, stack):
    wait_at(outcomes.s3, f"c/forged\r{FORGED_LINE}.csv")
    logs = [p for p in (stack.state_dir / "logs").glob("*.log") if p.name != "moto.log"]
    mentioned = [p.name for p in logs if "c/forged\\r2026-12-01" in p.read_text()]
    assert "worker0.log" in mentioned  # logged, escaped
    for log in logs:
        forged = [ln for ln in log.read_text().splitlines() if ln.startswith(FORGED_LINE)]
        assert forged == [], (log.name, forged)


#: What only a model can tell (a crash, a refusal): the check, starting none, cannot
MODEL_ONLY = {"c/leaky-model.csv", "c/crash-leaks.csv"}


@pytest.fixture(scope="module")
def checker(stack) -> Any:
    with in_process(stack) as check:
        yield check


@pytest.mark.parametrize("case", CASES, ids=[c.key[:40] for c in CASES])
def test_check_says_what_the_error_says(outcomes, corpus, checker, case):
    """Issue 27: ``scorefleet check`` on each case of the corpus -- its message is the
    .error's, word for word; a file that gets a .scoreout, it says would be scored."""
    got, body = wait_at(outcomes.s3, case.key)
    p = checker(f"s3://{BUCKET}/in/{case.key}")
    if got == "error" and case.key not in MODEL_ONLY:
        assert p.problem is not None, body.decode()[:800]
        assert as_written(p.problem.line) == error_line(body.decode())
    else:
        assert p.problem is None, (p.problem, body.decode()[:300])


def test_worker_keeps_running(outcomes, corpus, stack):
    for case in CASES:
        wait_at(outcomes.s3, case.key)
    workers = [p for p in stack.procs if p.name.startswith("worker")]
    assert workers and all(p.popen.poll() is None for p in workers)
    outcomes.put("c/after-corpus.csv", b"a,b\n1,2\n", HASH)
    assert wait_at(outcomes.s3, "c/after-corpus.csv")[0] == "scoreout"
