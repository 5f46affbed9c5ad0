"""HTTP over raw sockets, for requests no well-behaved client library would send."""

from __future__ import annotations

import asyncio
import json

import zstandard


def sync_header(key: str) -> bytes:
    return json.dumps({"v": 11, "k": key, "c": "t", "s": "s"}, separators=(",", ":")).encode()


async def exchange(port: int, data: bytes, *, reset_after: float | None = None) -> bytes:
    """Send raw bytes; the answer (until the server closes), or b"" after a client reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if reset_after is not None:
        await asyncio.sleep(reset_after)
        writer.transport.abort()
        return b""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def login(port: int, username: str, password: str) -> str:
    """`POST sync/hostKey` as Anki sends it; the host key."""
    body = zstandard.ZstdCompressor().compress(json.dumps({"u": username, "p": password}).encode())
    answer = await exchange(
        port,
        b"POST /sync/hostKey HTTP/1.1\r\nHost: x\r\nConnection: close\r\nanki-sync: "
        + sync_header("")
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(payload))["key"]
