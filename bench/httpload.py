"""A small HTTP/1.1 load generator that speaks the Anki sync protocol's framing.

Raw asyncio streams, no HTTP library: the request bytes are built once (headers, zstd body,
chunked framing exactly as the 26.9 client sends them) and written as they are, so the
generator costs as little CPU as possible and never changes what it sends between targets.

What the real client sends (captured through a logging proxy from the `anki` 26.9.3 client):

    POST /sync/meta HTTP/1.1
    anki-sync: {"v":11,"k":"<hkey>","c":"26.09.3,29bb700b,linux","s":"<session>"}
    Content-Type: application/octet-stream
    Accept: */*
    Transfer-Encoding: chunked

    zstd({"v":11,"cv":"anki,26.09.3 (29bb700b),linux"})

`sync/hostKey` carries zstd({"u": ..., "p": ...}) and an empty `k`; `sync/upload` carries the
zstd-compressed collection file.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import zstandard

CLIENT_VERSION = "26.09.3,29bb700b,linux"
META_BODY = b'{"v":11,"cv":"anki,26.09.3 (29bb700b),linux"}'
#: Any single response must arrive within this; a stalled target fails the request, not the run.
READ_TIMEOUT = 120.0

_zstd = zstandard.ZstdCompressor(level=3)


def compress(data: bytes) -> bytes:
    return _zstd.compress(data)


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def sync_header(key: str, session: str | None = None) -> str:
    session = session or secrets.token_urlsafe(4)[:6]
    data = {"v": 11, "k": key, "c": CLIENT_VERSION, "s": session}
    return json.dumps(data, separators=(",", ":"))


def encode_request(
    host: str, path: str, key: str, body: bytes, *, close: bool = False, session: str | None = None
) -> bytes:
    """One complete request (head and chunked body) as the Anki client would send it."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"anki-sync: {sync_header(key, session)}",
        "Content-Type: application/octet-stream",
        "Accept: */*",
        "Transfer-Encoding: chunked",
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + _chunk(body) + b"0\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(decompress(self.body))


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """One response; returns it and whether the connection may be reused."""
    status_line = await reader.readline()
    if not status_line:
        raise ProtocolError("connection closed before a response")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] == b"HTTP/1.1"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (none expected), then the blank line.
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return Response(status, headers, bytes(body)), keep
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        return Response(status, headers, body), keep
    if status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b""), keep
    return Response(status, headers, await reader.read()), False


class Connection:
    """One HTTP/1.1 client connection; reconnects when the server closed the last one."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer, self._reader = self._writer, None, None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def send(self, request: bytes | Iterable[bytes], *, keep_alive: bool) -> Response:
        """Send pre-encoded bytes (or a sequence of pieces) and read the whole answer."""
        await self._open()
        assert self._reader is not None and self._writer is not None
        try:
            if isinstance(request, bytes):
                self._writer.write(request)
            else:
                for piece in request:
                    self._writer.write(piece)
                    await self._writer.drain()
            await self._writer.drain()
            response, reusable = await asyncio.wait_for(read_response(self._reader), READ_TIMEOUT)
        except BaseException:
            await self.close()
            raise
        if not (keep_alive and reusable):
            await self.close()
        return response


#: HTTP chunk size of the real client's upload body (measured: 4096-byte chunks, 26.9 client).
CLIENT_CHUNK = 4096


def upload_request(
    host: str, key: str, compressed: bytes, chunk: int = CLIENT_CHUNK
) -> list[bytes]:
    """A full upload framed in `chunk`-byte HTTP chunks (default: as the client frames it), cut
    into 256 KiB pieces for writing (the pieces are only how the bytes reach the socket)."""
    head = encode_request(host, "/sync/upload", key, b"")[: -len(b"0\r\n\r\n")]
    framed = b"".join(_chunk(compressed[i : i + chunk]) for i in range(0, len(compressed), chunk))
    framed = head + framed + b"0\r\n\r\n"
    step = 256 * 1024
    return [framed[i : i + step] for i in range(0, len(framed), step)]


async def login(port: int, username: str, password: str, path: str = "/") -> str:
    """`sync/hostKey` through any front; returns the host key (raises on a non-200)."""
    body = compress(json.dumps({"u": username, "p": password}).encode())
    request = encode_request(f"127.0.0.1:{port}", path + "sync/hostKey", "", body, close=True)
    conn = Connection(port)
    response = await conn.send(request, keep_alive=False)
    if response.status != 200:
        raise ProtocolError(f"login failed with {response.status}: {response.body[:100]!r}")
    data = response.json()
    assert isinstance(data, dict)
    return str(data["key"])


def meta_request(port: int, key: str, *, close: bool = False) -> bytes:
    return encode_request(f"127.0.0.1:{port}", "/sync/meta", key, compress(META_BODY), close=close)


@dataclass
class LoadResult:
    """Latencies (ms) of the requests that succeeded, and counts, from one closed-loop run."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0


async def closed_loop(
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    keep_alive: bool,
    warmup: int = 20,
) -> LoadResult:
    """`concurrency` clients, each sending `request` back to back, for `duration` seconds or
    `max_requests` requests in all, whichever comes first. Non-200 answers count as errors."""
    result = LoadResult()
    conns = [Connection(port) for _ in range(concurrency)]
    for conn in conns:  # warm up: connections open, caches and workers hot
        for _ in range(max(1, warmup // concurrency)):
            await conn.send(request, keep_alive=keep_alive)
    started = time.perf_counter()
    deadline = started + duration
    budget = [max_requests]

    async def client(conn: Connection) -> None:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            t0 = time.perf_counter_ns()
            try:
                response = await conn.send(request, keep_alive=keep_alive)
            except (OSError, ProtocolError, asyncio.IncompleteReadError, TimeoutError):
                result.errors += 1
                continue
            took = (time.perf_counter_ns() - t0) / 1e6
            result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
            if response.status == 200:
                result.latencies_ms.append(took)
            else:
                result.errors += 1

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        result.elapsed_s = time.perf_counter() - started
        for conn in conns:
            await conn.close()
    return result
