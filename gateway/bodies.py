"""Reading request bodies: paced (pace.py), and, for small ones, with a hard cap.

Every body the gateway reads comes through `paced_chunks()`: a client that stops sending, or
trickles, gets `ClientStalled` (408) within `server.body_idle_timeout_seconds` of its last
useful progress, instead of holding a connection (and for a sync request its worker) for ever.
The pacing comes from the application (`PACING`), defaults when it has none.

`read_capped()`: `StreamReader.read(n)` returns as soon as *some* data is there, so a chunked
body that arrives in several pieces needs a loop; the cap is checked before reading past it, so
an oversized or endless body costs at most about twice `cap` bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.appkeys import PACING
from gateway.errors import ClientStalled, PayloadTooLarge
from gateway.pace import Pacing


async def paced_chunks(request: web.Request, most: int = -1) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive (each at most `most` bytes if > 0); `ClientStalled`
    when the pace rules are broken. aiohttp's errors (a reset client, broken chunking) pass."""
    loop = asyncio.get_running_loop()
    pace = request.app.get(PACING, Pacing()).start(loop.time())
    content = request.content
    while True:
        read = content.read(most) if most > 0 else content.readany()
        try:
            chunk: bytes | None = await asyncio.wait_for(
                read, max(0.0, pace.deadline() - loop.time())
            )
        except asyncio.TimeoutError:
            chunk = None
        if chunk == b"":
            return  # the end of the body
        if pace.feed(len(chunk or b""), loop.time()):
            raise ClientStalled("request body stalled or too slow")
        if chunk:
            yield chunk


async def read_capped(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"request body larger than {cap} bytes")
    body = bytearray()
    async for chunk in paced_chunks(request, most=cap + 1):
        body += chunk
        if len(body) > cap:
            raise PayloadTooLarge(f"request body larger than {cap} bytes")
    return bytes(body)
