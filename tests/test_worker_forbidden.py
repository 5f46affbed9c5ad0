"""A worker's 403 is never passed on (forwarding/upstream.py, "A worker's 403"): the host key
was admitted, so a 403 from the sync server means the request reached the wrong server or a
stale one; the client (which logs out on a 403: anki-sync-protocol.md) gets 503 with
Retry-After, and the worker is reported broken (never retired: a retire per 403 would make any
way to draw one cost a worker start per request).

The wrong server is a real stock sync server of another account (a port that account's worker
took once this account's had died); a scripted one answers 403 over aiohttp's client (an
upload spooled to disk goes that way), where the stock server would need a body that large."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

import aiohttp
import pytest

from gateway.web.pace import Pacing
from gateway.workers.process import start_worker
from tests.test_proxy import KEY, FakePool, header, post, proxy_app, z

STOCK = (sys.executable, "-c", "from anki._rsbridge import syncserver; syncserver()")


class RetiringPool(FakePool):
    """FakePool that also records retirements."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.retired: list[str] = []

    def retire(self, account: str, why: str) -> None:
        self.retired.append(account)


@pytest.fixture
async def bobs_server(tmp_path):
    """The real stock sync server of another account, "bob"."""
    worker = await start_worker(
        command=STOCK,
        account="bob",
        secret="secret-of-bob-0123456789",
        collections_dir=tmp_path / "bob-collections",
    )
    yield worker.port
    await worker.stop()


@pytest.mark.parametrize("method", ["sync/meta", "sync/start", "msync/begin"])
async def test_a_request_that_reaches_another_accounts_sync_server_is_a_503_never_a_403(
    tmp_path, aiohttp_server, bobs_server, method
):
    pool = RetiringPool(bobs_server)
    server = await aiohttp_server(await proxy_app(tmp_path, pool, Pacing(5, 100)))
    status, headers, body = await post(
        server, f"/anki/{method}", data=z(b"{}"), headers={"anki-sync": header(KEY)}
    )
    assert (status, headers.get("Retry-After")) == (503, "5"), body
    assert (pool.broken, pool.retired) == (1, [])


async def test_a_worker_403_to_an_upload_through_the_client_is_a_503(tmp_path, aiohttp_server):
    async def answer(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden")
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(answer, "127.0.0.1", 0)
    pool = RetiringPool(upstream.sockets[0].getsockname()[1])
    try:
        server = await aiohttp_server(await proxy_app(tmp_path, pool, Pacing(5, 100)))
        big = z(os.urandom(200_000))  # above forwarding/body.py WHOLE_BODY: spooled, aiohttp
        status, headers, _ = await post(
            server, "/anki/sync/upload", data=big, headers={"anki-sync": header(KEY)}
        )
    finally:
        upstream.close()
    assert (status, headers.get("Retry-After")) == (503, "5")
    assert (pool.broken, pool.retired) == (1, [])


@pytest.fixture
async def alices_server(tmp_path):
    """The real stock sync server of "alice", and the host key it answers to."""
    secret = "secret-of-alice-0123456789"
    worker = await start_worker(
        command=STOCK,
        account="alice",
        secret=secret,
        collections_dir=tmp_path / "alice-collections",
    )
    yield worker.port, hashlib.sha1(f"alice:{secret}".encode()).hexdigest()  # noqa: S324 (the stock server's key)
    await worker.stop()


@pytest.mark.parametrize(
    "query", ["k=not-her-key&v=x", "k=KEY&k=not-her-key&v=x", "k=not-her-key&k=KEY&v=x"]
)
async def test_a_key_in_the_query_that_is_not_the_admitted_one_never_reaches_the_worker(
    tmp_path, aiohttp_server, alices_server, query
):
    """The stock server reads `GET msync/begin`'s key from its query, not from the anki-sync
    header the gateway admitted: a client must not make its own worker answer 403, which the
    gateway takes for the wrong or a stale worker (a 503 and a /health probe per request)."""
    port, key = alices_server
    pool = RetiringPool(port)
    server = await aiohttp_server(await proxy_app(tmp_path, pool, Pacing(5, 100), key=key))
    async with aiohttp.ClientSession() as s:
        async with s.get(
            server.make_url(f"/anki/msync/begin?{query.replace('KEY', key)}"),
            headers={"anki-sync": header(key)},
        ) as r:
            status = r.status
        # The admitted key in the query is served as before (the stock server's own answer).
        async with s.get(
            server.make_url(f"/anki/msync/begin?k={key}&v=x"), headers={"anki-sync": header(key)}
        ) as r:
            served = r.status
    assert (status, served, pool.broken, pool.retired, pool.leases) == (400, 200, 0, [], 1)
