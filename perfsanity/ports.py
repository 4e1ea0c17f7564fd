"""Find the ports a process tree listens on, from ``/proc`` (Linux).

Servers are started with port 0 (the kernel picks a free port, so two jobs can never collide); we
then read which TCP sockets the server's processes hold in LISTEN state. Nothing is probed and
released, so there is no race.
"""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except (OSError, ValueError):
                continue
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _listening(table: str) -> dict[str, int]:
    """inode -> port for LISTEN sockets in /proc/net/tcp{,6}."""
    out: dict[str, int] = {}
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) > 9 and parts[3] == _LISTEN:
            out[parts[9]] = int(parts[1].rsplit(":", 1)[1], 16)
    return out


def listening_ports(pid: int) -> list[int]:
    """Sorted TCP ports in LISTEN state held by ``pid`` or any of its descendants."""
    inodes: set[str] = set()
    for p in process_tree(pid):
        inodes |= _socket_inodes(p)
    table = {**_listening("/proc/net/tcp"), **_listening("/proc/net/tcp6")}
    return sorted({port for inode, port in table.items() if inode in inodes})
