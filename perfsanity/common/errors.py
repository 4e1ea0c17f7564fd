"""Exceptions users see. Each carries a one-line message; the CLI prints it and exits with ``exit_code``."""

from __future__ import annotations


class PerfsanityError(Exception):
    """Base of every error the CLI turns into one line and an exit code (never a traceback)."""

    exit_code = 1


class ConfigError(PerfsanityError):
    """Bad input: names the file, the key path, the bad value and what is allowed."""

    exit_code = 2

    def __init__(self, file: str | None, key_path: str, message: str) -> None:
        self.file = file
        self.key_path = key_path
        self.message = message
        where = f"{file}: " if file else ""
        key = f"{key_path}: " if key_path else ""
        super().__init__(f"{where}{key}{message}")


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
