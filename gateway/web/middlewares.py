"""The middlewares every request passes, outermost first.

- `errors_and_access_log`: maps the error tree (errors.py) to HTTP in one place and logs one
  line per request, with a request id. A client that goes away is INFO "client gone" and status
  499 in the log; an error that sheds a client (`close_connection`) closes its connection after
  the answer.
- `per_address_limit`: at most `server.max_requests_per_address` requests in flight per client
  address (addresses.py), else `TooManyInFlight` (429).
- `refuse_encoded_bodies`: a request body with a `Content-Encoding` other than `identity` is
  refused (`EncodedBody`, 415) before it is read. aiohttp's server would inflate it (gzip,
  deflate, br, zstd) before any handler reads it: a proxied body would reach the worker changed
  and its size limits (uploads/payload.py) would count the wrong bytes. Anki never sends one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import logs, metrics
from gateway.appkeys import ACCOUNT, CONFIG
from gateway.errors import EncodedBody, GatewayError, TooManyInFlight
from gateway.web.addresses import InFlight

log = logging.getLogger("gateway")
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: Status in the access log for a request whose client went away (nginx's convention): none
#: was sent.
CLIENT_GONE = 499


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maps the error tree to HTTP in one place, and logs one line per request.

    A client that goes away (a reset while its body is read, or while the answer is written)
    is no error of ours: INFO "client gone", status 499 in the log, nothing sent.
    """
    token = logs.request_id.set(secrets.token_hex(6))
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except GatewayError as exc:
        status = exc.status
        if status >= 500 and _client_gone(request):
            status = _log_client_gone(exc.detail)
        else:
            level = logging.ERROR if status == 500 else logging.INFO
            log.log(level, "refused", extra={"status": status, "reason": exc.detail})
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        answer = web.Response(status=exc.status, text=exc.public, headers=headers)
        if exc.close_connection:
            await answer_and_close(request, answer)
        return answer
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        # aiohttp cancels a handler whose client went away (with handler_cancellation) and
        # every handler at shutdown.
        status = _log_client_gone("cancelled") if _client_gone(request) else 503
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionError) or _client_gone(request):
            reason = type(exc).__name__
            if isinstance(exc, ConnectionError) and str(exc):
                reason += f": {exc}"  # the OS's words or ours, never the client's text
            status = _log_client_gone(reason)
        else:
            log.exception("unhandled error")
        return web.Response(status=500, text="internal error")
    finally:
        seconds = time.perf_counter() - started
        _measure(request, status, seconds, response)
        # Health probes every few seconds would drown the log: they go to DEBUG.
        quiet = status == 200 and request.path.endswith(("/health", "/ready"))
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round(seconds * 1000, 2),
                "account": request.get(ACCOUNT),
            },
        )
        logs.request_id.reset(token)


def _measure(
    request: web.Request, status: int, seconds: float, response: web.StreamResponse | None
) -> None:
    route = metrics.route_kind(request.path, request.app[CONFIG].server.path_prefix)
    metrics.request(route, status, seconds)
    if route in ("sync", "media"):
        # What crossed the gateway, counted once here rather than in the streaming loops.
        metrics.proxied("upload", request.content.total_bytes)
        if response is not None and response.prepared:
            metrics.proxied("download", response.body_length)
        elif isinstance(response, web.Response) and isinstance(response.body, bytes):
            # A whole answer (forwarding/upstream.py) is sent once this returns.
            metrics.proxied("download", len(response.body))


async def answer_and_close(request: web.Request, answer: web.Response) -> None:
    """Send `answer`, then close the connection: aiohttp would otherwise linger for the rest of
    an unread body (up to its lingering time, 10 s) and keep the connection."""
    answer.force_close()
    try:
        await answer.prepare(request)
        await answer.write_eof()
    except ConnectionError:
        return  # it went away meanwhile: nothing left to close
    if request.transport is not None:
        request.transport.close()  # after the answer: asyncio flushes what is buffered first


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _log_client_gone(reason: str) -> int:
    log.info("client gone", extra={"reason": reason})
    return CLIENT_GONE


@web.middleware
async def per_address_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """At most `server.max_requests_per_address` requests in flight per client (addresses.py)."""
    config = request.app[CONFIG]
    if config.cluster.enabled and request.path.startswith(
        tuple(config.server.path_prefix + "_cluster/" + kind for kind in ("sync/", "msync/"))
    ):
        # Another node's forwarded sync requests: their clients were counted where they
        # connected (the route refuses anything unsigned before reading a body byte). The
        # other internal routes read a small body before they can check its signature: they
        # count here like any request.
        return await handler(request)
    address = client_address(request, config.server.trust_forwarded_for)
    in_flight = request.app[IN_FLIGHT]
    if not in_flight.enter(address):
        raise TooManyInFlight("too many requests in flight from one address")
    try:
        return await handler(request)
    finally:
        in_flight.leave(address)


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        # The last entry is the one our own reverse proxy added; earlier ones come from the
        # client and can be forged. Several header lines are one list (RFC 9110 §5.3): a proxy
        # may add a line of its own after the client's (HAProxy's `option forwardfor`).
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.remote or "unknown"


@web.middleware
async def refuse_encoded_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for a request body with a Content-Encoding (module doc), before it is read."""
    if request.body_exists:
        codings = {
            token.strip().lower()
            for value in request.headers.getall("Content-Encoding", ())
            for token in value.split(",")
        }
        if codings - {"", "identity"}:
            raise EncodedBody("request body with a Content-Encoding")
    return await handler(request)
