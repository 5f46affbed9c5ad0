"""HTTP/1.1 exchanges with a worker on this host, for requests whose body is whole in memory:
every small request of a stock client (forwarding/upstream.py sends uploads and requests to
other nodes with aiohttp's client).

    link = WorkerLink()                        # one per gateway process
    answer = await link.exchange(port, method, target, headers, body, reuse=...)
    answer.status, answer.reason, answer.headers, answer.head, answer.complete
    async for chunk in answer.rest(): ...      # when not complete: the body after `head`
    answer.release()                           # always, when done (finally)
    link.close()

Why (issue 16, issue 18): aiohttp's client was the largest single share of the gateway's
time per `sync/meta` (about 0.2 ms and 190 µs of CPU of 1.07 ms; docs/benchmarks.md). For a
body already in memory to a loopback peer that always frames its answers, an exchange is one
write of the request and one parse of the answer (httptools, the llhttp parser uvicorn uses).

The request: `method target HTTP/1.1`, `Host`, the given headers (the caller has dropped the
hop-by-hop ones), and `Content-Length` (never chunked: forwarding/upstream.py, "Upstream
framing"), written at once. `target` is the worker's path (no query: the caller sends requests
with one through aiohttp). Header names and values come from aiohttp's request parser, which
refuses CR and LF in them; the request is checked for a line break it did not put there anyway
(`ValueError`, nothing sent).

The answer: `head` is all of it when it ends within `whole` bytes (`complete`), else somewhat
more than `whole` bytes, the rest read by `rest()` as it comes (reading pauses while more than
`BUFFER` bytes wait for the caller). A connection goes back to the idle set only after a whole
answer that allows keep-alive; one with anything to read when taken again (its worker closed
its end, or sent stray bytes) is closed instead of used; and it is closed once idle for
`IDLE_SECONDS`, taken or not (the stock server never closes an idle connection: a burst of
requests would leave its connections open for the worker's lifetime). Bytes past the answer (a
second answer, even in the same packet) end the connection and never join the answer; an
answer that is not framed (read until the worker closes) is `Broken`: the stock server frames
every answer to HTTP/1.1.

Errors (the caller maps them; module doc of forwarding/upstream.py, "Sending a request twice"):
    Refused   the connection could not be made: nothing reached the worker
    Stale     a reused connection closed before any byte of an answer: the worker may or may
              not have read the request
    Broken    the connection failed or the answer was malformed (or its head, or its
              trailers, above `MAX_HEAD` bytes or `MAX_HEADERS` fields: a head counted as
              sent, however it is cut into packets; trailers as the bytes that come without
              a body byte), after the request was sent; the connection is closed at once
    TimeoutError   no byte from the worker for `READ_SECONDS` (or `CONNECT_SECONDS` to connect)
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Mapping

import httptools
from multidict import CIMultiDict

#: Seconds to wait for a connection (as aiohttp's `sock_connect` did).
CONNECT_SECONDS = 5.0
#: Seconds without a byte from the worker before the exchange fails; above the client's own
#: stall timer (60 s): a 300 MB download or the server's post-upload check may take long.
READ_SECONDS = 600.0
#: A connection idle this long is closed rather than used (aiohttp's `keepalive_timeout`).
IDLE_SECONDS = 5.0
#: Idle connections kept per worker port.
MAX_IDLE = 32
#: Bytes of an answer's body held before reading from the worker pauses.
BUFFER = 256 * 1024
#: Bytes of an answer's status line and headers (or of its trailers) past which it is `Broken`:
#: the stock server's are under 1 KiB, and a worker is not trusted with the gateway's memory
#: (its folder is a user's upload: workers/containment/).
MAX_HEAD = 64 * 1024
#: Header fields of an answer (and its trailers) past which it is `Broken`: the stock server
#: sends about five; hyper, the Anki client's HTTP library, refuses more than 100 anyway.
MAX_HEADERS = 100


class Refused(Exception):
    """The worker's port refused the connection (or did not take it in time)."""


class Stale(Exception):
    """A reused connection closed before any byte of the answer."""


class Broken(Exception):
    """The exchange failed after the request was sent."""


