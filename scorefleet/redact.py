"""Scrub credentials from text that comes from outside scorefleet (exception text, a
model's logs and answers, configuration values) before it reaches an .error file, a
log line or ``scorefleet config``.

What scorefleet writes itself (S3 URIs, rerun commands, pipeline ids) is not passed
through here: a key such as ``in/rt/tokens:2026-12-01/batch.csv`` is data, and
masking it would break the rerun command that names it. The patterns are also built
not to match inside a path or URI: a ``key=value`` pair must start a word.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

#: Words that make a key's value a secret.
_KEY_WORDS = (
    r"(?:secret|password|passwd|pwd|token|api[_-]?key|access[_-]?key|credential"
    r"|private[_-]?key|signature|session[_-]?key)"
)
#: A quoted value (JSON, Python reprs), or a bare one up to a separator.
_VALUE = r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s,;&'"{}\[\]()]+)"""

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
            re.DOTALL,
        ),
        MASK,
    ),
    # HTTP authorization headers (plain, JSON or dict): a quoted value whole, else the
    # scheme and its first credential (SigV4's Signature=... is a secret-named key below)
    (
        re.compile(
            r"""(?i)((?<![\w-])["']?(?:proxy-)?authorization["']?\s*[:=]\s*)"""
            r"""("[^"\n]*"|'[^'\n]*'|(?:[\w-]+\s+)?[^\s,;'"]+)"""
        ),
        r"\1" + MASK,
    ),
    # a bare bearer token (an EKS token, a JWT, ...)
    (re.compile(r"(?i)(?<![\w-])(bearer\s+)[A-Za-z0-9._~+/=-]{16,}"), r"\1" + MASK),
    # key=value / key: value / "key": "value" / 'key': 'value' whose key names a secret,
    # as in env dumps, environ({...}), JSON, query strings (X-Amz-Signature=...)
    (
        re.compile(
            rf"""(?i)((?<![\w/.:@-])(["']?)[\w.-]*{_KEY_WORDS}[\w.-]*\2\s*[=:]\s*)"""
            rf"""{_VALUE}"""
        ),
        r"\1" + MASK,
    ),
    # user:password@ in URLs (a password may hold '/'; host:port/path@x is no password)
    (
        re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?!\d{1,5}(?:[/\s]|$))[^@\s]+(@)"),
        r"\1" + MASK + r"\2",
    ),
    # AWS access key ids (long-term and temporary)
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"), MASK),
)

_SECRET_ENV = re.compile(
    r"(?i)(secret|password|passwd|token|credential|private|api_?key|(?:^|_)pass(?:$|_))"
)
_MIN_SECRET_LEN = 6


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    """Whether a variable's name says it holds a secret (cached: every log record is
    redacted, and the environment's names hardly change)."""
    return _SECRET_ENV.search(name) is not None


def _env_secrets(environ: Mapping[str, str]) -> list[str]:
    values = {v for k, v in environ.items() if len(v) >= _MIN_SECRET_LEN and _secret_name(k)}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Mask credentials: values of secret-looking environment variables anywhere in
    the text, private keys, auth headers and bearer tokens, values of secret-named
    keys (plain, quoted, in JSON or dict dumps and query strings), URL passwords and
    AWS key ids."""
    if not text:
        return text
    for secret in _env_secrets(os.environ if environ is None else environ):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def shown_setting(name: str, value: Any) -> str:
    """A setting as ``scorefleet config`` shows it: the model catalog's ``env`` values
    masked whatever their names (a model's environment is where its secrets go), the
    rest through :func:`redact`."""
    if name == "model_catalog" and isinstance(value, Mapping):
        value = copy.deepcopy(dict(value))
        for entry in value.values():
            if isinstance(entry, dict) and isinstance(entry.get("env"), Mapping):
                entry["env"] = dict.fromkeys(entry["env"], MASK)
    return redact(str(value))
