"""The listening sockets, bound by the parent before any child exists.

    bind_group(host, port, count) -> list[socket]    one SO_REUSEPORT socket per child, one port
    bind_one(host, port) -> socket                   a plain one (the metrics listener)
        raise OSError (EADDRINUSE: the port is taken, also by another gateway)

Why a socket per child and not one shared by all (measured, docs/operations/processes.md):
asyncio accepts every pending connection in one go when its socket becomes readable
(`BaseSelectorEventLoop._accept_connection`, up to the backlog), so with one shared socket the
process that wakes first takes a whole burst of connections and the others idle. With
SO_REUSEPORT (Linux 3.9+) the kernel hashes each new connection to one of the group's sockets.
The parent keeps every socket open, so a child that dies loses no queued connection: its
replacement accepts them.

SO_REUSEPORT would also let a second gateway started by mistake share the port silently (same
user): a plain bind of the address first proves nobody holds it, as with one process.
"""

from __future__ import annotations

import socket


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:  # type: ignore[type-arg]
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, address


def _listening(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_one(host: str, port: int) -> socket.socket:
    return _listening(host, port, reuse_port=False)


def bind_group(host: str, port: int, count: int) -> list[socket.socket]:
    probe = bind_one(host, port)  # EADDRINUSE when anyone, SO_REUSEPORT or not, holds it
    port = probe.getsockname()[1]  # port 0 asked for any: the group shares the one given
    probe.close()
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            group.append(_listening(host, port, reuse_port=True))
    except BaseException:
        for sock in group:
            sock.close()
        raise
    return group
