"""Bounded waiting: every wait has a deadline and says what it waited for when it gives up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from perfsanity.common.errors import WaitTimeout

T = TypeVar("T")


class Deadline:
    """A point in time (monotonic clock) with a description of the phase it bounds."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def cap(self, seconds: float) -> float:
        """``seconds``, but never beyond this deadline."""
        return min(seconds, self.remaining)


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = 0.05,
    max_poll_s: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something other than ``None``/``False``; return that.

    Polls start at ``poll_s`` and back off to ``max_poll_s``. ``check`` may raise to abort the wait
    (for example when the process being waited on died). On timeout raises :class:`WaitTimeout`
    "waited Ns for <what>" plus whatever ``on_timeout`` adds (e.g. the last state seen).
    """
    deadline = time.monotonic() + timeout_s
    delay = poll_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        now = time.monotonic()
        if now >= deadline:
            detail = on_timeout() if on_timeout else ""
            raise WaitTimeout(f"waited {timeout_s:g}s for {what}; gave up" + (f": {detail}" if detail else ""))
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, max_poll_s)
