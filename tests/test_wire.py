"""The worker link (gateway/forwarding/wire.py) through the proxy, against scripted upstreams:
raw asyncio servers that can close, stall or answer badly where the stock server never would
on demand (the real worker is covered by test_sync_e2e.py and the rest of the suite)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from gateway.forwarding import wire
from gateway.web.pace import Pacing
from tests.test_proxy import FakePool, header, post, proxy_app, z

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Upstream:
    """A scripted worker: `script(reader, writer, connection_number)` serves each connection;
    records the requests it read (their first lines)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head.split(b"\r\n")[0])
        return head + body


@pytest.fixture
async def through(tmp_path, aiohttp_server):
    """`through(script)` -> (gateway server, scripted upstream)."""
    made: list[Upstream] = []

    async def make(script: Script):
        upstream = Upstream(script)
        port = await upstream.start()
        made.append(upstream)
        app = await proxy_app(tmp_path, FakePool(port), Pacing(idle_timeout=5, min_rate=100))
        return await aiohttp_server(app), upstream

    yield make
    for upstream in made:
        assert upstream.server is not None
        upstream.server.close()


async def sync(server, method: str = "msync/mediaChanges") -> tuple[int, bytes]:
    status, _, body = await post(
        server, f"/anki/{method}", data=z(b"{}"), headers={"anki-sync": header()}
    )
    return status, body


async def test_a_read_only_request_on_a_connection_that_breaks_goes_again_on_a_fresh_one(through):
    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(OK)
        if number == 1:  # keeps the connection, then drops it on the next request unanswered
            await upstream.read_request(reader)
            writer.transport.abort()
            return
        await writer.drain()

    server, upstream = await through(script)
    assert await sync(server) == (200, b"ok")
    assert await sync(server) == (200, b"ok")
    # The second request reached the first connection (reused), broke, went again fresh.
    assert upstream.connections == 2
    assert len(upstream.requests) == 3


async def test_a_write_on_a_connection_that_breaks_is_never_sent_again(through):
    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.transport.abort()

    server, upstream = await through(script)
    status, _ = await sync(server, "sync/applyChanges")
    assert status == 502
    assert upstream.requests == [b"POST /sync/applyChanges HTTP/1.1"]


async def test_a_connection_idle_too_long_is_not_used_again(through, monkeypatch):
    async def script(reader, writer, number):
        while True:
            await upstream.read_request(reader)
            writer.write(OK)

    server, upstream = await through(script)
    assert await sync(server) == (200, b"ok")
    assert await sync(server) == (200, b"ok")
    assert upstream.connections == 1  # kept and used again
    monkeypatch.setattr(wire, "IDLE_SECONDS", 0.0)
    assert await sync(server) == (200, b"ok")
    assert upstream.connections == 2


async def test_an_answer_that_closes_its_connection_or_sends_more_is_not_kept(through):
    async def script(reader, writer, number):
        while True:  # answers every request it gets on the connection
            await upstream.read_request(reader)
            if number == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            elif number == 2:  # bytes past the answer: a connection in an unknown state
                writer.write(OK + b"HTTP/1.1 200 OK\r\n")
            else:
                writer.write(OK)
            await writer.drain()

    server, upstream = await through(script)
    for _ in range(4):
        assert await sync(server) == (200, b"ok")
    assert upstream.connections == 3
    assert len(upstream.requests) == 4


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",  # malformed
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",  # cut short, within the whole part
        b"",  # closed with no answer
    ],
)
async def test_a_bad_or_missing_answer_is_a_502(through, answer):
    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(answer)
        await writer.drain()

    server, upstream = await through(script)
    status, _ = await sync(server, "sync/start")
    assert status == 502


