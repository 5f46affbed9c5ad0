"""The proxy against a scripted upstream (an aiohttp server standing in for a worker).

The stock server cannot be made to redirect, fail mid-body or echo headers on demand, so these
paths use a small real HTTP server; the real worker is covered in test_sync_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import zstandard
from aiohttp import web

from gateway.app import PROXY, add_routes
from gateway.appkeys import CONFIG, PACING
from gateway.auth.admission import Admission
from gateway.config import load
from gateway.forwarding.upstream import new_upstream_session
from gateway.identity.provider import Identity
from gateway.proxy import Proxy
from gateway.registry import SqliteRegistry
from gateway.web.middlewares import errors_and_access_log
from gateway.web.pace import Pacing

KEY = "f" * 40
SEEN: web.AppKey[dict] = web.AppKey("seen", dict)


def z(data: bytes) -> bytes:
    """A body as Anki sends it: one zstd frame (the gateway refuses anything else)."""
    return zstandard.ZstdCompressor(level=1).compress(data)


def pieces(size: int, piece: int = 65536) -> list[bytes]:
    """One zstd frame of `size` random bytes (about as long on the wire), in pieces."""
    frame = z(os.urandom(size))
    return [frame[i : i + piece] for i in range(0, len(frame), piece)]


def raw_frame(blocks: int) -> tuple[bytes, bytes, bytes]:
    """A zstd frame of `blocks` raw blocks of 128 KiB, as (head, one block, end): a large
    body whose pieces can be sent again and again without holding it whole."""
    head = (0xFD2FB528).to_bytes(4, "little") + bytes([0x00, 0x58])  # 2 MiB window
    block = ((128 * 1024) << 3).to_bytes(3, "little") + os.urandom(128 * 1024)
    end = (1).to_bytes(3, "little")  # the last block: raw, empty
    return head, block, end


def header(key: str = KEY) -> str:
    return json.dumps({"v": 11, "k": key, "c": "test", "s": "sess"}, separators=(",", ":"))


@dataclass
class FakeWorker:
    account: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


class FakePool:
    """Leases always point at the scripted upstream; counts broken reports."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.broken = 0
        self.leases = 0

    @contextlib.asynccontextmanager
    async def lease(self, account: str) -> AsyncIterator[FakeWorker]:
        self.leases += 1
        yield FakeWorker(account, self.port)

    async def report_broken(self, account: str) -> None:
        self.broken += 1

    def stats(self) -> dict[str, int]:
        return {"live": 1, "busy": 0, "starting": 0, "max": 1}


async def upstream_app() -> web.Application:
    seen: dict = {}

    async def echo(request: web.Request) -> web.StreamResponse:
        total = 0
        async for chunk in request.content.iter_chunked(65536):
            total += len(chunk)
        seen["headers"] = dict(request.headers)
        seen["path"] = request.path
        return web.Response(
            body=b"zstd-bytes",
            headers={
                "anki-original-size": "123",
                "Connection": "close, X-Secret-Hop",
                "X-Secret-Hop": "drop me",
                "X-Total": str(total),
            },
        )

    async def plain(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.setdefault("peers", []).append(request.transport.get_extra_info("peername"))
        return web.Response(body=b"ok")

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("http://elsewhere.example/")

    async def broken(request: web.Request) -> web.StreamResponse:
        # Past the part read whole before the answer starts (forwarding/upstream.py).
        sent = 1000 if request.path.endswith("small") else 100_000
        response = web.StreamResponse(headers={"Content-Length": "1000000"})
        await response.prepare(request)
        await response.write(b"x" * sent)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return response

    async def read_then_drop(request: web.Request) -> web.StreamResponse:
        # The worker got the whole request, then its connection broke before any answer.
        await request.read()
        seen.setdefault("delivered", []).append(request.path)
        assert request.transport is not None
        request.transport.abort()
        return web.Response(body=b"never sent")

    async def endless(request: web.Request) -> web.StreamResponse:
        # A large download; records whether the gateway stopped taking it.
        response = web.StreamResponse()
        await response.prepare(request)
        sent = 0
        try:
            while sent < 1024**3:
                await response.write(b"d" * 65536)
                sent += 65536
        except (ConnectionError, asyncio.CancelledError):
            seen["download"] = ("cut", sent)
            raise
        seen["download"] = ("complete", sent)
        return response

    async def read_some_then_abort(request: web.Request) -> web.StreamResponse:
        # A worker that dies in the middle of an upload.
        got = 0
        async for chunk in request.content.iter_any():
            got += len(chunk)
            if got > 200_000:
                break
        assert request.transport is not None
        request.transport.abort()
        return web.Response(body=b"never sent")

    async def pausing(request: web.Request) -> web.StreamResponse:
        # A worker that pauses mid-answer for longer than the client idle timeout (0.5 s).
        response = web.StreamResponse(headers={"Content-Length": "20"})
        await response.prepare(request)
        await response.write(b"a" * 10)
        await asyncio.sleep(1.2)
        await response.write(b"b" * 10)
        return response

    app = web.Application(client_max_size=0)
    app[SEEN] = seen
    app.router.add_post("/sync/meta", echo)
    app.router.add_post("/sync/upload", echo)
    app.router.add_post("/sync/start", plain)
    app.router.add_post("/sync/chunk", plain)
    app.router.add_post("/sync/redirectme", redirect)
    app.router.add_post("/sync/broken", broken)
    app.router.add_post("/sync/brokensmall", broken)
    app.router.add_post("/msync/mediaChanges", plain)
    app.router.add_post("/sync/download", endless)
    app.router.add_post("/msync/downloadFiles", pausing)
    app.router.add_post("/sync/uploadDies", read_some_then_abort)
    for method in ("applyChanges", "applyChunk", "finish"):
        app.router.add_post(f"/sync/{method}", read_then_drop)
    return app


async def proxy_app(tmp_path, pool: FakePool, pacing: Pacing, key: str = KEY) -> web.Application:
    """The proxy under "/anki/" with alice's host key `key`, sending to `pool`'s upstream."""
    config = load(
        None,
        {
            "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Test1",
            "GATEWAY_COGNITO_CLIENT_ID": "c",
            "GATEWAY_SERVER_PATH_PREFIX": "/anki/",
        },
    )
    registry = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "collections")
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", key)
    session = new_upstream_session()
    reused = new_upstream_session(reuse=True)
    app = web.Application(middlewares=[errors_and_access_log])
    app[CONFIG] = config
    app[PACING] = pacing
    app[PROXY] = Proxy(Admission(registry), pool, session, reused)  # type: ignore[arg-type]
    add_routes(app, "/anki/")

    async def close(_: web.Application) -> None:
        app[PROXY].close()
        await session.close()
        await reused.close()
        await registry.close()

    app.on_cleanup.append(close)
    return app


