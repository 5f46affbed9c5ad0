"""The worker link (gateway/forwarding/wire.py) with the real stock server behind the gateway:
what only the stock server's own behaviour decides (it keeps an idle keep-alive connection
open for good)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from gateway import protocol
from gateway.appkeys import POOL
from gateway.forwarding import wire
from tests import rawhttp
from tests.test_uploads import send, started

BURST = 12


def connections_to(port: int) -> int:
    """Established TCP connections of anyone on this host to 127.0.0.1:`port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def test_a_burst_of_reads_leaves_no_connection_to_the_worker_once_idle(
    cognito, tmp_path, start_gateway, monkeypatch
):
    monkeypatch.setattr(wire, "IDLE_SECONDS", 0.5)
    gw = started(cognito, tmp_path, start_gateway)
    key = gw.call(rawhttp.login(gw.port, "bob", "Correct-Horse-9"))
    meta = protocol.compress(b'{"v":11,"cv":"test"}')
    assert gw.call(send(gw.url, key, meta, "sync/meta"))[0] == 200  # the worker runs
    port = gw.app[POOL]._slots["bob"].process.port
    files = len(os.listdir("/proc/self/fd"))

    async def burst():
        return await asyncio.gather(*(send(gw.url, key, meta, "sync/meta") for _ in range(BURST)))

    assert {status for status, _ in gw.call(burst())} == {200}
    assert connections_to(port) > 1  # concurrent requests, a connection each, kept idle
    time.sleep(1.5)
    assert connections_to(port) == 0
    assert len(os.listdir("/proc/self/fd")) <= files
