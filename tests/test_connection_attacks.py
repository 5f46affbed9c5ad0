"""Attacks on the header deadline (web/connections.py) and the answer paths (forwarding/
upstream.py, web/relay.py, forwarding/delivery.py): byte-per-segment requests, Expect:
100-continue, HEAD/GET to a sync path, many pipelined requests in one packet."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiohttp import web

from gateway.web.pace import Pacing
from tests.test_proxy import SEEN, FakePool, header, pieces, proxy_app, upstream_app, z

HEADER_TIMEOUT, IDLE = 1.5, 4.0


@pytest.fixture
async def gw(tmp_path, aiohttp_server, serve_app):
    up = await upstream_app()

    async def getter(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "10"))
        up[SEEN].setdefault("methods", []).append(request.method)
        return web.Response(body=b"g" * size, headers={"anki-original-size": "7"})

    up.router.add_get("/sync/getter", getter)  # answers HEAD too
    upstream = await aiohttp_server(up)
    app = await proxy_app(tmp_path, FakePool(upstream.port), Pacing(idle_timeout=2.0, min_rate=1))
    port = await serve_app(app, header_timeout=HEADER_TIMEOUT, keepalive_timeout=IDLE)
    yield port, upstream


async def answer(reader: asyncio.StreamReader, *, head_only: bool = False) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    if head_only:
        return head
    m = re.search(rb"(?i)content-length: (\d+)", head)
    if m:
        return head + await asyncio.wait_for(reader.readexactly(int(m.group(1))), 5)
    assert b"chunked" in head.lower(), head
    body = b""
    while True:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        n = int(line.strip(), 16)
        body += await reader.readexactly(n + 2)
        if n == 0:
            return head + body


async def connect(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def trickle(writer: asyncio.StreamWriter, data: bytes, gap: float = 0.002) -> None:
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(gap)


def sync_post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /anki/%s HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\nContent-Length: %d\r\n%s\r\n"
        % (path.encode(), header().encode(), len(body), extra)
        + body
    )


# (1) one byte per TCP segment


async def test_sync_post_one_byte_per_segment_is_served_twice_on_one_connection(gw):
    port, upstream = gw
    reader, writer = await connect(port)
    body = z(b"payload")
    request = sync_post("sync/meta", body)
    assert len(request) * 0.002 < HEADER_TIMEOUT
    for _ in range(2):
        await trickle(writer, request)
        got = await answer(reader)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"zstd-bytes"), got
    # then idle past the header deadline: the connection stays (keep-alive time only)
    await asyncio.sleep(HEADER_TIMEOUT + 0.5)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_chunked_post_one_byte_per_segment_then_idle_is_not_cut(gw):
    port, _ = gw
    reader, writer = await connect(port)
    frame = z(b"payload")
    request = (
        b"POST /anki/sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (header().encode(), len(frame), frame)
    )
    await trickle(writer, request)
    got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 200"), got
    await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # idle: only the keep-alive time applies
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_byte_per_segment_headers_taking_longer_than_the_deadline_are_cut(gw):
    # The deadline is for the whole headers, not between bytes (slowloris).
    port, _ = gw
    reader, writer = await connect(port)
    sending = asyncio.create_task(
        trickle(writer, b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 100, 0.02)
    )
    try:
        assert await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 1) == b""
    finally:
        sending.cancel()
        writer.close()


# (2) Expect: 100-continue


async def test_expect_100_continue_on_a_sync_post(gw):
    port, upstream = gw
    reader, writer = await connect(port)
    body = z(b"payload")
    head, _, _ = sync_post("sync/meta", body, b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")
    writer.write(head + b"\r\n\r\n")
    cont = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert cont.startswith(b"HTTP/1.1 100"), cont
    writer.write(body)
    got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"zstd-bytes"), got
    assert "Expect" not in upstream.app[SEEN]["headers"]
    # and the connection goes on
    writer.write(sync_post("sync/meta", body))
    assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_expect_100_continue_refused_key_is_403(gw):
    port, _ = gw
    reader, writer = await connect(port)
    writer.write(
        b"POST /anki/sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n" % header("0" * 40).encode()
    )
    got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    if got.startswith(b"HTTP/1.1 100"):
        writer.write(b"abcde")
        got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 403"), got
    writer.close()


# (3) HEAD / GET to a sync path


@pytest.mark.parametrize("size", [10, 200_000])
async def test_get_to_a_sync_path(gw, size):
    port, upstream = gw
    reader, writer = await connect(port)
    writer.write(
        b"GET /anki/sync/getter?size=%d HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\n\r\n"
        % (size, header().encode())
    )
    got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    assert got.endswith(b"g" * size)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize("size", [10, 200_000])
async def test_head_to_a_sync_path_has_no_body_and_connection_goes_on(gw, size):
    port, upstream = gw
    reader, writer = await connect(port)
    writer.write(
        b"HEAD /anki/sync/getter?size=%d HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" % (size, header().encode())
    )
    head = await answer(reader, head_only=True)
    assert head.startswith(b"HTTP/1.1 200"), head
    nxt = await answer(reader)  # the next answer follows at once: no body bytes in between
    assert nxt.startswith(b"HTTP/1.1 200") and nxt.endswith(b"ok"), nxt
    assert upstream.app[SEEN]["methods"] == ["HEAD"]
    m = re.search(rb"(?i)content-length: (\d+)", head)
    # HEAD should carry GET's length (RFC 9110 9.3.2: MAY; 0 is wrong)
    assert m is None or int(m.group(1)) == size, head
    writer.close()


async def test_head_to_a_post_only_sync_path(gw):
    port, _ = gw
    reader, writer = await connect(port)
    writer.write(
        b"HEAD /anki/sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" % header().encode()
    )
    head = await answer(reader, head_only=True)
    assert head.startswith(b"HTTP/1.1 405"), head
    nxt = await answer(reader)
    assert nxt.startswith(b"HTTP/1.1 200") and nxt.endswith(b"ok"), nxt
    writer.close()


# (4) many tiny pipelined requests in one packet


async def test_200_pipelined_health_requests_in_one_packet(gw):
    port, _ = gw
    reader, writer = await connect(port)
    writer.write(b"".join(b"GET /health?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(200)))
    for _ in range(200):
        assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # idle afterwards: not cut
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_200_pipelined_sync_posts_in_one_packet_are_answered_in_order(gw):
    port, _ = gw
    reader, writer = await connect(port)
    reqs = []
    for i in range(200):
        if i % 3 == 0:
            reqs.append(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        elif i % 3 == 1:
            reqs.append(sync_post("sync/meta", z(b"payload%d" % i)))
        else:
            reqs.append(
                b"GET /anki/sync/getter?size=%d HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\n\r\n"
                % (i if i % 2 else 70_000 + i, header().encode())
            )
    writer.write(b"".join(reqs))
    for i in range(200):
        got = await answer(reader)
        assert got.startswith(b"HTTP/1.1 200"), (i, got[:200])
        if i % 3 == 0:
            assert got.endswith(b"\r\n\r\nok"), i
        elif i % 3 == 1:
            assert got.endswith(b"\r\n\r\nzstd-bytes"), i
        else:
            assert (
                got.endswith(b"\r\n\r\n" + b"g" * (i if i % 2 else 70_000 + i))
                or b"chunked" in got[:400]
            ), i
    writer.close()


async def test_pipelined_byte_per_segment_after_a_packet_of_many(gw):
    port, _ = gw
    reader, writer = await connect(port)
    one = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(one * 50 + one[:10])
    await trickle(writer, one[10:] + one)
    for _ in range(52):
        assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_expect_100_continue_with_the_body_sent_anyway_and_a_pipelined_next(gw):
    # A client that does not wait for 100: body and a next request in the same packet.
    port, _ = gw
    reader, writer = await connect(port)
    body = z(b"payload")
    writer.write(
        sync_post("sync/meta", body, b"Expect: 100-continue\r\n")
        + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    first = await answer(reader, head_only=True)
    if first.startswith(b"HTTP/1.1 100"):
        first = await answer(reader)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"zstd-bytes"), first
    nxt = await answer(reader)
    assert nxt.startswith(b"HTTP/1.1 200") and nxt.endswith(b"ok"), nxt
    writer.close()


async def test_expect_100_continue_one_byte_per_segment(gw):
    port, _ = gw
    reader, writer = await connect(port)
    body = z(b"payload")
    head, _, _ = sync_post("sync/meta", body, b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")
    await trickle(writer, head + b"\r\n\r\n")
    cont = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert cont.startswith(b"HTTP/1.1 100"), cont
    await asyncio.sleep(
        HEADER_TIMEOUT + 0.3
    )  # the body is bodies.py's to time, not the header deadline
    await trickle(writer, body)
    got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"zstd-bytes"), got
    writer.close()


async def test_head_pipelined_between_big_relayed_answers(gw):
    port, _ = gw
    reader, writer = await connect(port)
    get = (
        b"GET /anki/sync/getter?size=300000 HTTP/1.1\r\nHost: x\r\nanki-sync: %s\r\n\r\n"
        % header().encode()
    )
    headreq = b"HEAD" + get[3:]
    writer.write(get + headreq + get)
    a = await answer(reader)
    assert a.endswith(b"g" * 300000)
    h = await answer(reader, head_only=True)
    assert h.startswith(b"HTTP/1.1 200")
    c = await answer(reader)
    assert c.startswith(b"HTTP/1.1 200") and c.endswith(b"g" * 300000), c[:300]
    writer.close()


async def test_a_big_upload_in_one_packet_then_idle_is_not_cut(gw):
    # The body outruns the handler: aiohttp's parser holds the rest of the packet back and
    # re-reads it later with an empty feed. After the answer nothing of a next request was
    # received, so only the keep-alive time applies.
    port, _ = gw
    reader, writer = await connect(port)
    body = b"".join(pieces(3 * 1024 * 1024))
    writer.write(sync_post("sync/upload", body))
    got = await answer(reader)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"zstd-bytes"), got[:300]
    await asyncio.sleep(HEADER_TIMEOUT + 0.5)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await answer(reader)).startswith(b"HTTP/1.1 200")
    writer.close()
