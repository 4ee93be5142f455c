"""Output keys (scorefleet/s3uri.py ``output_uri``): no two distinct input keys share
an outcome, long keys and their shortened forms included (issue 24, defect 7)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from scorefleet.s3uri import ERROR_SUFFIX, MAX_KEY_BYTES, SCOREOUT_SUFFIX, S3Uri, output_uri

IN = S3Uri("b", "in/")
OUT = S3Uri("b", "outputs/of/the/scoring/pipeline/")  # longer than the input prefix


def out(key: str, suffix: str = SCOREOUT_SUFFIX, prefix: S3Uri = OUT) -> str:
    return output_uri(IN, prefix, S3Uri("b", key), suffix).key


def longest(name: str = "k") -> str:
    """An input key of S3's largest size, 1,024 bytes."""
    return "in/" + name * ((MAX_KEY_BYTES - len("in/")) // len(name.encode()))


def test_7_an_input_key_equal_to_a_shortened_name_gets_an_output_of_its_own():
    long_key = longest()
    shortened = out(long_key)
    assert shortened.endswith(SCOREOUT_SUFFIX) and "~" in shortened
    # the input key that names exactly that shortened form (1,003 bytes: a valid key)
    other = IN.key + shortened[len(OUT.key) : -len(SCOREOUT_SUFFIX)]
    assert len(other.encode()) <= MAX_KEY_BYTES
    assert out(other) != shortened
    assert out(other, ERROR_SUFFIX) != out(long_key, ERROR_SUFFIX)


def test_short_keys_keep_their_names():
    assert out("in/2026/q3.csv") == OUT.key + "2026/q3.csv.scoreout"
    assert out("in/a~b.csv") == OUT.key + "a~b.csv.scoreout"


#: key characters: the ones that matter here (~, hex digits, /), and any others
KEY_CHARS = st.one_of(st.sampled_from("~/0123456789abcdef.-_ "), st.characters(codec="utf-8"))
KEYS = st.one_of(
    st.text(KEY_CHARS, min_size=1, max_size=40),
    st.text(KEY_CHARS, min_size=1, max_size=4).map(lambda s: s * (1000 // len(s.encode()) + 1)),
).map(lambda rel: ("in/" + rel).encode()[:MAX_KEY_BYTES].decode("utf-8", "ignore"))


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(KEYS, min_size=1, max_size=20, unique=True), feed=st.booleans())
@example(keys=[longest(), longest("é")], feed=True)
def test_no_two_distinct_input_keys_share_an_output(keys, feed):
    """Over random keys, long ones, and (``feed``) each one's shortened output name
    given back as an input key of its own: the mapping is one to one, within S3's
    key size, and the same every time."""
    keys = [k for k in keys if k != IN.key]
    if feed:
        keys += [
            IN.key + o[len(OUT.key) : -len(SCOREOUT_SUFFIX)]
            for o in map(out, keys)
            if "~" in o[len(OUT.key) :]
        ]
        keys = list(dict.fromkeys(k for k in keys if len(k.encode()) <= MAX_KEY_BYTES))
    for suffix in (SCOREOUT_SUFFIX, ERROR_SUFFIX):
        outs = [out(k, suffix) for k in keys]
        assert len(set(outs)) == len(keys)
        assert all(len(o.encode()) <= MAX_KEY_BYTES for o in outs)
        assert outs == [out(k, suffix) for k in keys]
