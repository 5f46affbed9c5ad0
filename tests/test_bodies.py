"""Request bodies that stop or trickle are given up on in time, and free their worker.

The real app behind a real login (so a real stock worker takes the upload), small timeouts,
raw sockets for the clients that no library would imitate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest
import zstandard

from gateway.app import create_app, server_options
from gateway.appkeys import POOL
from gateway.identity.fake import FakeProvider
from tests.conftest import fake_provider_config
from tests.rawhttp import exchange, login, sync_header

PASSWORD = "Pass-Word-0815"
IDLE = 1.0  # seconds; min rate 1000 bytes/s, so 1000 bytes per window
AVERAGE = 8000  # bytes/s: a body must end by IDLE + its size / AVERAGE


@pytest.fixture
async def gateway(tmp_path, serve_app):
    config = fake_provider_config(
        tmp_path,
        GATEWAY_SERVER_BODY_IDLE_TIMEOUT_SECONDS=str(IDLE),
        GATEWAY_SERVER_MIN_BODY_BYTES_PER_SECOND="1000",
        GATEWAY_SERVER_MIN_BODY_AVERAGE_BYTES_PER_SECOND=str(AVERAGE),
    )
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD)
    app = create_app(config, provider=provider)
    port = await serve_app(app, **server_options(config))
    return app, port


def head(path: str, key: str, lines: bytes) -> bytes:
    """A request's head up to its body: the sync header, then `lines` (CRLF-separated)."""
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nanki-sync: " % path.encode()
        + sync_header(key)
        + b"\r\n"
        + lines
        + b"\r\n\r\n"
    )


@pytest.mark.parametrize("path", ["/sync/hostKey", "/sync/meta", "/sync/upload"])
async def test_headers_then_nothing_is_408_and_closed_after_the_idle_timeout(gateway, path):
    app, port = gateway
    key = "" if path == "/sync/hostKey" else await login(port, "alice", PASSWORD)
    began = time.monotonic()
    # A Content-Length past the whole-body limit makes /sync/upload a streamed request.
    length = 100 if path != "/sync/upload" else 10**7
    answer = await exchange(port, head(path, key, b"Content-Length: %d" % length))
    took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert IDLE <= took < IDLE + 1.5


async def test_stalled_upload_holds_no_worker_and_is_408_within_the_timeout(gateway):
    app, port = gateway
    key = await login(port, "alice", PASSWORD)
    body = zstandard.ZstdCompressor().compress(os.urandom(1_000_000))  # the worker reads on
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /sync/upload HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key)
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body[: 100 * 1024]
    )
    await writer.drain()
    began = time.monotonic()
    await asyncio.sleep(0.1)
    assert app[POOL].stats()["busy"] == 0  # a body still arriving holds no worker (spooled)

    async def trickle() -> None:  # a byte every 0.1 s: 10 bytes/s, far below 1000
        for i in range(100 * 1024, len(body)):
            writer.write(body[i : i + 1])
            await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        trickling.cancel()
        writer.close()
    took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert took < 2 * IDLE + 1.0  # the window with the trickle, plus slack
    assert app[POOL].stats()["busy"] == 0


@pytest.mark.parametrize("path", ["/sync/hostKey", "/sync/meta", "/sync/upload"])
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_body_with_a_content_encoding_is_415_before_aiohttp_inflates_it(
    gateway, path, coding
):
    # aiohttp's server inflates such bodies by default (1 KB of gzip arrived as 1 MB): the proxy
    # would forward other bytes than the client sent, and count the wrong ones.
    import gzip
    import zlib

    app, port = gateway
    key = "" if path == "/sync/hostKey" else await login(port, "alice", PASSWORD)
    plain = zstandard.ZstdCompressor().compress(b'{"u":"alice","p":"x"}') + b"\0" * 1_000_000
    body = gzip.compress(plain) if coding == "gzip" else zlib.compress(plain)
    lines = b"Content-Encoding: %s\r\nContent-Length: %d" % (coding.encode(), len(body))
    answer = await exchange(port, head(path, key, lines) + body)
    assert answer.startswith(b"HTTP/1.1 415"), answer[:100]
    assert app[POOL].stats()["busy"] == 0


async def upload_then(port: int, key: str, first: bytes, rate: float, piece: bytes = b"x"):
    """Sends `first` as the start of an upload, then `piece` `rate` times a second; (the answer,
    seconds from the end of `first` until the gateway answered and closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head("/sync/upload", key, b"Content-Length: 100000000") + first)
    await writer.drain()
    began = time.monotonic()

    async def trickle() -> None:
        while True:
            await asyncio.sleep(1 / rate)
            writer.write(piece)

    async def answer() -> bytes:
        got = b""
        with contextlib.suppress(ConnectionError):  # closed while the client still sends
            while chunk := await reader.read(65536):
                got += chunk
        return got

    trickling = asyncio.create_task(trickle())
    try:
        return await asyncio.wait_for(answer(), 15), time.monotonic() - began
    finally:
        trickling.cancel()
        writer.close()


async def test_a_burst_then_a_byte_at_a_time_is_stopped_one_idle_timeout_after_the_burst(gateway):
    # Issue 16, item 3: 100 KiB, then 1 byte a second, held a worker for 2 x the idle timeout
    # (120 s at the defaults), not the one documented. Scaled: a byte every 0.1 s.
    app, port = gateway
    key = await login(port, "alice", PASSWORD)
    body = zstandard.ZstdCompressor().compress(os.urandom(1_000_000))
    answer, took = await upload_then(port, key, body[: 100 * 1024], rate=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert IDLE <= took < IDLE * 1.7, took  # 2 x IDLE before
    assert app[POOL].stats()["busy"] == 0


async def test_a_trickle_above_the_minimum_rate_ends_at_its_deadline(gateway):
    # 2000 bytes a second passes every window (1000 a second), but the body must end by
    # IDLE + size / AVERAGE: 1 + (10,000 + 2,000 t) / 8,000 = t at t = 3 s. Before, it ran
    # until the size cap: cap / rate (28 h at the defaults).
    app, port = gateway
    key = await login(port, "alice", PASSWORD)
    body = zstandard.ZstdCompressor().compress(os.urandom(1_000_000))
    start = body[:10_000]
    answer, took = await upload_then(port, key, start, rate=20, piece=body[10_000:10_100])
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert 2.5 < took < 5.0, took  # 3 s, and a loaded machine's slack
    assert app[POOL].stats()["busy"] == 0


async def test_a_refused_body_is_not_drained_for_long(gateway):
    # A body refused at its first bytes (it inflates past its allowance) whose client keeps
    # sending at a good pace: the answer comes once the rest is dropped, for at most the idle
    # timeout here (10 s at most), then the connection is closed. It was drained at the
    # client's pace until the size cap.
    app, port = gateway
    key = await login(port, "alice", PASSWORD)
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 * 1024 * 1024))
    answer, took = await upload_then(port, key, bomb, rate=20, piece=b"x" * 200)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]  # the stock "too large" answer
    assert answer.endswith(zstandard.ZstdCompressor().compress(b"collection exceeds size limit"))
    assert IDLE <= took < IDLE + 2.0, took
