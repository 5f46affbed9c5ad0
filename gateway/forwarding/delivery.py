"""The client's side of a proxied answer: sent at the client's pace, to its end after the
worker is let go (issue 16).

    deliver(request, response, relay)    starts sending what `relay` (web/relay.py) gets, on a
                                         task of the request's; `response` is prepared
    async with delivering(request): ...  around everything that holds the worker (the proxy's
                                         entry): once the block is done, waits for the
                                         request's deliveries; if it fails, cancels them

Why: an answer streamed at the client's pace held its worker's lease (one of
`workers.max_workers`), the account's sync turn and a backup's passage for as long as the
client took to read it; a client reading a big `sync/download` or `msync/downloadFiles`
slowly, within the pacing rules (web/pace.py: 1.8 h for 100 MiB at the defaults), tied up a
worker slot. The worker's side now ends once the relay has the whole answer
(forwarding/upstream.py); only this side waits for the client.

What reaches the client: every byte of the answer in order, then the end of the answer. A
client that stops reading or reads too slowly (web/pace.py) has its connection aborted and
the wait ends with `ConnectionResetError` (the middleware's "client gone"); when the worker's
side broke (`AnswerBroken`) or the file holding the answer failed, the connection is aborted
after the bytes before it, never a clean, truncated answer. The time the worker takes to
produce the answer is not held against the client.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.errors import ClientStalled
from gateway.web.bodies import loop_time, paced_write, pacing_of
from gateway.web.relay import Relay

log = logging.getLogger("gateway.proxy")

#: The client's side of the answers of a request still going (`delivering`).
DELIVERIES: web.RequestKey[list[asyncio.Task[None]]] = web.RequestKey("deliveries", list)


class AnswerBroken(Exception):
    """The worker's side of an answer failed after its headers went to the client."""


def deliver(request: web.Request, response: web.StreamResponse, relay: Relay) -> asyncio.Task[None]:
    delivery = asyncio.create_task(_send(request, response, relay))
    request[DELIVERIES].append(delivery)
    return delivery


def delivering(request: web.Request) -> _Delivering:
    return _Delivering(request)


class _Delivering:
    """`delivering(request)`: a class, not a generator (one fewer object and task-local
    generator per proxied request, issue 18)."""

    __slots__ = ("_deliveries",)

    def __init__(self, request: web.Request) -> None:
        self._deliveries: list[asyncio.Task[None]] = []
        request[DELIVERIES] = self._deliveries

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        deliveries = self._deliveries
        try:
            if kind is None:
                for delivery in deliveries:
                    await delivery
        finally:
            for delivery in deliveries:
                if not delivery.done():
                    delivery.cancel()  # the request failed or was cancelled meanwhile
                elif not delivery.cancelled():
                    delivery.exception()  # retrieved: the request's own error is the one told


async def _send(request: web.Request, response: web.StreamResponse, relay: Relay) -> None:
    pace = pacing_of(request).start(loop_time())
    written = 0  # bytes of the answer handed to the client's connection
    try:
        waiting_since = loop_time()
        async for chunk in relay.chunks():
            pace.skip(loop_time() - waiting_since)  # the worker's time, not the client's
            await paced_write(response, chunk, pace, request.transport)
            written += len(chunk)
            waiting_since = loop_time()
    except ClientStalled:
        # It does not read the answer (web/pace.py): it would hold its connection for ever.
        _abort(request)
        raise ConnectionResetError("client stalled reading the answer") from None
    except ConnectionError:
        raise  # writing to a client that went away (the middleware logs it)
    except (AnswerBroken, OSError):
        _abort(request)  # the worker's side broke, or the file holding the answer failed
        return
    finally:
        relay.close()
    try:
        await response.write_eof()
    except ConnectionError:
        # Every byte of the answer was handed over; only the end of the chunked framing
        # found the connection closed. Anki does that after reading msync/begin's whole
        # answer (measured: a 499 "client gone" on about one media sync in three). The
        # answer was delivered: no failure.
        log.debug("client closed right after the whole answer", extra={"bytes": written})


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
