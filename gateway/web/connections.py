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
  connection is closed without an answer (`_Handler`). Bytes of a later request that came
  before the previous answer was done (pipelined: in the same packet as the previous request,
  or while it was handled) start this time when the connection starts waiting for it.

    Runner(app, header_timeout=..., keepalive_timeout=..., **AppRunner kwargs)
        an `aiohttp.web.AppRunner` whose connections follow both rules (without
        `header_timeout`, aiohttp's one timer) and whose every answer carries `SERVER`.
    constant_server(app)
        every answer of `app` carries `Server: SERVER` instead of aiohttp's
        "Python/3.x aiohttp/3.y" (no versions for an attacker to match against advisories).

Every answer: the application's (through its `on_response_prepare` signal, so also those of
the error middleware, of sub-applications and aiohttp's HTTP exceptions) and those aiohttp
makes itself for a request it could not parse or a handler that raised (`_Handler`).

Whether the parser holds part of a next request: aiohttp's C parser does not say, so each
chunk's last byte is fed on its own (`_Handler._feed`): the stream is at a message boundary
exactly when that byte completed a request (its headers without a body, or its body's end).
Costs one copy of each chunk less its last byte, except for a chunk that ends with a blank
line (`\r\n\r\n`): that ends any header block, so no part of a next request's headers can be
left, and the stream is at a boundary when the last request's body has ended. aiohttp's parser
holds the rest of a chunk back when its request queue is full or a body's reader is full, and
parses it when fed b"" later: the verdict waits until then (the last byte, kept meanwhile, is
fed after the held-back bytes), and the stream counts as not at a boundary in between. Bytes
after an upgrade request (`Upgrade: websocket`, CONNECT) wait outside the parser; aiohttp parses
them in `finish_response` if the handler declined the upgrade.

Relies on five attributes of aiohttp's `RequestHandler` (3.14): `_waiter`, a fresh future
when it starts waiting for the next request (with none queued) and unset or done otherwise;
`_request_count`, the requests whose headers its parser completed; `_messages`, those not yet
handled, with their body streams; `_max_msg_queue_size`, the queue length at which its parser
stops; `_reading_paused`, set while a body's reader is full (its parser stopped too). The
tests in tests/test_connections.py and tests/test_connection_attacks.py pin the behaviour, so
an aiohttp upgrade that changes them fails there.
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
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        #: The body stream of the last request whose headers the parser completed.
        self._last_body: Any = None
        #: `_request_count` when `_last_body` was last brought up to date.
        self._tracked = 0
        #: True while every byte received belongs to a completed request (see the module doc).
        self._at_boundary = True
        #: The last chunk's last byte, kept from the parser while it holds bytes back.
        self._held = b""
        #: Whether `_at_boundary` waits for bytes the parser held back; what it is decided by:
        #: the request count and body end before the last byte, or None (a blank line ended it).
        self._pending = False
        self._before: tuple[int, bool] | None = None
        super().__init__(*args, **kwargs)

    # aiohttp sets `_waiter` to a fresh future when it starts waiting for the next request:
    # the moment pipelined bytes of that request become "the next request's headers".
    @property  # type: ignore[override]
    def _waiter(self) -> asyncio.Future[None] | None:
        return RequestHandler._waiter.__get__(self)  # type: ignore[attr-defined,no-any-return]

    @_waiter.setter
    def _waiter(self, value: asyncio.Future[None] | None) -> None:
        RequestHandler._waiter.__set__(self, value)  # type: ignore[attr-defined]
        if value is not None and not self._at_boundary and self._header_deadline is None:
            self._arm()

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
        self._feed(data)
        if self._request_count > completed:
            self._disarm()

    def _feed(self, data: bytes) -> None:
        if data:
            self._at_boundary = False  # until the parser has taken every byte of the chunk
            data, self._held = self._held + data if self._held else data, b""
            self._pending = True
            if data.endswith(b"\r\n\r\n"):
                # A blank line ends any header block, so a chunk ending with one leaves no
                # part of a next request's headers in the parser: the stream is at a boundary
                # exactly when the last request's body has ended (every request of a stock
                # client arrives so: one parse instead of two, issue 18).
                self._parse(data)
                self._before = None
            else:
                if len(data) > 1:
                    self._parse(data[:-1])
                self._held = data[-1:]
        else:  # aiohttp re-reading what its parser held back
            self._parse(data)
        self._settle()

    def _settle(self) -> None:
        # Decides `_at_boundary` once the parser holds nothing of the chunk back (it stops at
        # a full request queue or a paused body and is fed b"" when it may go on).
        if not self._pending or self._holding_back():
            return
        if self._held:
            self._before = (self._request_count, self._body_ended())
            byte, self._held = self._held, b""
            self._parse(byte)
            if self._holding_back():
                return
        self._pending = False
        if self._before is None:
            self._at_boundary = self._body_ended()
            return
        # The last byte completed a request: the headers of one without a body, or the end
        # of the last request's body.
        count, ended = self._before
        self._at_boundary = self._body_ended() and (self._request_count > count or not ended)

    def _holding_back(self) -> bool:
        return self._reading_paused or len(self._messages) >= self._max_msg_queue_size

    def _parse(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    async def finish_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().finish_response(*args, **kwargs)
        finally:
            # It parses the bytes that came after an upgrade request it declined.
            self._track()

    def _track(self) -> None:
        # The body stream of the last request parsed, by `_parse` or by aiohttp itself.
        if self._request_count != self._tracked and self._messages:
            self._last_body = self._messages[-1][1]
        self._tracked = self._request_count

    def _body_ended(self) -> bool:
        self._track()
        return self._last_body is None or self._last_body.is_eof()

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