@pytest.fixture
async def stack(tmp_path, aiohttp_server):
    upstream = await aiohttp_server(await upstream_app())
    pool = FakePool(upstream.port)
    app = await proxy_app(tmp_path, pool, Pacing(idle_timeout=0.5, min_rate=100))
    server = await aiohttp_server(app)
    yield server, upstream, pool


async def post(server, path: str, **kwargs) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.post(server.make_url(path), allow_redirects=False, **kwargs) as r:
            return r.status, dict(r.headers), await r.read()


async def test_request_is_forwarded_and_hop_by_hop_headers_dropped(stack):
    server, upstream, _ = stack
    status, headers, body = await post(
        server,
        "/anki/sync/meta",
        data=z(b"payload"),
        headers={
            "anki-sync": header(),
            "Connection": "keep-alive, X-Client-Hop",
            "X-Client-Hop": "1",
        },
    )
    assert (status, body) == (200, b"zstd-bytes")
    assert headers["anki-original-size"] == "123"
    assert "X-Secret-Hop" not in headers
    seen = upstream.app[SEEN]
    assert seen["path"] == "/sync/meta"
    assert seen["headers"]["anki-sync"] == header()  # forwarded untouched
    assert "X-Client-Hop" not in seen["headers"]


async def test_unknown_key_is_403_and_never_reaches_a_worker(stack):
    server, _, pool = stack
    status, _, _ = await post(
        server, "/anki/sync/meta", data=z(b"x"), headers={"anki-sync": header("0" * 40)}
    )
    assert status == 403
    status, _, _ = await post(
        server, "/anki/sync/meta", data=z(b"x"), headers={"anki-sync": header("")}
    )
    assert status == 403
    assert pool.leases == 0


async def test_missing_header_is_501_and_malformed_header_is_400(stack):
    server, _, pool = stack
    assert (await post(server, "/anki/sync/meta", data=z(b"x")))[0] == 501
    assert (await post(server, "/anki/msync/begin", data=z(b"x"), headers={"anki-sync": "{"}))[
        0
    ] == 400
    assert pool.leases == 0


@pytest.mark.parametrize(
    "path", ["/anki/other", "/sync/meta", "/anki/sync/../../etc/passwd", "/anki/syncx/meta", "/"]
)
async def test_outside_sync_and_msync_is_404(stack, path):
    server, _, pool = stack
    status, _, _ = await post(server, path, data=z(b"x"), headers={"anki-sync": header()})
    assert status == 404
    assert pool.leases == 0


