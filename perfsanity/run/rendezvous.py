"""The job-scoped rendezvous directory: how roles find each other without fixed ports or sleeps.

Files (all written by atomic rename, so a reader never sees half a file):

* ``<ROLE>.addr`` — ``{"role", "host", "port", "node", "pid"}`` once the role's server is up.
* ``<ROLE>.failed`` — ``{"role", "message", "log_tail"}`` when a role failed; every waiter aborts at
  once naming that role instead of waiting for its timeout.
* ``benchmark.status`` — ``{"status": "passed"|"failed", ...}``, written by BENCHMARK in a ``finally``;
  servers stop when it appears.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from perfsanity.common.errors import RoleFailed
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import redact
from perfsanity.common.waits import wait_until
from perfsanity.engines.base import Address

STATUS_FILE = "benchmark.status"


class Rendezvous:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    # ---- addresses ---------------------------------------------------------------
    def publish(self, address: Address, **extra: object) -> None:
        data = {"role": address.role, "host": address.host, "port": address.port,
                "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()), "pid": os.getpid(), **extra}
        write_atomic(self.path / f"{address.role}.addr", json.dumps(data) + "\n")

    def address(self, role: str) -> Address | None:
        try:
            data = json.loads((self.path / f"{role}.addr").read_text())
        except (OSError, ValueError):
            return None
        return Address(data["role"], data["host"], int(data["port"]))

    def backends(self, role: str) -> list[str]:
        """``host:port`` of each server behind ``role``'s published address (several frontends behind
        nginx), or just the address itself."""
        try:
            data = json.loads((self.path / f"{role}.addr").read_text())
        except (OSError, ValueError):
            return []
        listed = data.get("backends")
        return [str(b) for b in listed] if isinstance(listed, list) and listed else [f"{data['host']}:{data['port']}"]

    def wait_for(self, roles: Sequence[str], *, timeout_s: float, waiter: str) -> dict[str, Address]:
        """Wait until every role in ``roles`` published its address; abort at once if any failed."""
        found: dict[str, Address] = {}

        def check() -> dict[str, Address] | None:
            self.raise_if_failed()
            for role in roles:
                if role not in found:
                    addr = self.address(role)
                    if addr is not None:
                        found[role] = addr
            return found if len(found) == len(roles) else None

        def missing() -> str:
            return "still missing: " + ", ".join(r for r in roles if r not in found)

        return wait_until(check, timeout_s=timeout_s, what=f"{waiter}: addresses of {', '.join(roles)}", max_poll_s=0.1,
                          on_timeout=missing)

    # ---- failures ----------------------------------------------------------------
    def report_failure(self, role: str, message: str, log_tail: str = "") -> None:
        data = {"role": role, "message": redact(message), "log_tail": redact(log_tail)}
        write_atomic(self.path / f"{role}.failed", json.dumps(data) + "\n")

    def failures(self) -> list[dict]:
        out = []
        for f in sorted(self.path.glob("*.failed")):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def raise_if_failed(self) -> None:
        failed = self.failures()
        if failed:
            first = failed[0]
            raise RoleFailed(first["role"], first["message"], first.get("log_tail", ""))

    # ---- job services (values a helper process publishes, e.g. an event-plane broker URL) ----
    def publish_value(self, name: str, value: str) -> None:
        write_atomic(self.path / f"{name}.value", json.dumps({"name": name, "value": value}) + "\n")

    def value(self, name: str) -> str | None:
        try:
            return json.loads((self.path / f"{name}.value").read_text())["value"]
        except (OSError, ValueError, KeyError):
            return None

    def wait_value(self, name: str, *, timeout_s: float, waiter: str) -> str:
        """Wait for a published service value; abort at once if any role failed."""

        def check() -> str | None:
            self.raise_if_failed()
            return self.value(name)

        return wait_until(check, timeout_s=timeout_s, what=f"{waiter}: job service {name!r} to be published",
                          max_poll_s=0.1)

    # ---- benchmark status --------------------------------------------------------
    def write_status(self, status: str, **extra: object) -> None:
        write_atomic(self.path / STATUS_FILE, json.dumps({"status": status, **extra}) + "\n")

    def status(self) -> dict | None:
        try:
            return json.loads((self.path / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return None
