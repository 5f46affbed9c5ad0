"""Serving `GET /metrics`: on its own listener (default 127.0.0.1:9464), and on the main port
only behind a bearer token. Never public by default: the counts describe the service's users.

    listener(app)   cleanup context: the separate listener, when `metrics.enabled`; its bound
                    port is `app[METRICS_PORT]`. A port already taken is logged at ERROR and
                    leaves metrics off rather than stopping the gateway. One of several gateway
                    processes serves the socket its parent bound (`app[METRICS_SOCKET]`, shared
                    by all: any of them answers for all) and publishes its worker counts every
                    `PUBLISH_PERIOD` s (metrics.workers_now).
    add_route(app)  `<prefix>metrics` on the main port when `metrics.bearer_token` is set:
                    401 without the right `Authorization: Bearer` (compared in constant time).
                    Wrong tokens count like wrong passwords: after `auth.max_failures_per_address`
                    of them within `auth.failure_window_seconds`, the client address gets 429
                    with Retry-After, for the right token too (else a 200 among the 429s would
                    still confirm a guess). Behind a proxy without trust_forwarded_for every
                    client shares the proxy's address: scrape the own listener instead.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import metrics
from gateway.appkeys import CONFIG, POOL, REGISTRY
from gateway.auth.limiter import FailureLimiter
from gateway.errors import TooManyAttempts
from gateway.registry import RegistryUnavailable
from gateway.web.connections import Runner, constant_server
from gateway.web.middlewares import client_address

log = logging.getLogger("gateway.metrics")
METRICS_PORT: web.AppKey[int] = web.AppKey("metrics_port", int)
METRICS_SOCKET: web.AppKey[socket.socket] = web.AppKey("metrics_socket", socket.socket)
_GATEWAY: web.AppKey[web.Application] = web.AppKey("metrics_gateway", web.Application)
PUBLISH_PERIOD = 1.0
_WRONG_TOKENS: web.AppKey[FailureLimiter] = web.AppKey("metrics_wrong_tokens", FailureLimiter)


async def _serve(request: web.Request) -> web.Response:
    gateway = request.app.get(_GATEWAY, request.app)
    try:
        accounts: dict[str, int] | None = await gateway[REGISTRY].count_by_status()
    except RegistryUnavailable:
        accounts = None  # the rest still helps to see why
    return web.Response(
        body=metrics.render(gateway, accounts), headers={"Content-Type": metrics.CONTENT_TYPE}
    )


async def _serve_with_token(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    limiter = request.app[_WRONG_TOKENS]
    address = client_address(request, config.server.trust_forwarded_for)
    wait = limiter.retry_after(address)
    if wait is not None:
        raise TooManyAttempts("too many wrong metrics tokens from this address", retry_after=wait)
    token = config.metrics.bearer_token
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token.reveal()}" if token is not None else ""
    if not expected or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    ):
        limiter.record_failure(address)
        return web.Response(status=401, text="unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return await _serve(request)


def add_route(app: web.Application) -> None:
    config = app[CONFIG]
    if config.metrics.bearer_token is not None:
        auth = config.auth
        app[_WRONG_TOKENS] = FailureLimiter(
            auth.max_failures_per_address, auth.failure_window_seconds
        )
        app.router.add_get(config.server.path_prefix + "metrics", _serve_with_token)


async def _publish_workers(app: web.Application) -> None:
    while True:
        metrics.workers_now(app[POOL].stats())
        await asyncio.sleep(PUBLISH_PERIOD)


async def listener(app: web.Application) -> AsyncIterator[None]:
    settings = app[CONFIG].metrics
    if not settings.enabled:
        yield
        return
    if metrics.several_processes():
        sock = app.get(METRICS_SOCKET)
        publishing = asyncio.create_task(_publish_workers(app))
        try:
            if sock is None:  # the parent could not bind it, and said so
                yield
            else:
                async for _ in _serve_shared(app, sock):
                    yield
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        return
    runner = await _own_runner(app)
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            log.error(
                "metrics listener could not start; /metrics is off",
                extra={"address": f"{settings.host}:{settings.port}", "error": exc.strerror},
            )
        else:
            sockets = site._server.sockets if site._server is not None else ()  # noqa: SLF001
            app[METRICS_PORT] = sockets[0].getsockname()[1] if sockets else settings.port
            log.info("metrics listening", extra={"address": f"{settings.host}:{app[METRICS_PORT]}"})
        yield
    finally:
        await runner.cleanup()


async def _own_runner(app: web.Application) -> Runner:
    """The listener's own small application, set up: GET /metrics of `app`."""
    own = web.Application()
    constant_server(own)
    own[_GATEWAY] = app
    own.router.add_get("/metrics", _serve)
    runner = Runner(own, access_log=None, handle_signals=False)
    await runner.setup()
    return runner


async def _serve_shared(app: web.Application, sock: socket.socket) -> AsyncIterator[None]:
    runner = await _own_runner(app)
    try:
        await web.SockSite(runner, sock).start()
        app[METRICS_PORT] = sock.getsockname()[1]
        yield
    finally:
        await runner.cleanup()
