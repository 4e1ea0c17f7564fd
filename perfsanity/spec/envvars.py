"""``K=V`` environment strings from test configs, parsed into validated assignments.

Real configs write ``worker_env_var: "TLLM_LOG_LEVEL=INFO UCX_TLS=rc,cuda_ipc CUDA_DEVICE=${SLURM_LOCALID}"``.
We split that with shell-like quoting rules (``shlex``), check every name, and keep values as plain
strings. ``${VAR}`` / ``$VAR`` references are expanded at run time by :func:`expand` against the role's
real environment — never by a shell, never by ``eval`` — so a value can never run a command.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" would accept a trailing newline
_REF_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class EnvAssignment:
    """One ``NAME=value`` pair; ``value`` may hold ``${VAR}`` references expanded at run time."""

    name: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


def parse_env_string(text: str) -> tuple[EnvAssignment, ...]:
    """Parse ``"A=1 B='two words' C=${SLURM_LOCALID}"`` into assignments.

    Raises ``ValueError`` with a one-line reason for anything that is not ``NAME=value``.
    """
    if not text or not text.strip():
        return ()
    try:
        words = shlex.split(text, posix=True)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(f"cannot split into NAME=value words: {exc}") from None
    out: list[EnvAssignment] = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"{word!r} is not NAME=value")
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        bad = next((ch for ch in value if unicodedata.category(ch) == "Cc"), None)
        if bad is not None:  # NUL, newline, ESC: values reach launch.sh and command lines
            raise ValueError(f"value of {name} contains the control character {repr(bad)[1:-1]}")
        out.append(EnvAssignment(name, value))
    return tuple(out)


def merge(*layers: Iterable[EnvAssignment]) -> tuple[EnvAssignment, ...]:
    """Later layers override earlier ones by name; the first position of a name is kept."""
    merged: dict[str, EnvAssignment] = {}
    for layer in layers:
        for item in layer:
            merged[item.name] = item
    return tuple(merged.values())


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` from ``env``; unknown names become ``""``.

    Pure string substitution: no command substitution, globbing or word splitting happens.
    """

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        found = env.get(name)
        if found is None or (found == "" and default is not None):
            return default or ""
        return found

    return _REF_RE.sub(repl, value)


def apply(assignments: Iterable[EnvAssignment], base: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``base`` with ``assignments`` applied in order (each may refer to earlier ones)."""
    env = dict(base)
    for item in assignments:
        env[item.name] = expand(item.value, env)
    return env


def to_string(assignments: Iterable[EnvAssignment]) -> str:
    """Render back to one ``K=V`` string, quoting as needed (inverse of :func:`parse_env_string`)."""
    return " ".join(f"{a.name}={shlex.quote(a.value)}" for a in assignments)