async def test_upstream_redirect_is_passed_back_not_followed(stack):
    server, _, _ = stack
    status, headers, _ = await post(
        server, "/anki/sync/redirectme", data=z(b"x"), headers={"anki-sync": header()}
    )
    assert status == 308
    assert headers["Location"] == "http://elsewhere.example/"


async def test_mid_body_upstream_failure_aborts_the_client_connection(stack):
    server, _, _ = stack
    async with aiohttp.ClientSession() as s:
        async with s.post(
            server.make_url("/anki/sync/broken"), data=z(b"x"), headers={"anki-sync": header()}
        ) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()


async def test_an_upstream_failing_within_the_part_read_whole_is_a_502_not_a_cut_answer(stack):
    # Nothing of the answer has gone to the client yet: a clean 502 ("try again").
    server, _, _ = stack
    status, _, _ = await post(
        server, "/anki/sync/brokensmall", data=z(b"x"), headers={"anki-sync": header()}
    )
    assert status == 502


async def test_100_mb_upload_streams_with_flat_memory(stack):
    server, upstream, _ = stack
    head, block, end = raw_frame(799)  # just under 100 MiB of raw blocks (the cap)
    size = len(head) + 799 * len(block) + len(end)

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(799):
            yield block
        yield end

    # Everything (client, gateway, upstream) shares this process; the client's own chunks are
    # reused, so whatever tracemalloc sees at peak is buffering in the gateway or the upstream.
    tracemalloc.start()
    status, headers, _ = await post(
        server, "/anki/sync/upload", data=body(), headers={"anki-sync": header()}
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert status == 200
    assert headers["X-Total"] == str(size)
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_small_chunked_body_is_forwarded_whole_with_content_length(stack):
    # Sent chunked, the stock server may answer before the closing chunk arrives and then reset
    # the connection; a small body therefore goes upstream with a Content-Length (bytes intact).
    server, upstream, _ = stack

    frame = z(b"abcdef")

    async def chunked():
        yield frame[:5]
        yield frame[5:]

    status, headers, _ = await post(
        server, "/anki/sync/meta", data=chunked(), headers={"anki-sync": header()}
    )
    assert status == 200 and headers["X-Total"] == str(len(frame))
    seen = upstream.app[SEEN]["headers"]
    assert seen.get("Content-Length") == str(len(frame))
    assert "Transfer-Encoding" not in seen


async def test_large_body_goes_upstream_whole_with_a_content_length(stack):
    # Spooled whole first (web/spool.py): a body still arriving holds no worker.
    server, upstream, _ = stack

    body = pieces(10 * 65536)

    async def big():
        for piece in body:
            yield piece

    status, headers, _ = await post(
        server, "/anki/sync/upload", data=big(), headers={"anki-sync": header()}
    )
    assert status == 200 and headers["X-Total"] == str(sum(map(len, body)))
    seen = upstream.app[SEEN]["headers"]
    assert seen.get("Content-Length") == str(sum(map(len, body)))
    assert "Transfer-Encoding" not in seen


async def test_small_requests_share_kept_connections_and_spooled_bodies_go_on_fresh_ones(stack):
    # Over the worker link (forwarding/wire.py) every small request may take a kept
    # connection; a write is still never sent twice (below). Spooled bodies go through
    # aiohttp's client, each on a fresh connection.
    server, upstream, _ = stack
    for _ in range(3):
        await post(
            server, "/anki/msync/mediaChanges", data=z(b"small"), headers={"anki-sync": header()}
        )
    for _ in range(2):
        await post(server, "/anki/sync/start", data=z(b"small"), headers={"anki-sync": header()})
    peers = list(upstream.app[SEEN]["peers"])
    assert len(set(peers)) == 1

    body = pieces(2 * 65536)

    async def big():
        for piece in body:
            yield piece

    for _ in range(2):
        await post(server, "/anki/sync/chunk", data=big(), headers={"anki-sync": header()})
    others = upstream.app[SEEN]["peers"][5:]
    assert len(set(others)) == 2 and not set(others) & set(peers)


@pytest.mark.parametrize("method", ["applyChanges", "applyChunk", "finish"])
async def test_request_the_worker_read_before_its_connection_broke_is_never_sent_again(
    stack, method
):
    server, upstream, _ = stack
    # Warm the reused connection first, as a sync does with meta.
    await post(server, "/anki/msync/mediaChanges", data=z(b"x"), headers={"anki-sync": header()})
    status, _, _ = await post(
        server, f"/anki/sync/{method}", data=z(b"changes"), headers={"anki-sync": header()}
    )
    assert 500 <= status < 600
    assert upstream.app[SEEN]["delivered"] == [f"/sync/{method}"]


async def test_client_that_stops_reading_a_download_is_cut_off_and_frees_the_worker(stack):
    server, upstream, _ = stack
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = z(b"{}")
    writer.write(
        b"POST /anki/sync/download HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
        + b"anki-sync: "
        + header().encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    began = time.monotonic()
    seen = upstream.app[SEEN]
    for _ in range(200):  # the client reads nothing meanwhile
        if "download" in seen:
            break
        await asyncio.sleep(0.05)
    took = time.monotonic() - began
    writer.close()
    assert seen.get("download", ("",))[0] == "cut"
    assert took < 3  # idle timeout 0.5 s, plus socket buffers filling


async def test_worker_dying_mid_upload_is_502_and_the_rest_of_the_body_is_drained(stack, caplog):
    # The body reader must let go when the upload is dropped: aiohttp then reads and discards
    # the rest; a read left waiting made that fail and the client saw a broken connection.
    caplog.set_level(logging.DEBUG)
    server, _, _ = stack

    body = pieces(40 * 65536)

    async def slow_body():
        for piece in body:
            yield piece
            await asyncio.sleep(0.01)

    status, _, _ = await post(
        server, "/anki/sync/uploadDies", data=slow_body(), headers={"anki-sync": header()}
    )
    await asyncio.sleep(0.3)
    assert status == 502
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_time_the_worker_takes_is_not_held_against_a_reading_client(stack, caplog):
    caplog.set_level(logging.INFO)
    server, _, _ = stack
    status, _, body = await post(
        server, "/anki/msync/downloadFiles", data=z(b"{}"), headers={"anki-sync": header()}
    )
    assert status == 200
    assert body == b"a" * 10 + b"b" * 10
    assert [r.status for r in caplog.records if r.getMessage() == "request"] == [200]


async def test_a_small_whole_answer_goes_to_the_client_in_one_write(stack, monkeypatch):
    """Headers and body of an answer that is whole once its first bytes are read leave in one
    write (issue 18: a write per part was a sixth of the gateway's busy time)."""
    server, _, _ = stack
    writes: list[bytes] = []
    real_write = aiohttp.http_writer.StreamWriter._write
    real_lines = aiohttp.http_writer.StreamWriter._writelines

    def ours(writer) -> bool:  # the gateway's answers to its clients, not the upstream's
        transport = writer._protocol.transport
        return transport is not None and transport.get_extra_info("sockname")[1] == server.port

    def write(writer, chunk):
        if ours(writer):
            writes.append(bytes(chunk))
        return real_write(writer, chunk)

    def writelines(writer, chunks):
        if ours(writer):
            writes.append(b"".join(chunks))
        return real_lines(writer, chunks)

    monkeypatch.setattr(aiohttp.http_writer.StreamWriter, "_write", write)
    monkeypatch.setattr(aiohttp.http_writer.StreamWriter, "_writelines", writelines)
    status, headers, body = await post(
        server, "/anki/sync/meta", data=z(b"payload"), headers={"anki-sync": header()}
    )
    assert (status, body, headers["anki-original-size"]) == (200, b"zstd-bytes", "123")
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"\r\n\r\nzstd-bytes")
    assert b"\r\nContent-Length: 10\r\n" in writes[0]


async def test_a_small_answer_is_written_without_a_watch_of_its_own(stack, monkeypatch):
    """A write the client's connection takes whole cannot wait for the client, so it needs no
    stall watch (a task and a wait per answer; issue 18). Writes that can wait are still
    watched: test_client_that_stops_reading_a_download_is_cut_off_and_frees_the_worker."""
    server, _, _ = stack
    watched: list[str] = []
    real = asyncio.ensure_future

    def counted(aw, **kwargs):
        watched.append(getattr(aw, "__qualname__", type(aw).__name__))
        return real(aw, **kwargs)

    monkeypatch.setattr(asyncio, "ensure_future", counted)
    for _ in range(3):
        status, _, body = await post(
            server, "/anki/sync/meta", data=z(b"payload"), headers={"anki-sync": header()}
        )
        assert (status, body) == (200, b"zstd-bytes")
    assert not [name for name in watched if "write" in name or "whole" in name], watched


async def test_a_body_here_whole_is_read_without_a_deadline(stack, monkeypatch):
    """A body that came with its headers cannot stall: it is read without a timer (issue 18);
    one still arriving keeps its deadline (test_bodies.py)."""
    from gateway.web import bodies

    server, upstream, _ = stack
    deadlines: list[float] = []
    real = bodies._deadline

    def counted(when):
        deadlines.append(when)
        return real(when)

    monkeypatch.setattr(bodies, "_deadline", counted)
    status, headers, _ = await post(
        server, "/anki/sync/upload", data=z(b"payload"), headers={"anki-sync": header()}
    )
    assert status == 200
    assert headers["X-Total"] == str(len(z(b"payload")))
    assert deadlines == []
