"""Remove secrets from text before it lands in an artifact (logs, saved configs, reports, junit).

Redacts values of ``*_TOKEN=``, ``*_KEY=``, ``*PASSWORD=``, ``*SECRET=`` assignments (also in
``key: value`` and JSON ``"key": "value"`` form), ``Authorization: Bearer …`` headers, passwords in
URLs (``scheme://user:pass@host``), and well-known token shapes (``hf_…``, ``ghp_…``, ``nvapi-…``).

:func:`mask_url` is the one URL masker of the tree (history DB URLs, build URLs, the upload target, and
URLs inside free text): the password becomes ``***`` (or the whole ``user:pass@`` goes, for URLs that are
stored or published), and secret-named query parameters (``?password=…``, ``&token=…``) are masked.
Nothing else of the URL changes, so a URL without secrets comes back exactly as given.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# a name that ends with a secret word, or has one followed by "_" (HF_TOKEN, API_KEY_ID); not
# max_num_tokens, tokenizer_path or num_keys, which are ordinary settings
_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:TOKEN|KEY|PASSWORD|PASSWD|SECRET|CREDENTIALS?)(?:_[A-Za-z0-9_]*)?"
_PATTERNS = [
    # NAME=value (env style): a quoted value whole, else up to whitespace or quote
    re.compile(rf"(?i)\b({_SECRET_NAME})(=)(\"[^\"]*\"|'[^']*'|[^\s'\"]+)"),
    # "name": "value" (JSON) and name: value (YAML)
    re.compile(rf"(?i)(\"{_SECRET_NAME}\"\s*:\s*\")([^\"]*)(\")"),
    re.compile(rf"(?im)^(\s*{_SECRET_NAME}\s*:\s*)(\S.*)$"),
    re.compile(r"(?i)(authorization\s*[:=]\s*(?:bearer|basic|token)\s+)(\S+)"),
    re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+"),
    re.compile(r"\b(hf_[A-Za-z0-9]{16,}|ghp_[A-Za-z0-9]{20,}|nvapi-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9]{20,})\b"),
]


def redact(text: str) -> str:
    """Return ``text`` with secret values replaced by ``***``."""
    for i, pattern in enumerate(_PATTERNS):
        if i == 0:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        elif i == 1:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
        elif i == 4:
            text = pattern.sub(lambda m: mask_url(m.group(0)), text)
        elif i in (2, 3):
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}", text)
        else:
            text = pattern.sub(MASK, text)
    return text


def redact_data(obj: Any) -> Any:
    """Redact every string inside nested dicts/lists (keys that name secrets get their value masked)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and re.fullmatch(rf"(?i){_SECRET_NAME}", k) and isinstance(v, str) and v:
                out[k] = MASK
            else:
                out[k] = redact_data(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact_data(v) for v in obj]
    if isinstance(obj, str):
        return redact(obj)
    return obj


_SECRET_QUERY = re.compile(rf"(?i)([?&]{_SECRET_NAME}=)[^&#]*")


def mask_url(url: str, *, keep_user: bool = True) -> str:
    """``url`` with its credentials hidden: ``scheme://user:***@host/…`` (``keep_user``), or
    ``scheme://host/…`` with the whole ``user[:pass]@`` removed (``keep_user=False``: for URLs that are
    stored or published, where even a user name may be a token). Secret-named query values become ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        if not keep_user:
            authority = hostport
        else:
            authority = f"{user}:{MASK}@{hostport}" if colon else f"{user}@{hostport}"
    tail = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{MASK}", tail)
    return f"{scheme}://{authority}{tail}"
