"""Remove secrets from text before it lands in an artifact (logs, saved configs, reports, junit).

Redacts values of ``*TOKEN=``, ``*KEY=``, ``*PASS=``, ``*PASSWORD=``, ``*SECRET=`` assignments (also in
``key: value`` and JSON ``"key": "value"`` form), ``Authorization: Bearer …`` headers, passwords in
URLs (``scheme://user:pass@host``), and well-known token shapes (``hf_…``, ``ghp_…``, ``nvapi-…``, ``sk-…``).
Every pattern runs in time linear in its input (no nested or overlapping quantifiers), so a
100 MB log with pathological lines is redacted in seconds.

:func:`mask_url` is the one URL masker of the tree (history DB URLs, build URLs, the upload target, and
URLs inside free text): the password becomes ``***`` (or the whole ``user:pass@`` goes, for URLs that are
stored or published), and secret-named query parameters (``?password=…``, ``&token=…``) are masked.
Nothing else of the URL changes, so a URL without secrets comes back exactly as given.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# Secret names: a name that ends with a secret word, or has one followed by "_" (HF_TOKEN, API_KEY_ID,
# PGPASS, DB_PASSWORD); not max_num_tokens, tokenizer_path or num_keys, which are ordinary settings.
# Every pattern below is linear in its input: a name is one possessive run that starts only where no
# name character precedes it, so no run is scanned twice, and the secret-word test is done on the run
# afterwards (is_secret_name), not by backtracking into it.
_WORDS = ("TOKEN", "KEY", "PASSWORD", "PASSWD", "PASS", "SECRET", "CREDENTIAL", "CREDENTIALS")
_WORD_THEN_UNDERSCORE = re.compile(r"(?:TOKEN|KEY|PASS(?:WORD|WD)?|SECRET|CREDENTIALS?)_")
_NAME = r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]++)"
_ENV = re.compile(rf"{_NAME}=(\"[^\"\n]*+\"|'[^'\n]*+'|[^\s'\"]++)")
_JSON = re.compile(r"(\"([A-Za-z0-9_.-]++)\"[ \t]*+:[ \t]*+\")([^\"\n]*+)(\")")
_YAML = re.compile(r"(?m)^([ \t]*+([A-Za-z0-9_.-]++)[ \t]*+:[ \t]*+)(\S[^\n]*+)$")
_AUTH = re.compile(r"(?i)(authorization[ \t]*+[:=][ \t]*+(?:bearer|basic|token)[ \t]++)(\S++)")
_URL = re.compile(r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^\s'\"<>]++")
_SHAPES = re.compile(r"(?<![A-Za-z0-9_])(?:hf_[A-Za-z0-9]{16,}+|ghp_[A-Za-z0-9]{20,}+|nvapi-[A-Za-z0-9_-]{20,}+"
                     r"|sk-[A-Za-z0-9]{20,}+)(?![A-Za-z0-9_])")


def is_secret_name(name: str) -> bool:
    """Whether ``name`` (an env var, a YAML/JSON key) names a secret (see the rule above)."""
    upper = name.upper()
    return upper.endswith(_WORDS) or _WORD_THEN_UNDERSCORE.search(upper) is not None


# a value that only refers to another variable (HF_TOKEN=${HF_TOKEN}, "$HF_TOKEN") is how a secret is
# passed on without being written: it stays
_REFERENCE = re.compile(r"([\"']?)\$(?:\{[A-Za-z_][A-Za-z0-9_]*+\}|[A-Za-z_][A-Za-z0-9_]*+)\1")


def _mask_env(m: re.Match[str]) -> str:
    if not is_secret_name(m.group(1)) or _REFERENCE.fullmatch(m.group(2)):
        return m.group(0)
    return f"{m.group(1)}={MASK}"


def redact(text: str) -> str:
    """Return ``text`` with secret values replaced by ``***`` (time linear in ``len(text)``)."""
    text = _ENV.sub(_mask_env, text)
    text = _JSON.sub(lambda m: f"{m.group(1)}{MASK}{m.group(4)}" if is_secret_name(m.group(2)) else m.group(0), text)
    text = _YAML.sub(lambda m: f"{m.group(1)}{MASK}" if is_secret_name(m.group(2)) else m.group(0), text)
    text = _AUTH.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    return _SHAPES.sub(MASK, text)


def redact_data(obj: Any) -> Any:
    """Redact every string inside nested dicts/lists (keys that name secrets get their value masked)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v:
                out[k] = MASK
            else:
                out[k] = redact_data(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact_data(v) for v in obj]
    if isinstance(obj, str):
        return redact(obj)
    return obj


_SECRET_QUERY = re.compile(r"([?&])([^=&#]++)=[^&#]*+")


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
    tail = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if is_secret_name(m.group(2)) else m.group(0), tail)
    return f"{scheme}://{authority}{tail}"