@pytest.mark.parametrize(
    ("head", "status"),
    [
        # one header the parser gathers; many headers, above the limit and under it
        (b"X-Big: " + b"a" * wire.MAX_HEAD + b"\r\n", 502),
        (b"".join(b"X-%04d: %s\r\n" % (i, b"b" * 60) for i in range(2_000)), 502),  # many
        (b"".join(b"X-%04d: %s\r\n" % (i, b"b" * 690) for i in range(90)), 200),  # 62 KiB
        # more fields than MAX_HEADERS in a small head, and a few less
        (b"".join(b"X-%04d: b\r\n" % i for i in range(wire.MAX_HEADERS)), 502),
        (b"".join(b"X-%04d: b\r\n" % i for i in range(wire.MAX_HEADERS - 5)), 200),
    ],
)
async def test_an_answer_head_above_the_limit_is_a_502_and_its_connection_closed(
    through, head, status
):
    """A worker (its folder a user's upload) cannot make the gateway hold an answer head of
    any size: past wire.MAX_HEAD it is Broken (502) and the connection closed, whether the
    head comes as one header or many, in pieces."""
    closed = []

    async def script(reader, writer, number):
        await upstream.read_request(reader)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(0, len(head), 8192):
                writer.write(head[i : i + 8192])
                await writer.drain()
            writer.write(b"Content-Length: 2\r\n\r\nok")
            await writer.drain()
            closed.append(await reader.read(1) == b"")  # EOF: the gateway closed it
        except ConnectionError:
            closed.append(True)  # reset by the gateway while still sending

    server, upstream = await through(script)
    assert (await sync(server, "sync/start"))[0] == status
    if status == 502:
        for _ in range(50):
            if closed:
                break
            await asyncio.sleep(0.05)
        assert closed == [True]


async def test_an_interim_answer_is_skipped(through):
    # RFC 9110 §15.2, as aiohttp's client did; in one packet with the answer or before it.
    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
        await writer.drain()
        if number == 1:
            await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server, upstream = await through(script)
    for _ in range(2):
        status, headers, body = await post(
            server, "/anki/sync/start", data=z(b"{}"), headers={"anki-sync": header()}
        )
        assert (status, body, headers.get("X-Final"), headers.get("X-Interim")) == (
            200,
            b"ok",
            "1",
            None,
        )


async def test_a_worker_silent_past_the_read_time_is_a_504(through, monkeypatch):
    monkeypatch.setattr(wire, "READ_SECONDS", 0.3)

    async def script(reader, writer, number):
        await upstream.read_request(reader)
        await asyncio.sleep(2)

    server, upstream = await through(script)
    status, _ = await sync(server, "sync/start")
    assert status == 504


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_big_answer_arrives_whole_and_in_order(through, framing):
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def script(reader, writer, number):
        await upstream.read_request(reader)
        if framing == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
            writer.write(data)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(data), 100_000):
                piece = data[i : i + 100_000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, upstream = await through(script)
    status, body = await sync(server, "sync/download")
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


async def test_a_request_is_one_write_with_a_content_length_and_no_hop_headers(through):
    seen: list[bytes] = []

    async def script(reader, writer, number):
        seen.append(await upstream.read_request(reader))
        writer.write(OK)
        await writer.drain()

    server, upstream = await through(script)
    status, _, _ = await post(
        server,
        "/anki/sync/meta",
        data=z(b"{}"),
        headers={"anki-sync": header(), "Connection": "keep-alive, X-Hop", "X-Hop": "1"},
    )
    assert status == 200
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /sync/meta HTTP/1.1"
    names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert names.count(b"content-length") == 1
    assert b"x-hop" not in names and b"connection" not in names
    assert body == z(b"{}")


def test_a_line_break_inside_a_header_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError):
        wire._request("POST", "/sync/meta", "h", {"X-A": "1\r\nX-Injected: 2"}, b"")
    with pytest.raises(ValueError):
        wire._request("POST", "/sync/meta", "h", {"X-A": "1\nX-Injected: 2"}, b"")
    assert wire._request("POST", "/sync/meta", "h:1", {"X-A": "1"}, b"body") == (
        b"POST /sync/meta HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 4\r\n\r\nbody"
    )


