"""Find the ports a process (tree) listens on, via :mod:`psutil`.

Servers are started with port 0 (the kernel picks a free port, so two jobs can never collide); we
then read which TCP sockets the server's processes hold in LISTEN state. Nothing is probed and
released, so there is no race. A process that is gone (or not ours to inspect) holds no ports: the
functions return what they can see and never raise for it.
"""

from __future__ import annotations

import socket

import psutil


def pid_exists(pid: int) -> bool:
    return psutil.pid_exists(pid)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (empty when ``pid`` is gone)."""
    try:
        proc = psutil.Process(pid)
        return [pid, *(child.pid for child in proc.children(recursive=True))]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _listening_of(pid: int) -> set[tuple[str, int]]:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return set()
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}


def listening_sockets(pid: int, *, tree: bool = True) -> list[tuple[str, int]]:
    """``(host, port)`` of TCP sockets in LISTEN state held by ``pid`` (and its descendants), by port."""
    found: set[tuple[str, int]] = set()
    for p in process_tree(pid) if tree else [pid]:
        found |= _listening_of(p)
    return sorted(found, key=lambda a: (a[1], a[0]))


def listening_ports(pid: int) -> list[int]:
    """Sorted TCP ports in LISTEN state held by ``pid`` or any of its descendants."""
    return sorted({port for _host, port in listening_sockets(pid)})


def free_port_block(host: str, count: int = 1) -> int:
    """The first of ``count`` consecutive ports that are all free on ``host`` right now.

    For servers that cannot bind port 0 themselves and must be told their port in advance (etcd, an
    SGLang dist-init or bootstrap port): the kernel picks the first one; the caller starts the server
    at once and publishes the port. Unlike port 0 this can race with another process binding the
    same port in between, so callers detect a failed bind where they can (see ``perfsanity.run.services``).
    """
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((host, 0))
            base = first.getsockname()[1]
            if base + count - 1 > 65535:
                continue
            held = []
            try:
                for port in range(base + 1, base + count):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    held.append(sock)
                    sock.bind((host, port))
                return base
            except OSError:
                continue
            finally:
                for sock in held:
                    sock.close()
    raise OSError(f"no block of {count} free ports on {host} after 64 tries")
