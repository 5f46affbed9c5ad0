"""The aiohttp application: routes, the error middleware, and the resources' lifetimes.

Routes (all under `server.path_prefix`, default "/"):
    POST sync/hostKey        answered here (gateway/auth/login.py)
    *    sync/*, msync/*     proxied to the account's worker (gateway/proxy.py)
    POST provision-user      gateway/provision/handler.py
    *    account/...         the account portal, when portal.enabled (gateway/portal/); with
                             portal.host, the portal is at the root of that host instead
    GET  (the prefix itself) a browser's landing page, when portal.enabled (portal/landing.py)
    GET  health              liveness: the process serves requests
    GET  ready               readiness: registry writable, collections folder, free disk space
    anything else            404 — this is not an open proxy

Every request passes three middlewares (web/middlewares.py): the error tree to HTTP with one log
line per request, a bound on requests in flight per client address (web/addresses.py), and the
refusal of bodies with a Content-Encoding (aiohttp would inflate them). Bodies
are read at the client's pace or not at all (web/bodies.py, web/pace.py); headers must arrive within
`server.header_timeout_seconds`, and idle keep-alive connections last
`server.keepalive_seconds` (`server_options()`, web/connections.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import logs, protocol
from gateway.appkeys import (
    ACCOUNT,
    CONFIG,
    GAUGES,
    LOGIN,
    PACING,
    POOL,
    REGISTRY,
    USAGE,
)
from gateway.backup.erase import erase_served
from gateway.backup.gauges import BackupGauges
from gateway.config import Config
from gateway.errors import NotFound
from gateway.identity.provider import IdentityProvider
from gateway.ops import metricsserver, readiness
from gateway.ops.usagetotals import UsageTotals, usage_totals
from gateway.proxy import PROXY
from gateway.quota.limits import quota_limits
from gateway.quota.usage import limits_by_name
from gateway.resources import add_resources
from gateway.retention.gauges import PruneGauges
from gateway.web import librarylogs, openfiles
from gateway.web.addresses import InFlight
from gateway.web.bodies import read_capped
from gateway.web.connections import Runner, constant_server
from gateway.web.middlewares import (
    IN_FLIGHT,
    client_address,
    errors_and_access_log,
    per_address_limit,
    refuse_encoded_bodies,
)
from gateway.web.pace import Pacing
from gateway.workers import credentials

if TYPE_CHECKING:
    from gateway.portal.directory import CognitoDirectory

log = logging.getLogger("gateway")


async def host_key(request: web.Request) -> web.StreamResponse:
    header = protocol.parse_sync_header(request.headers.get(protocol.SYNC_HEADER))
    body = await read_capped(request, protocol.MAX_LOGIN_COMPRESSED)
    username, password = protocol.decode_login(body)
    config = request.app[CONFIG]
    address = client_address(request, config.server.trust_forwarded_for)
    result = await request.app[LOGIN].login(username, password, address, header)
    request[ACCOUNT] = result.account
    payload, headers = protocol.encode_answer({"key": result.host_key})
    return web.Response(body=payload, headers=headers)


async def sync_proxy(request: web.Request) -> web.StreamResponse:
    kind, method = request.match_info["kind"], request.match_info["method"]
    return await request.app[PROXY].forward(request, f"{kind}/{method}")


async def health(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def ready(request: web.Request) -> web.StreamResponse:
    """Public: whether, and which fixed problems (ops/readiness.py); never counts or paths."""
    config = request.app[CONFIG]
    writable = await request.app[REGISTRY].writable()
    found = await asyncio.to_thread(readiness.probe, writable, config.collections_dir)
    problems = readiness.problems(found, config.server.min_free_disk_megs)
    if problems:
        log.warning("not ready", extra={"problems": problems})
    return web.json_response(
        {"ready": not problems, "problems": problems}, status=503 if problems else 200
    )


async def not_found(request: web.Request) -> web.StreamResponse:
    raise NotFound()


def create_app(
    config: Config,
    *,
    provider: IdentityProvider | None = None,
    portal_directory: CognitoDirectory | None = None,
) -> web.Application:
    """The gateway. `provider` replaces Cognito (tests, benchmarks), `portal_directory` the
    portal's Cognito calls (tests); both are closed on shutdown."""
    librarylogs.install()
    # Login bodies are capped in host_key(); proxied bodies stream and are not capped here.
    app = web.Application(
        middlewares=[errors_and_access_log, per_address_limit, refuse_encoded_bodies],
        client_max_size=1024**2,
    )
    constant_server(app)
    app[CONFIG] = config
    app[IN_FLIGHT] = InFlight(config.server.max_requests_per_address)
    app[PACING] = Pacing(
        config.server.body_idle_timeout_seconds,
        config.server.min_body_bytes_per_second,
        config.server.min_body_average_bytes_per_second,
    )

    add_resources(app, provider)
    app[USAGE] = UsageTotals(
        config.collections_dir,
        limits=lambda: limits_by_name(app[REGISTRY], quota_limits(config.quota)),
    )
    app[GAUGES] = (BackupGauges(config.data_dir), PruneGauges(config.data_dir))
    app.cleanup_ctx.append(usage_totals)
    app.cleanup_ctx.append(metricsserver.listener)
    metricsserver.add_route(app)
    if config.portal.enabled:
        from gateway.local.directory import NOTICE, StandInDirectory
        from gateway.local.keeper import PoolKeeper
        from gateway.portal import create_portal

        if portal_directory is None and isinstance(provider, PoolKeeper):
            # Local mode: the portal re-creates a forgotten stand-in pool as logins do.
            portal_directory = StandInDirectory(config.cognito, keeper=provider)
        from gateway.portal import landing
        from gateway.portal.directory import CognitoDirectory

        stand_in = config.cognito.local_stand_in
        chosen = {
            "directory_type": StandInDirectory if stand_in else CognitoDirectory,
            "notice": NOTICE if stand_in else "",
        }
        secret = credentials.load_or_create(config.data_dir, config.secret)
        if config.portal.host:
            # Its own host name: the portal at that host's root (matched before any route).
            app.add_domain(
                config.portal.host,
                create_portal(config, secret, portal_directory, base="/", **chosen),
            )
        else:
            prefix = config.server.path_prefix
            app.add_subapp(
                prefix + "account/", create_portal(config, secret, portal_directory, **chosen)
            )
        # A person opening the sync URL in a browser: "Create an account" and "Set up Anki".
        landing.add_routes(app, config)
    add_routes(app, config.server.path_prefix)
    return app


