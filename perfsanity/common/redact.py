"""Remove secrets from text before it lands in an artifact (logs, saved configs, reports, junit).

Redacts values of ``*_TOKEN=``, ``*_KEY=``, ``*PASSWORD=``, ``*SECRET=`` assignments (also in
``key: value`` and JSON ``"key": "value"`` form), ``Authorization: Bearer …`` headers, passwords in
URLs (``scheme://user:pass@host``), and well-known token shapes (``hf_…``, ``ghp_…``, ``nvapi-…``).
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
    re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]+:)([^\s@/]+)(@)"),
    re.compile(r"\b(hf_[A-Za-z0-9]{16,}|ghp_[A-Za-z0-9]{20,}|nvapi-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9]{20,})\b"),
]


def redact(text: str) -> str:
    """Return ``text`` with secret values replaced by ``***``."""
    for i, pattern in enumerate(_PATTERNS):
        if i == 0:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        elif i in (1, 4):
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
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
