"""The worker link (gateway/forwarding/wire.py) with the real stock server behind the gateway:
what only the stock server's own behaviour decides (it keeps an idle keep-alive connection
open for good)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from gateway import protocol
from gateway.appkeys import POOL
from gateway.forwarding import wire
from gateway.proxy import PROXY
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


def test_a_write_never_goes_over_a_kept_connection_whose_worker_died_while_the_loop_was_busy(
    cognito, tmp_path, start_gateway
):
    # The worker is killed and gone while the gateway's loop is blocked, so the loop has not
    # seen the connection end: only the poll on taking it (wire._readable) can tell.
    gw = started(cognito, tmp_path, start_gateway)
    key = gw.call(rawhttp.login(gw.port, "bob", "Correct-Horse-9"))
    meta = protocol.compress(b'{"v":11,"cv":"test"}')
    assert gw.call(send(gw.url, key, meta, "sync/meta"))[0] == 200  # leaves a kept connection
    process = gw.app[POOL]._slots["bob"].process
    port, pid = process.port, process.pid
    assert connections_to(port) == 1
    link = gw.app[PROXY]._upstream._link

    async def kill_then_write() -> str:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while connections_to(port) and time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 (on purpose: the loop must not see the end)
        assert link._idle[port] and not link._idle[port][0].closed
        graves = protocol.compress(b'{"chunk":{"cards":[],"notes":[],"decks":[]}}')
        try:
            answer = await link.exchange(
                port, "POST", "/sync/applyGraves", {}, graves, reuse=True, whole=1024
            )
        except (wire.Refused, wire.Stale, wire.Broken) as exc:
            return type(exc).__name__
        answer.release()
        return f"answered {answer.status}"

    # Refused: the request went to no connection at all (a fresh one to a closed port), so it
    # may go to a fresh worker; Stale would mean it was written over the dead connection.
    assert gw.call(kill_then_write()) == "Refused"
