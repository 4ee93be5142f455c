"""Log injection: a key, a message or an exception with a newline (or another control
character) must not write a line that looks like a record of its own, and tracebacks
stay readable."""

from __future__ import annotations

import io
import logging
import re
import uuid

import pytest

from scorefleet import logctx

FORGED = "2026-12-01 00:00:00,000 INFO [sf-00000000000000000000 s3://b/in/x.csv] tasks.steps: published s3://b/out/x.csv.scoreout (3 rows)"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[")


@pytest.fixture
def capture():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logctx.install(handler)
    log = logging.getLogger(f"test.injection.{uuid.uuid4().hex}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)


def records(stream: io.StringIO) -> list[str]:
    """The lines that start a record (what a log reader takes for one)."""
    return [ln for ln in stream.getvalue().splitlines() if RECORD_START.match(ln)]


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r", "\u2028", "\x85", "\x0b", "\x0c"])
def test_a_key_with_a_line_break_cannot_forge_a_record(capture, sep):
    log, stream = capture
    key = f"in/a.csv{sep}{FORGED}"
    with logctx.bind("sf-0123456789abcdef0123", f"s3://b/{key}"):
        log.info("scored %s in %d mini-batches", f"s3://b/{key}", 2)
    text = stream.getvalue()
    assert len(records(stream)) == 1, text
    assert len(text.splitlines()) == 1, text
    assert sep not in text.rstrip("\n")
    assert "published s3://b/out/x.csv.scoreout" in text  # still there to read, escaped


def test_the_pipeline_and_uri_fields_are_escaped_too(capture):
    """bind() runs before a step checks its message: a crafted run id reaches the
    pipeline field."""
    log, stream = capture
    with logctx.bind(f"sf-x\n{FORGED}", "s3://b/in/\x1b[2Kclean.csv"):
        log.warning("launch refused")
    text = stream.getvalue()
    assert len(text.splitlines()) == 1 and "\x1b" not in text
    assert "\\n2026-12-01" in text and "\\x1b[2K" in text


def test_bidi_overrides_and_ansi_escapes_are_shown_not_obeyed(capture):
    log, stream = capture
    log.info("file %s", "in/\u202egpj.csv\x1b[31m")
    assert "\\u202e" in stream.getvalue() and "\\x1b[31m" in stream.getvalue()


def test_tracebacks_keep_their_lines_and_escape_the_exception_text(capture):
    log, stream = capture

    def fail() -> None:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise ValueError(f"bad row in in/a.csv\n{FORGED}") from exc

    try:
        fail()
    except ValueError:
        log.exception("score failed")
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(records(stream)) == 1, text
    assert lines.count("Traceback (most recent call last):") == 2  # both exceptions
    assert any(ln.startswith('  File "') and "in fail" in ln for ln in lines)
    assert "The above exception was the direct cause of the following exception:" in lines
    assert any(ln.startswith("ValueError: bad row in in/a.csv\\n2026-12-01") for ln in lines)


def test_exception_text_is_masked_in_tracebacks(capture):
    log, stream = capture
    try:
        raise RuntimeError("connect failed: {'password': 'hunter2-in-a-traceback'}")
    except RuntimeError:
        log.exception("boom")
    assert "hunter2-in-a-traceback" not in stream.getvalue()


def test_other_handlers_still_get_the_original_record(capture):
    log, stream = capture
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    log.addHandler(keep)
    try:
        log.info("key %s", "a\nb")
    finally:
        log.removeHandler(keep)
    assert seen[0].getMessage() == "key a\nb" and "key a\\nb" in stream.getvalue()
