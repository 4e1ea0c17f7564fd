"""Exceptions users see. Each carries a one-line message; the CLI prints it and exits with ``exit_code``."""

from __future__ import annotations


class PerfsanityError(Exception):
    """Base of every error the CLI turns into one line and an exit code (never a traceback)."""

    exit_code = 1


class ConfigError(PerfsanityError):
    """Bad input: names the file, the key path, the bad value and what is allowed."""

    exit_code = 2

    #: longest message shown; a longer one (a 200 KB bad value echoed back) is cut to an excerpt
    MAX_MESSAGE = 400

    def __init__(self, file: str | None, key_path: str, message: str) -> None:
        self.file = file
        self.key_path = _excerpt(key_path, 160)
        self.message = message = _excerpt(message, self.MAX_MESSAGE)
        where = f"{file}: " if file else ""
        key = f"{self.key_path}: " if key_path else ""
        super().__init__(f"{where}{key}{message}")


def _excerpt(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (saying how long it was)."""
    text = text.replace("\r", " ").replace("\n", " ")
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... ({len(text)} characters)"


class WaitTimeout(PerfsanityError):
    """A bounded wait gave up; the message says what it waited for and for how long."""

    exit_code = 3


class RoleFailed(PerfsanityError):
    """A role (GEN_0, CTX_1, DISAGG_SERVER, BENCHMARK, …) failed; message carries its log tail."""

    exit_code = 4

    def __init__(self, role: str, message: str, log_tail: str = "") -> None:
        self.role = role
        self.log_tail = log_tail
        text = f"{role}: {message}"
        if log_tail:
            text += f"\n--- last lines of {role} log ---\n{log_tail}"
        super().__init__(text)