async def test_idle_connections_close_after_the_idle_time_with_no_request_to_take_them(
    through, monkeypatch
):
    # The stock server keeps an idle keep-alive connection open for good (measured: 40 s and
    # more), so the link must close its idle ones itself, as aiohttp's keepalive_timeout did:
    # else a burst of concurrent reads leaves its connections (up to MAX_IDLE per worker, file
    # descriptors on both sides) open for the worker's lifetime.
    monkeypatch.setattr(wire, "IDLE_SECONDS", 0.3)
    burst = 5
    arrived = asyncio.Event()
    closed: list[int] = []

    async def script(reader, writer, number):
        try:
            while True:
                await upstream.read_request(reader)
                if len(upstream.requests) == burst:
                    arrived.set()
                await arrived.wait()  # all at once: one connection each
                writer.write(OK)
                await writer.drain()
        finally:
            closed.append(number)

    server, upstream = await through(script)
    answers = await asyncio.gather(*(sync(server) for _ in range(burst)))
    assert answers == [(200, b"ok")] * burst
    assert upstream.connections == burst
    await asyncio.sleep(1.0)
    assert sorted(closed) == list(range(1, burst + 1))


async def test_bytes_of_a_second_answer_in_the_same_packet_stay_out_of_the_first(through):
    # A worker that sends more than one answer (it never should): the client gets the first
    # answer as it was, never the status, headers or body of the extra one (here a 403, which
    # would log the user out), and the connection is not used again.
    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(OK + b"HTTP/1.1 403 Forbidden\r\nX-Extra: 1\r\nContent-Length: 5\r\n\r\nextra")
        await writer.drain()
        await reader.read()

    server, upstream = await through(script)
    for _ in range(2):
        status, headers, body = await post(
            server, "/anki/msync/mediaChanges", data=z(b"{}"), headers={"anki-sync": header()}
        )
        assert (status, body, headers.get("X-Extra")) == (200, b"ok", None)
    assert upstream.connections == 2


async def test_a_switching_protocols_answer_is_a_502_and_no_error_in_the_log(through, caplog):
    # httptools reports an upgrade by an exception of its own (not an HttpParserError); it
    # must not escape into the event loop (an ERROR "Fatal error: protocol.data_received()").
    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    server, upstream = await through(script)
    assert (await sync(server, "sync/start"))[0] == 502
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_a_refused_connection_is_reported_and_tried_once_more_then_a_502(
    tmp_path, aiohttp_server
):
    # Nothing listens on the worker's port (the worker died): nothing reached it, so the
    # request goes once more, to the fresh worker the pool starts (here: the same dead port).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free again once closed
    pool = FakePool(port)
    app = await proxy_app(tmp_path, pool, Pacing(idle_timeout=5, min_rate=100))
    server = await aiohttp_server(app)
    status, _ = await sync(server, "sync/start")
    assert status == 502
    assert (pool.leases, pool.broken) == (2, 2)


async def test_a_write_on_a_kept_connection_that_breaks_is_reported_and_never_sent_again(
    tmp_path, aiohttp_server
):
    # The worker answers a read on the connection, then reads the write and drops it unanswered.
    seen: list[bytes] = []

    async def script(reader, writer, number):
        while True:
            seen.append((await upstream.read_request(reader)).split(b"\r\n")[0])
            if seen[-1].startswith(b"POST /sync/applyChanges"):
                writer.transport.abort()
                return
            writer.write(OK)
            await writer.drain()

    upstream = Upstream(script)
    pool = FakePool(await upstream.start())
    app = await proxy_app(tmp_path, pool, Pacing(idle_timeout=5, min_rate=100))
    server = await aiohttp_server(app)
    try:
        assert await sync(server, "sync/meta") == (200, b"ok")
        status, _ = await sync(server, "sync/applyChanges")
        assert status == 502
        assert seen == [b"POST /sync/meta HTTP/1.1", b"POST /sync/applyChanges HTTP/1.1"]
        assert upstream.connections == 1  # the write took the kept connection
        assert pool.broken == 1  # the worker's state asked (a dead one: 503, test_pool)
    finally:
        assert upstream.server is not None
        upstream.server.close()


async def test_a_kept_connection_with_anything_to_read_is_never_taken():
    import socket

    for ending in ("close", "stray", "none"):
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        transport.pause_reading()  # what the loop has not read yet
        if ending == "close":
            theirs.close()
        elif ending == "stray":
            theirs.send(b"HTTP/1.1 200 OK\r\n")
        await asyncio.sleep(0.01)
        assert wire._readable(transport) is (ending != "none"), ending
        transport.close()
        if ending != "close":
            theirs.close()


