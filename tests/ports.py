"""A loopback port for a server a test starts later (a gateway whose URL is in its settings, a
`serve` subprocess, a stand-in).

Asking the kernel for port 0 and closing the socket is racy: the kernel hands that same port to
the next outgoing connection or port-0 bind on the host, and this suite makes thousands (the
gateway's workers bind ports from that range too). So the port comes from below the kernel's
ephemeral range (`net.ipv4.ip_local_port_range`), where only other explicit picks go: chosen at
random and checked free. Two tests picking the same port at once is about 1 in 10,000 per pair,
against a clash seen in CI with the port-0 way."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free just now and that the kernel does not hand out on
    its own (below the ephemeral range)."""
    high = _ephemeral_low() - 1
    low = max(1024, high - 12_000)
    for _ in range(200):
        port = random.randint(low, high)  # noqa: S311 - not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")
