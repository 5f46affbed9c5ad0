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


async def test_answers_on_disk_are_bounded_over_all_accounts(tmp_path, serve_app):
    async def worker_answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(ANSWER // (64 * 1024)):
            await response.write(b"x" * 64 * 1024)
        await response.write_eof()
        return response

    worker = web.Application()
    worker.router.add_get("/answer", worker_answer)
    worker_port = await serve_app(worker)

    folder = tmp_path / "answers"
    folder.mkdir()
    session = new_upstream_session()
    upstream = Upstream(None, session, answer_dir=folder, max_on_disk=ON_DISK)  # type: ignore[arg-type]
    worker_side_done: list[str] = []

    async def relay(request: web.Request) -> web.StreamResponse:
        account = request.query["a"]
        async with delivering(request):
            response = await upstream._exchange(
                request,
                f"http://127.0.0.1:{worker_port}/answer",
                None,
                reuse=False,
                account=account,
            )
            worker_side_done.append(account)
        return response

    gateway = web.Application()
    gateway.router.add_get("/answer", relay)
    port = await serve_app(gateway)
    socks = [await slow_reader(port, f"account{n}") for n in range(ACCOUNTS)]
    try:
        for _ in range(100):
            if len(worker_side_done) >= ON_DISK:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)  # long enough for the others to end, were they let go
        assert len(worker_side_done) == ON_DISK  # the others hold their workers, as before
        assert files_open_in(folder) == ON_DISK
    finally:
        for sock in socks:
            sock.close()
        await session.close()
