"""Reading a small request body with a hard cap, whatever its framing.

`StreamReader.read(n)` returns as soon as *some* data is there, so a chunked body that arrives
in several pieces needs a loop; the cap is checked before reading past it, so an oversized or
endless body costs at most `cap + 1` bytes.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge


async def read_capped(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"request body larger than {cap} bytes")
    body = bytearray()
    while chunk := await request.content.read(cap + 1 - len(body)):
        body += chunk
        if len(body) > cap:
            raise PayloadTooLarge(f"request body larger than {cap} bytes")
    return bytes(body)