class MovingPool(FakePool):
    """The first lease points at a dead port (the worker died), the next ones at `port`."""

    def __init__(self, dead: int, port: int) -> None:
        super().__init__(dead)
        self.live = port

    async def report_broken(self, account: str) -> None:
        self.broken += 1
        self.port = self.live  # the pool starts a fresh worker


@pytest.mark.parametrize(
    ("method", "expected", "reached"),
    [
        ("sync/applyChanges", 503, []),  # its sync died with the worker: never to a fresh one
        ("sync/finish", 503, []),
        ("sync/meta", 200, [b"POST /sync/meta HTTP/1.1"]),  # nothing depends on the old one
        ("sync/start", 200, [b"POST /sync/start HTTP/1.1"]),
        ("msync/begin", 200, [b"POST /msync/begin HTTP/1.1"]),
    ],
)
async def test_a_request_of_a_running_sync_is_never_sent_to_the_fresh_worker(
    tmp_path, aiohttp_server, method, expected, reached
):
    import socket

    async def script(reader, writer, number):
        while True:
            await upstream.read_request(reader)
            writer.write(OK)
            await writer.drain()

    upstream = Upstream(script)
    port = await upstream.start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    pool = MovingPool(dead, port)
    app = await proxy_app(tmp_path, pool, Pacing(idle_timeout=5, min_rate=100))
    server = await aiohttp_server(app)
    try:
        status, _ = await sync(server, method)
        assert (status, upstream.requests, pool.broken) == (expected, reached, 1)
    finally:
        assert upstream.server is not None
        upstream.server.close()


@pytest.mark.parametrize("body", [2, 200_000], ids=["small", "past-the-whole-part"])
async def test_trailers_that_never_end_are_broken_and_their_connection_closed(through, body):
    """A chunked answer's trailer field that never ends (httptools gathers a field until its
    line ends): the gateway stops reading it past wire.MAX_HEAD bytes without a body byte and
    closes the connection, a 502 (or a cut answer, once its head went to the client); it never
    gathers what the worker sends."""
    closed = []

    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n0\r\nX-Trailer: " % (body, b"b" * body))
        try:
            for _ in range(16 * 1024 * 1024 // 65536):  # 16 MiB of one trailer field
                writer.write(b"a" * 65536)
                await writer.drain()
            closed.append(await asyncio.wait_for(reader.read(1), 3) == b"")
        except ConnectionError:
            closed.append(True)  # reset by the gateway while still sending
        except TimeoutError:
            closed.append(False)

    server, upstream = await through(script)
    try:
        status, _ = await sync(server, "sync/download")
    except aiohttp.ClientPayloadError:
        status = "cut"
    for _ in range(100):
        if closed:
            break
        await asyncio.sleep(0.05)
    assert (status, closed) == (502 if body == 2 else "cut", [True])


@pytest.mark.parametrize(
    ("over", "short", "status"), [(0, False, 200), (1, False, 502), (1, True, 502)]
)
async def test_an_answer_head_of_exactly_the_limit_passes_and_one_byte_more_is_a_502(
    through, over, short, status
):
    """The limit is on the head's bytes, however they are cut into packets: here the whole
    head and its body in one write, where counting what the parser was fed before the head
    ended sees nothing; a head of many short headers counts their colons and line ends."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    filler = wire.MAX_HEAD + over - len(start) - len(b"\r\n")
    # Many one-byte headers, or headers of 4 KiB (each line under aiohttp's client limit).
    line = b"x: \r\n" if short else b"y: " + b"z" * 4091 + b"\r\n"
    lines = line * (filler // len(line) - 1)
    lines += b"y: " + b"z" * (filler - len(lines) - 5) + b"\r\n"
    answer = start + lines + b"\r\n"
    assert len(answer) == wire.MAX_HEAD + over

    async def script(reader, writer, number):
        await upstream.read_request(reader)
        writer.write(answer + b"ok")
        await writer.drain()

    server, upstream = await through(script)
    assert (await sync(server, "sync/start"))[0] == status
