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
    r"|private[_-]?key|signature|session[_-]?key|account[_-]?key|shared[_-]?access[_-]?key"
    r"|client[_-]?secret|auth[_-]?key)"
)
#: A private key's block, PEM or PGP (``-----BEGIN RSA PRIVATE KEY-----``,
#: ``-----BEGIN PGP PRIVATE KEY BLOCK-----``), and its base64 body lines.
_PRIVATE = r"-----(?:BEGIN|END) [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
_BODY_LINE = r"[ \t]*[A-Za-z0-9+/=]{16,}[ \t]*"

#: Tokens known by their shape alone, wherever they stand (the prefixes their issuers
#: give them, as secret scanners such as gitleaks and detect-secrets know them).
_TOKENS = (
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"xapp-[0-9]-[A-Za-z0-9-]{10,}",  # Slack app-level
    r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"whsec_[A-Za-z0-9]{20,}",  # Stripe webhook
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
    r"ya29\.[0-9A-Za-z_\-]{20,}",  # Google OAuth access token
    r"gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub
    r"github_pat_[A-Za-z0-9_]{40,}",  # GitHub fine-grained
    r"glpat-[A-Za-z0-9_\-]{20,}",  # GitLab
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}",  # OpenAI, Anthropic
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"npm_[A-Za-z0-9]{36}",  # npm
    r"pypi-[A-Za-z0-9_\-]{50,}",  # PyPI
    r"SG\.[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]{20,}",  # SendGrid
    r"dop_v1_[a-f0-9]{64}",  # DigitalOcean
    r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",  # Shopify
    r"dapi[a-f0-9]{32}",  # Databricks
    r"key-[0-9a-zA-Z]{32}",  # Mailgun
    r"SK[0-9a-fA-F]{32}",  # Twilio
    r"AccountKey=[A-Za-z0-9+/=]{20,}",  # Azure storage connection string
    # a JWT anywhere (three base64url parts, the first two JSON objects: eyJ...)
    r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
)
#: A quoted value (JSON, Python reprs), or a bare one up to a separator.
_VALUE = r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s,;&'"{}\[\]()]+)"""

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # private keys, PEM and PGP: a whole block; else, where an excerpt cut it, its
    # BEGIN line and the body after it, or the body before its END line
    (re.compile(rf"{_PRIVATE}.*?{_PRIVATE}", re.DOTALL), MASK),
    (re.compile(rf"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?:\s*{_BODY_LINE})*"), MASK),
    (re.compile(rf"(?m)(?:^{_BODY_LINE}\n)*^.*?-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"), MASK),
    # HTTP authorization and cookie headers (plain, JSON or dict): a quoted value
    # whole, else the scheme and its first credential (SigV4's Signature=... is a
    # secret-named key below); a cookie's every pair
    (
        re.compile(
            r"""(?i)((?<![\w-])["']?(?:proxy-)?authorization["']?\s*[:=]\s*)"""
            r"""("[^"\n]*"|'[^'\n]*'|(?:[\w-]+\s+)?[^\s,;'"]+)"""
        ),
        r"\1" + MASK,
    ),
    (
        re.compile(
            r"""(?i)((?<![\w-])["']?(?:set-)?cookie["']?\s*[:=]\s*)("[^"\n]*"|'[^'\n]*'|[^\n]+)"""
        ),
        r"\1" + MASK,
    ),
    # a flag that names a secret, then its value: --password hunter2, -token x
    (
        re.compile(rf"""(?i)((?<![\w-])--?[\w-]*{_KEY_WORDS}\s+)(?!-)({_VALUE})"""),
        r"\1" + MASK,
    ),
    # an Azure SAS token's signature (sig=...) in a query string or connection string
    (re.compile(r"(?i)((?<=[?&;])sig=)[A-Za-z0-9%+/=]{10,}"), r"\1" + MASK),
    # tokens by their shape (_TOKENS)
    (re.compile(r"(?<![A-Za-z0-9_\-])(?:" + "|".join(_TOKENS) + ")"), MASK),
    # a bare bearer token (an EKS token, a JWT, ...)
    (re.compile(r"(?i)(?<![\w-])(bearer\s+)[A-Za-z0-9._~+/=-]{16,}"), r"\1" + MASK),
    # key=value / key: value / "key": "value" / 'key': 'value' whose key names a secret,
    # as in env dumps, environ({...}), JSON, query strings (X-Amz-Signature=...)
    (
        re.compile(
            rf"""(?i)((?<![\w/.:@-])(["']?)[\w.-]*{_KEY_WORDS}(?-i:(?![a-z]))[\w.-]*\2\s*[=:]\s*)"""
            rf"""{_VALUE}"""
        ),
        r"\1" + MASK,
    ),
    # user:password@ in URLs, to the last '@' (a password may hold '/' and '@';
    # host:port/path@x is no password)
    (
        re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?!\d{1,5}(?:[/\s]|$))\S+(@)"),
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
