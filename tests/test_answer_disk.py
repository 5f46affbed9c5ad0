"""Answers waiting on disk for slow clients (gateway/forwarding/upstream.py, "Answers"): the
data folder's disk holds a bounded number of them, however many accounts read slowly at once.

An attacker with free accounts has each download a big answer and read it slowly (within the
pacing rules: hours for 100 MiB). Each answer that spills is a whole collection in an unnamed
file in the data folder, the disk the workers' collections live on. Measured here: the files
the gateway holds open in the answer folder while every client reads nothing."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from aiohttp import web

from gateway.forwarding.delivery import delivering
from gateway.forwarding.upstream import Upstream, new_upstream_session

ANSWER = 6 * 1024 * 1024  # past what the sockets' buffers take when the client reads nothing
ACCOUNTS = 5
ON_DISK = 2


def files_open_in(folder: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            count += 1
    return count


async def slow_reader(port: int, account: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, takes little
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    request = f"GET /answer?a={account} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    await asyncio.get_running_loop().sock_sendall(sock, request)
    return sock


async def relaying_gateway(serve_app, folder: Path, max_on_disk: int):
    """A gateway route `/answer?a=ACCOUNT&n=BYTES` relaying a worker's chunked answer of BYTES
    (default `ANSWER`); → its port, the accounts whose worker side ended, the session."""

    async def worker_answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        size = int(request.query.get("n", ANSWER))
        for start in range(0, size, 64 * 1024):
            await response.write(bytes([start // 65536 % 256]) * min(64 * 1024, size - start))
        await response.write_eof()
        return response

    worker = web.Application()
    worker.router.add_get("/answer", worker_answer)
    worker_port = await serve_app(worker)
    session = new_upstream_session()
    upstream = Upstream(None, session, answer_dir=folder, max_on_disk=max_on_disk)  # type: ignore[arg-type]
    worker_side_done: list[str] = []

    async def relay(request: web.Request) -> web.StreamResponse:
        async with delivering(request):
            response = await upstream._exchange(
                request,
                f"http://127.0.0.1:{worker_port}/answer?{request.query_string}",
                None,
                reuse=False,
                account=request.query["a"],
            )
            worker_side_done.append(request.query["a"])
        return response

    gateway = web.Application()
    gateway.router.add_get("/answer", relay)
    return await serve_app(gateway), worker_side_done, session


async def test_answers_on_disk_are_bounded_over_all_accounts(tmp_path, serve_app):
    port, worker_side_done, session = await relaying_gateway(serve_app, tmp_path, ON_DISK)
    socks = [await slow_reader(port, f"account{n}") for n in range(ACCOUNTS)]
    try:
        for _ in range(100):
            if len(worker_side_done) >= ON_DISK:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)  # long enough for the others to end, were they let go
        assert len(worker_side_done) == ON_DISK  # the others hold their workers, as before
        assert files_open_in(tmp_path) == ON_DISK
    finally:
        for sock in socks:
            sock.close()
        await session.close()


async def test_a_pipelined_request_is_answered_after_the_relayed_answer_on_its_connection(
    tmp_path, serve_app
):
    """Two requests in one packet: the first's answer is still being delivered by its task
    when the second arrives; each answer whole, in order, on its own connection."""
    port, _, session = await relaying_gateway(serve_app, tmp_path, ON_DISK)
    big, small = 3 * 1024 * 1024 + 5, 100
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /answer?a=one&n={big} HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET /answer?a=one&n={small} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    await asyncio.sleep(0.5)  # a slow client: the first answer goes through the relay's file
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await session.close()
    first, rest = raw.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in first
    body, rest = dechunk(rest)
    assert body == b"".join(bytes([n % 256]) * 65536 for n in range(big // 65536)) + b"\x30" * 5
    second, rest = rest.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 100" in second and rest == b"\0" * small


def dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = bytearray()
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        body += data[:size]
        data = data[size + 2 :]
        if size == 0:
            return bytes(body), data
