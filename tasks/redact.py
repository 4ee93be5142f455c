"""Scrub credentials from text before it reaches an .error file or a log line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"

_PATTERNS = (
    # AWS access key ids (long-term and temporary)
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
    # key=value / key: value pairs whose name says secret
    re.compile(
        r"(?i)((?:secret|password|passwd|pwd|token|api[_-]?key|credential|session[_-]?token)"
        r"[\w.-]*\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
    ),
    # HTTP authorization headers
    re.compile(r"(?i)(authorization\s*[:=]\s*)(\w+\s+)?[^\s,;]+"),
    # user:password@ in URLs
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(@)"),
)

_SECRET_ENV = re.compile(r"(?i)(secret|password|passwd|token|credential|private|api_?key)")
_MIN_SECRET_LEN = 6


def _env_secrets(environ: Mapping[str, str]) -> list[str]:
    values = {v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Mask credentials: values of secret-looking environment variables anywhere in
    the text, AWS key ids, ``password=...``-style pairs, auth headers, URL passwords."""
    if not text:
        return text
    for secret in _env_secrets(os.environ if environ is None else environ):
        text = text.replace(secret, MASK)
    text = _PATTERNS[0].sub(MASK, text)
    text = _PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)
    text = _PATTERNS[2].sub(lambda m: m.group(1) + MASK, text)
    text = _PATTERNS[3].sub(lambda m: m.group(1) + MASK + m.group(2), text)
    return text
