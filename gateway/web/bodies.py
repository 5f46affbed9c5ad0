"""Bodies at the client's pace (pace.py), and small request bodies with a hard cap.

Every body the gateway reads comes through `paced_chunks()`: a client that stops sending, or
trickles, gets `ClientStalled` (408) within `server.body_idle_timeout_seconds` of its last
useful progress, instead of holding a connection (and for a sync request its worker) for ever.
Proxied answers go out through `paced_write()`, so a client that stops reading a download is
cut off within the same time. The pacing comes from the application (`PACING`), defaults when
it has none (a sub-application, such as the portal, uses its parent's).

`client_side()` says what a failure to read the client means, so a client's fault is never
blamed on the worker.

`drain()` reads and drops the rest of a refused body, so the client gets to read the answer
(a client still sending when the server answers and closes sees a network error instead), for
at most `DRAIN_SECONDS`: a refused body holds nothing of a worker or the budget, but its
connection should not stay open for the rest of a slow body's deadline either.

`read_capped()`: `StreamReader.read(n)` returns as soon as *some* data is there, so a chunked
body that arrives in several pieces needs a loop; the cap is checked before reading past it, so
an oversized or endless body costs at most about twice `cap` bytes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from gateway.appkeys import PACING
from gateway.errors import BadRequest, ClientStalled, GatewayError, PayloadTooLarge
from gateway.web.pace import Pace, Pacing

if sys.version_info >= (3, 11):
    from asyncio import timeout_at as _deadline
else:  # aiohttp's own dependency there
    from async_timeout import timeout_at as _deadline

#: The longest a refused body is read and dropped before its connection is closed instead.
DRAIN_SECONDS = 10.0


def pacing_of(request: web.Request) -> Pacing:
    return request.config_dict.get(PACING, Pacing())


def loop_time() -> float:
    """The clock the pace is kept on: the running loop's (seconds, monotonic)."""
    return asyncio.get_running_loop().time()


async def paced_chunks(request: web.Request, most: int = -1) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive (each at most `most` bytes if > 0); `ClientStalled`
    when the pace rules are broken. aiohttp's errors (a reset client, broken chunking) pass."""
    loop = asyncio.get_running_loop()
    pace = pacing_of(request).start(loop.time())
    content = request.content
    while True:
        chunk: bytes | None
        if content.is_eof():
            # The whole body is here: nothing to wait for, so no deadline (a timer per read,
            # issue 18).
            chunk = content.read_nowait(most)
        else:
            # A deadline on this task, not wait_for(): wait_for runs the read in a task of its
            # own, and one still waiting when this generator is dropped (the worker broke off an
            # upload) keeps the body's reader busy; aiohttp then fails reading the rest
            # ("readany() called while another coroutine is already waiting"). Cancelled here,
            # the read lets go at once.
            try:
                async with _deadline(pace.deadline()):
                    chunk = await (content.read(most) if most > 0 else content.readany())
            except asyncio.TimeoutError:
                chunk = None
        if chunk == b"":
            return  # the end of the body
        if pace.feed(len(chunk or b""), loop.time()):
            raise ClientStalled("request body stalled or too slow")
        if chunk:
            yield chunk


async def paced_write(
    response: web.StreamResponse,
    chunk: bytes,
    pace: Pace,
    transport: asyncio.BaseTransport | None = None,
) -> None:
    """Writes `chunk` to a client that must read at `pace` (aiohttp's write waits while the
    client's socket buffer is full); `ClientStalled` if it does not, and the write is dropped."""
    await paced(response.write(chunk), len(chunk), pace, transport)


async def paced(
    send: Coroutine[Any, Any, None],
    size: int,
    pace: Pace,
    transport: asyncio.BaseTransport | None = None,
) -> None:
    """Runs `send`, a write of `size` bytes to a client that must read at `pace` (above), over
    `transport` (the client's connection) if given: a write that its buffer takes whole cannot
    wait for the client, and runs as it is, without the watch (a task and a wait: 20-60 us a
    write, most of an answer's own cost; issue 18)."""
    loop = asyncio.get_running_loop()
    if transport is not None and _takes_whole(transport, size):
        await send
        if pace.feed(size, loop.time()):
            raise ClientStalled("client reads the answer too slowly")
        return
    write = asyncio.ensure_future(send)
    try:
        while True:
            wait = max(0.0, pace.deadline() - loop.time())
            done, _ = await asyncio.wait({write}, timeout=wait)
            if done:
                write.result()  # the client's own errors (a reset) pass
                if pace.feed(size, loop.time()):
                    raise ClientStalled("client reads the answer too slowly")
                return
            if pace.feed(0, loop.time()):
                raise ClientStalled("client stopped reading the answer")
    finally:
        write.cancel()  # a no-op once it is done


#: Room kept in a transport's buffer for what a write adds to its bytes (an answer's headers,
#: chunk framing).
HEADROOM = 16 * 1024


def _takes_whole(transport: asyncio.BaseTransport, size: int) -> bool:
    """True when writing `size` bytes cannot make the client's connection wait for the client:
    nothing is queued in its buffer, and `size` (with `HEADROOM`) stays under the mark at which
    asyncio pauses writers (aiohttp's write waits only then)."""
    if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
        return False
    _, high = transport.get_write_buffer_limits()
    return transport.get_write_buffer_size() == 0 and size + HEADROOM <= high


def client_side(exc: Exception) -> Exception:
    """What a failure to read the client's body means: the client went away (passed on for the
    middleware's "client gone"), stalled, or sent a broken body (400)."""
    if isinstance(exc, (ConnectionError, GatewayError)):
        return exc
    if isinstance(exc, (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError)):
        return BadRequest(f"request body broken: {type(exc).__name__}")
    return exc


async def read_capped(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"request body larger than {cap} bytes")
    body = bytearray()
    async for chunk in paced_chunks(request, most=cap + 1):
        body += chunk
        if len(body) > cap:
            raise PayloadTooLarge(f"request body larger than {cap} bytes")
    return bytes(body)


async def drain(request: web.Request, most: int) -> bool:
    """Reads and drops the rest of the body, at the client's pace; True if it ended within
    `most` more bytes and `DRAIN_SECONDS` (or the idle timeout, if shorter), False if it did
    not (too long, too slow, stalled, broken: close the connection)."""
    drained = 0
    seconds = min(DRAIN_SECONDS, pacing_of(request).idle_timeout)
    try:
        async with _deadline(loop_time() + seconds):
            async for chunk in paced_chunks(request):
                drained += len(chunk)
                if drained > most:
                    return False
    except (
        ClientStalled,
        asyncio.TimeoutError,
        aiohttp.ClientError,
        aiohttp.http_exceptions.HttpProcessingError,
    ):
        return False
    return True