class _Connection(asyncio.Protocol):
    """One connection to a worker, one exchange at a time (callbacks of httptools' parser)."""

    def __init__(self, idle: list[_Connection]) -> None:
        self._idle = idle  # the idle set of its port, left when the connection closes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._wake_at: int | None = None  # wake once more body bytes than this wait
        self._expiry: asyncio.TimerHandle | None = None  # closes it once idle `IDLE_SECONDS`
        self.busy = True  # in an exchange (an idle connection expects no byte)
        self._begin()

    def _begin(self) -> None:
        self.answered = False  # a byte of the answer came
        self.headers_done = False
        self.status = 0
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.reason = b""
        self.header_list: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self._head_fed = 0  # bytes fed while the head was not whole (the parser buffers them)
        # The head's bytes as parsed: the status line, each header line, the blank line.
        self._header_bytes = len(b"HTTP/1.1 200 \r\n\r\n")
        self._since_body = 0  # bytes fed since the last body byte, once the head is whole

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if self.complete or not self.busy:  # bytes nobody asked for: not a connection to use
            self.error = Broken("bytes after the answer")
            self._drop()
            return
        if self.error is not None:  # closing already: what follows is not gathered
            return
        if not self.headers_done:
            self._head_fed += len(data)
        else:
            self._since_body += len(data)  # reset by each body byte (`on_body`)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # (an upgrade, 101, is reported by an exception of its own: never for a POST)
            if self.error is None:
                self.error = Broken(f"malformed answer: {type(exc).__name__}")
        if not self.headers_done and self._head_fed > MAX_HEAD and self.error is None:
            # (one header the parser still gathers, or no end of the head in sight)
            self.error = Broken("answer head too large")
        if self.headers_done and self._since_body > MAX_HEAD and self.error is None:
            # (a trailer field the parser still gathers: no body byte for that long)
            self.error = Broken("answer trailers too large")
        if self.error is not None:
            self._drop()  # nothing more is read from it (the exchange reports the error)
        if len(self.body) > BUFFER and self.transport is not None:
            self.transport.pause_reading()
        if self._ready():
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self in self._idle:
            self._idle.remove(self)
        if not self.complete and self.error is None:
            self.error = Broken("connection closed") if self.answered else Stale()
        self._wake()

    # httptools.HttpResponseParser
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: a connection in an unknown state
            self.error = Broken("bytes after the answer")
            raise self.error  # stops the parser: nothing of it joins the answer

    def on_status(self, status: bytes) -> None:
        self.reason += status
        self._header_bytes += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        # As the line was sent, with the one space stock servers put after the colon.
        self._header_bytes += len(name) + len(value) + len(b": \r\n")
        if self._header_bytes > MAX_HEAD or len(self.header_list) >= MAX_HEADERS:
            # (trailers too: they come after the head)
            self.error = Broken("answer head too large")
            raise self.error  # stops the parser
        self.header_list.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body
        self._since_body = 0

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # an interim answer (RFC 9110 §15.2): skipped
            self.headers_done = False
            self.reason = b""
            self.header_list.clear()
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()  # known only until it returns

    # the exchange's side
    def _ready(self) -> bool:
        return (
            self.error is not None
            or self.complete
            or (self._wake_at is not None and self.headers_done and len(self.body) > self._wake_at)
        )

    async def wait(self, more_than: int) -> None:
        """Until the answer is whole or failed, or more than `more_than` bytes of its body
        wait. Raises TimeoutError when that takes `READ_SECONDS`."""
        self._wake_at = more_than
        if self._ready():
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(READ_SECONDS, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if not self._ready():
            raise TimeoutError("worker sent nothing in time")

    def take(self) -> bytes:
        """The body bytes waiting, now the caller's; reading resumes."""
        taken = bytes(self.body)
        self.body.clear()
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return taken

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        """Back to its port's idle set after a whole answer that keeps the connection; closed
        otherwise. Once only (an idle connection is not the caller's any more)."""
        if not self.busy:
            return
        keep = (
            self.complete
            and self.error is None
            and not self.closed
            and self.keep_alive
            and len(self._idle) < MAX_IDLE
        )
        if not keep:
            self.closed = True
            self._drop()
            return
        self._begin()
        self._parser = httptools.HttpResponseParser(self)
        self.busy = False
        self._wake_at = None
        self.idle_since = time.monotonic()
        self._idle.append(self)
        # Closed once idle that long, used or not (the stock server never closes it).
        self._expiry = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._expire)

    def take_idle(self) -> bool:
        """Out of the idle set into an exchange, if still fit for one (else closed): open,
        idle less than `IDLE_SECONDS`, and nothing to read (an idle connection has nothing to
        read unless its worker closed its end, or sent bytes nobody asked for, which the event
        loop may not have seen yet)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if (
            self.closed
            or self.transport is None
            or self.transport.is_closing()
            or time.monotonic() - self.idle_since >= IDLE_SECONDS
            or _readable(self.transport)
        ):
            self._drop()
            return False
        self.busy = True
        return True

    def _expire(self) -> None:
        self._expiry = None
        if not self.busy:
            self._drop()


class Answer:
    """A worker's answer (module doc)."""

    __slots__ = ("_connection", "complete", "head", "headers", "reason", "status")

    def __init__(self, connection: _Connection, status: int, head: bytes) -> None:
        self._connection = connection
        self.status = status
        self.reason = connection.reason.decode("latin-1")
        self.headers: CIMultiDict[str] = CIMultiDict(
            (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
            for name, value in connection.header_list
        )
        self.head = head
        self.complete = connection.complete

    async def rest(self) -> AsyncIterator[bytes]:
        """The body after `head`, as it comes. Raises Broken, TimeoutError."""
        connection = self._connection
        while not connection.complete:
            await connection.wait(0)
            if connection.error is not None:
                raise Broken(str(connection.error) or "connection closed")
            if connection.body:
                yield connection.take()
        if connection.body:
            yield connection.take()

    def release(self) -> None:
        self._connection.release()


class WorkerLink:
    """Connections to the workers on this host (127.0.0.1), idle ones kept per port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._idle: dict[int, list[_Connection]] = {}

    async def exchange(
        self,
        port: int,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        reuse: bool,
        whole: int,
    ) -> Answer:
        """Sends the request, reads the answer's head (module doc). `reuse`: over an idle
        connection if there is one; the caller decides what a `Stale` one means (which
        methods may be sent twice). Raises Refused, Stale, Broken, TimeoutError, ValueError (a
        line break in a header)."""
        request = _request(method, target, f"{self._host}:{port}", headers, body)
        connection = self._idle_connection(port) if reuse else None
        if connection is None:
            connection = await self._connect(port)
        try:
            assert connection.transport is not None
            connection.transport.write(request)
            await connection.wait(whole)
            if connection.error is not None and not connection.complete:
                raise connection.error  # (after a whole answer it only ends the connection)
            if not connection.headers_done:
                raise Broken("no answer")
            return Answer(connection, connection.status, connection.take())
        except BaseException:
            connection.closed = True
            connection._drop()
            raise

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in list(idle):
                connection._drop()
        self._idle.clear()

    def _idle_connection(self, port: int) -> _Connection | None:
        idle = self._idle.get(port)
        while idle:
            connection = idle.pop()
            if connection.take_idle():
                return connection
        return None

    async def _connect(self, port: int) -> _Connection:
        idle = self._idle.setdefault(port, [])
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(lambda: _Connection(idle), self._host, port)
        try:
            if hasattr(asyncio, "timeout"):
                # Python 3.11+: the connect runs in this task, so a cancellation either stops
                # it (which closes the transport) or comes after it; `wait_for` ran it in a
                # task of its own and could drop a connection made just as it was cancelled.
                async with asyncio.timeout(CONNECT_SECONDS):
                    _, connection = await connecting
            else:  # pragma: no cover (Python 3.10)
                _, connection = await asyncio.wait_for(connecting, CONNECT_SECONDS)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Refused(type(exc).__name__) from None
        return connection


def _readable(transport: asyncio.Transport) -> bool:
    """Whether the connection has something to read (or an end) now: a poll that does not
    wait."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return True
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return bool(poll.poll(0))


def _request(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """The request's bytes: line, headers and body (module doc). Raises ValueError for a line
    break inside a header."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(
        f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length"
    )
    lines.append(f"Content-Length: {len(body) if body else 0}")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise ValueError("line break inside a header")
    return text.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + (body or b"")
