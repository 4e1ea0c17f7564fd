"""Find the ports a process (tree) listens on, from ``/proc`` (Linux).

Servers are started with port 0 (the kernel picks a free port, so two jobs can never collide); we
then read which TCP sockets the server's processes hold in LISTEN state. Nothing is probed and
released, so there is no race.
"""

from __future__ import annotations

import ipaddress
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


def _decode_addr(hex_addr: str) -> str:
    """An address column of /proc/net/tcp{,6} (little-endian 32-bit words) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    return str(ipaddress.IPv6Address(words))


def _listening(table: Path) -> dict[str, tuple[str, int]]:
    """inode -> (host, port) for LISTEN sockets in one /proc/.../net/tcp{,6} table."""
    out: dict[str, tuple[str, int]] = {}
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) > 9 and parts[3] == _LISTEN:
            host, port = parts[1].rsplit(":", 1)
            out[parts[9]] = (_decode_addr(host), int(port, 16))
    return out


def listening_sockets(pid: int, *, tree: bool = True) -> list[tuple[str, int]]:
    """``(host, port)`` of TCP sockets in LISTEN state held by ``pid`` (and its descendants), by port."""
    inodes: set[str] = set()
    for p in process_tree(pid) if tree else [pid]:
        inodes |= _socket_inodes(p)
    table = {**_listening(Path(f"/proc/{pid}/net/tcp")), **_listening(Path(f"/proc/{pid}/net/tcp6"))}
    return sorted({addr for inode, addr in table.items() if inode in inodes}, key=lambda a: (a[1], a[0]))


def listening_ports(pid: int) -> list[int]:
    """Sorted TCP ports in LISTEN state held by ``pid`` or any of its descendants."""
    return sorted({port for _host, port in listening_sockets(pid)})
