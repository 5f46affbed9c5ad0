"""Client connections: an idle keep-alive connection lives long, its next request's headers
must come quickly.

aiohttp has one timer for both: `keepalive_timeout` runs from the moment a connection opens and
after each answer, and closes the connection if no request's headers are complete by then. A
short value (a header deadline against slow-header clients) closes idle keep-alive connections
early; a reverse proxy in front keeps its idle upstream connections longer (an ALB 60 s, Caddy
2 min, nginx `keepalive_timeout` 60 s) and then sends a request into a connection the gateway
has just closed: the client gets a 502 (issue 16, item 5). The two are set apart here:

- `server.keepalive_seconds` (aiohttp's `keepalive_timeout`): how long a connection may sit idle
  between requests, with no byte sent. Keep it above every proxy's idle time in front.
- `server.header_timeout_seconds`: from the moment a connection opens, or from the first byte
  of a later request, the request's headers must be complete within this time, else the
  connection is closed without an answer (`_Handler`).

    Runner(app, header_timeout=..., keepalive_timeout=..., **AppRunner kwargs)
        an `aiohttp.web.AppRunner` whose connections follow both rules (without
        `header_timeout`, aiohttp's one timer) and whose every answer carries `SERVER`.
    constant_server(app)
        every answer of `app` carries `Server: SERVER` instead of aiohttp's
        "Python/3.x aiohttp/3.y" (no versions for an attacker to match against advisories).

Every answer: the application's (through its `on_response_prepare` signal, so also those of
the error middleware, of sub-applications and aiohttp's HTTP exceptions) and those aiohttp
makes itself for a request it could not parse or a handler that raised (`_Handler`).

Relies on two attributes of aiohttp's `RequestHandler` (3.14): `_waiter`, set while it waits
for the next request, and `_request_count`, the requests its parser completed. The tests in
tests/test_connections.py pin the behaviour, so an aiohttp upgrade that changes them fails
there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

#: The `Server` header of every answer: the product, no versions.
SERVER = "anki-cognito-gateway"


async def _set_server(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER


def constant_server(app: web.Application) -> None:
    app.on_response_prepare.append(_set_server)


class _Handler(RequestHandler):
    def __init__(self, *args: Any, header_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # a new connection's first request must come within the deadline

    def handle_error(self, *args: Any, **kwargs: Any) -> web.StreamResponse:
        # aiohttp's own answer (unparsable request, a handler that raised): no app signal.
        response = super().handle_error(*args, **kwargs)
        response.headers[hdrs.SERVER] = SERVER
        return response

    def data_received(self, data: bytes) -> None:
        if self._header_timeout is None:
            super().data_received(data)
            return
        if self._header_deadline is None and self._between_requests():
            self._arm()  # the first byte of the next request
        completed = self._request_count
        super().data_received(data)
        if self._request_count > completed:
            self._disarm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _arm(self) -> None:
        if self._header_timeout is None:
            return
        self._disarm()
        self._header_deadline = self._loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expire(self) -> None:
        # Armed only while no request is in hand (one in hand is timed by bodies.py), and
        # disarmed as soon as the parser completes one: no request came in time.
        self._header_deadline = None
        self.force_close()


class _Server(web.Server):
    header_timeout: float | None

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


class Runner(web.AppRunner):
    def __init__(
        self, app: web.Application, *, header_timeout: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the application's start-up
        # Same state, only the connection handler it makes differs.
        server.__class__ = _Server
        server.header_timeout = self._header_timeout  # type: ignore[attr-defined]
        return server