def add_routes(app: web.Application, prefix: str) -> None:
    from gateway.provision.handler import add_routes as add_provision_routes

    app.router.add_post(prefix + "sync/hostKey", host_key)
    app.router.add_route("*", prefix + "{kind:m?sync}/{method:[A-Za-z0-9]+}", sync_proxy)
    app.router.add_get(prefix + "health", health)
    app.router.add_get(prefix + "ready", ready)
    if prefix != "/":
        app.router.add_get("/health", health)
        app.router.add_get("/ready", ready)
    add_provision_routes(app)
    if app[CONFIG].cluster.enabled:
        add_cluster_routes(app, prefix)
    app.router.add_route("*", "/{tail:.*}", not_found)


def add_cluster_routes(app: web.Application, prefix: str) -> None:
    """The node-to-node routes (gateway/cluster/internal.py)."""
    from gateway.cluster import erase as cluster_erase
    from gateway.cluster import internal, move

    async def forwarded(request: web.Request) -> web.StreamResponse:
        return await internal.sync(
            request, lambda r, path: r.app[PROXY].forward(r, path, from_node=True)
        )

    async def key_for(app: web.Application, sub: str, header: protocol.SyncHeader) -> str:
        account = await app[REGISTRY].get(sub)
        if account is None:
            raise internal.Misdirected("login for an account this registry does not know")
        return await app[LOGIN].worker_key(account, header)

    async def host_key(request: web.Request) -> web.StreamResponse:
        return await internal.host_key(
            request, lambda sub, header: key_for(request.app, sub, header)
        )

    async def name_of(app: web.Application, sub: str) -> str | None:
        account = await app[REGISTRY].get(sub)
        return None if account is None else account.name

    async def give(request: web.Request) -> web.StreamResponse:
        config = request.app[CONFIG]
        return await move.handle_move(
            request,
            request.app[POOL],
            config.collections_dir,
            lambda sub: name_of(request.app, sub),
        )

    async def receive(request: web.Request) -> web.StreamResponse:
        return await move.receive(request, request.app[CONFIG].collections_dir)

    async def erase(request: web.Request) -> web.StreamResponse:
        # Through the backup handshake, which the cluster package (below backup) cannot import.
        pool, collections_dir = request.app[POOL], request.app[CONFIG].collections_dir
        return await cluster_erase.handle_erase(
            request,
            lambda name: erase_served(pool, collections_dir, name),
            lambda sub: name_of(request.app, sub),
        )

    base = prefix + internal.SEGMENT
    app.router.add_post(base + "erase", erase)
    app.router.add_post(base + "move", give)
    app.router.add_post(base + "receive", receive)
    app.router.add_route("*", base + "{kind:m?sync}/{method:[A-Za-z0-9]+}", forwarded)
    app.router.add_post(base + "hostkey", host_key)


def server_options(config: Config) -> dict[str, Any]:
    """The connection settings of `connections.Runner` from the config (for `run()` and the
    tests alike): keep-alive idle time apart from the header deadline (web/connections.py)."""
    return {
        "keepalive_timeout": config.server.keepalive_seconds,
        "header_timeout": config.server.header_timeout_seconds,
    }


def run(
    config: Config,
    provider: Callable[[], IdentityProvider] | None = None,
    *,
    sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; every worker is stopped before this returns. `provider`
    makes the identity provider that replaces Cognito's (local mode's, gateway/local/keeper.py).
    `sock`, `metrics_sock`: listening sockets bound by the parent of several processes
    (gateway/processes/); without them this binds `server.host:port` and the metrics address."""
    logs.configure(config.logging.level, config.logging.format, with_pid=sock is not None)
    before, after = openfiles.raise_soft_limit()
    log.info("open file limit", extra={"before": before, "after": after})
    app = create_app(config, provider=provider() if provider is not None else None)
    if metrics_sock is not None:
        app[metricsserver.METRICS_SOCKET] = metrics_sock
    asyncio.run(_serve(config, app, sock))


async def _serve(config: Config, app: web.Application, sock: socket.socket | None) -> None:
    runner = Runner(
        app, access_log=None, handle_signals=False, shutdown_timeout=10, **server_options(config)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Inside the try: a start-up step that fails still closes what the ones before opened.
        await runner.setup()
        if sock is None:
            await web.TCPSite(runner, config.server.host, config.server.port).start()
        else:
            await web.SockSite(runner, sock).start()
        await stop.wait()
    finally:
        await runner.cleanup()
