"""The gateway's resources, one aiohttp cleanup context each (`add_resources(app, provider)`).

In start order; each closes what it opened, and only that, when the app stops:

    registry     the account registry (REGISTRY), and the gateway secret it needs first
    provider     the identity provider (PROVIDER): Cognito unless one is handed in
    sessions     the two upstream HTTP sessions: fresh connections, and reused ones
    cluster      with several nodes: this node's heartbeat, leases and router (CLUSTER); closed
                 after the workers stopped, so other nodes take the accounts over at once
    pool         the worker pool (POOL), in the containment chosen at start
    gate         the backup gate the running gateway keeps for `python -m gateway backup`
    auth         the login service (LOGIN) and the revalidator (REVALIDATOR)
    proxy        the proxy (PROXY), built from the above; with several nodes on their own
                 disks, the adoption of this node's folders (cancelled first at shutdown)
    started      the "gateway started" line (and the local stand-in warning); "gateway
                 stopped" is logged once everything above is closed

aiohttp runs the cleanup of every context whose start-up finished, in reverse order, also when
a later one fails: a failure early in start-up leaves nothing open (`app._serve` cleans up
after a failed set-up too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway import metrics
from gateway.appkeys import CONFIG, LOGIN, POOL, PROVIDER, REGISTRY, REVALIDATOR
from gateway.auth.admission import Admission
from gateway.auth.cache import CredentialCache
from gateway.auth.limiter import FailureLimiter
from gateway.auth.login import LoginService
from gateway.auth.revalidation import Revalidator
from gateway.backup.gate import BackupGate
from gateway.cluster.internal import CLUSTER
from gateway.forwarding.upstream import new_upstream_session
from gateway.proxy import PROXY, Proxy
from gateway.quota import QuotaGuard
from gateway.quota.limits import quota_limits
from gateway.registry import RegistryUnavailable, open_registry
from gateway.uploads.budget import InflationBudget
from gateway.uploads.payload import MIB, STOCK_INFLATED_FACTOR, PayloadLimits
from gateway.workers import credentials
from gateway.workers.containment import Limits, open_containment
from gateway.workers.pool import WorkerPool
from gateway.workers.syncsession import SessionGuard

if TYPE_CHECKING:
    from gateway.identity.provider import IdentityProvider

log = logging.getLogger("gateway")
Context = Callable[[web.Application], AsyncIterator[None]]

_SECRET: web.AppKey[bytes] = web.AppKey("secret", bytes)
_UPSTREAM: web.AppKey[aiohttp.ClientSession] = web.AppKey("upstream", aiohttp.ClientSession)
_REUSED: web.AppKey[aiohttp.ClientSession] = web.AppKey("reused", aiohttp.ClientSession)
_GATE: web.AppKey[BackupGate] = web.AppKey("gate", BackupGate)


def add_resources(app: web.Application, provider: IdentityProvider | None) -> None:
    """Appends the contexts (module doc)."""
    for context in (
        _stopped,
        _registry,
        _provider(provider),
        _session(_REUSED, reuse=True),
        _session(_UPSTREAM, reuse=False),
        _cluster,
        _pool,
        _gate,
        _auth,
        _proxy,
        _started,
    ):
        app.cleanup_ctx.append(context)


async def _stopped(app: web.Application) -> AsyncIterator[None]:
    yield
    log.info("gateway stopped")


async def _registry(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[_SECRET] = credentials.load_or_create(config.data_dir, config.secret)
    app[REGISTRY] = registry = open_registry(config)
    yield
    await registry.close()


def _provider(given: IdentityProvider | None) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if given is None:
            from gateway.identity.cognito import CognitoProvider

            app[PROVIDER] = chosen = CognitoProvider(app[CONFIG].cognito)
        else:
            app[PROVIDER] = chosen = given
        yield
        await chosen.close()

    return context


def _session(key: web.AppKey[aiohttp.ClientSession], *, reuse: bool) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        app[key] = session = new_upstream_session(reuse=reuse)
        yield
        await session.close()

    return context


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if not config.cluster.enabled:
        yield
        return
    from gateway.cluster import close_cluster, open_cluster

    # The pool starts after the cluster (and stops before it): read it when asked. The first
    # heartbeat runs while the cluster opens, before the pool exists: no workers yet, load 0
    # (a KeyError there left the node out of its own node list: every login 500).
    def load() -> int:
        pool = app.get(POOL)
        return 0 if pool is None else pool.stats()["live"]

    cluster = await open_cluster(config, app[_SECRET], load)
    cluster.router.on_fenced = lambda: app[POOL].retire_all("this node lost its leases")
    app[CLUSTER] = cluster
    yield
    # After the workers stopped (their locks are free): this node's heartbeat is marked ended,
    # so other nodes take its accounts over at once (shared storage).
    await close_cluster(cluster)


async def _pool(app: web.Application) -> AsyncIterator[None]:
    config, registry = app[CONFIG], app[REGISTRY]
    password_for = credentials.password_deriver(app[_SECRET])

    async def worker_password(account: str) -> str:
        # Read when a worker starts: the account's current key generation.
        found = await registry.get_by_name(account)
        return password_for(account, found.key_generation if found else 0)

    containment = open_containment(
        Limits.from_config(config.workers),
        config.workers.containment,
        config.workers.cgroup_dir,
    )
    metrics.containment(containment.mode)
    app[POOL] = pool = WorkerPool.from_config(config, worker_password, containment)
    await pool.start()
    yield
    await pool.close()


async def _gate(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[_GATE] = gate = BackupGate(
        config.collections_dir,
        app[POOL],
        sync_idle_limit=config.workers.sync_session_idle_seconds,
    )
    await gate.start()
    yield
    await gate.close()


async def _auth(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    auth = config.auth
    provider, registry = app[PROVIDER], app[REGISTRY]
    app[LOGIN] = login = LoginService(
        provider=provider,
        registry=registry,
        pool=app[POOL],
        upstream=app[_UPSTREAM],
        password_for=credentials.password_deriver(app[_SECRET]),
        cache=CredentialCache(auth.cache_ttl_seconds, auth.cache_max_entries),
        user_limiter=FailureLimiter(auth.max_failures_per_user, auth.failure_window_seconds),
        address_limiter=FailureLimiter(auth.max_failures_per_address, auth.failure_window_seconds),
    )
    app[REVALIDATOR] = revalidator = Revalidator(
        provider,
        registry,
        auth.recheck_seconds,
        on_suspend=login.forget_account,
        calls_per_second=auth.recheck_calls_per_second,
    )
    login.on_rival = revalidator.check_soon
    login.gate = app[_GATE]
    cluster = app.get(CLUSTER)
    if cluster is not None:
        login.remote_key = cluster.remote_key
    yield
    await revalidator.close()


async def _proxy(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    auth, workers = config.auth, config.workers
    registry, cluster = app[REGISTRY], app.get(CLUSTER)
    sessions = SessionGuard(config.collections_dir, idle=workers.sync_session_idle_seconds)
    # A stopped worker (backup, crash, memory limit, idle) takes its account's sync lease with it.
    app[POOL].on_stopped = sessions.worker_stopped
    app[PROXY] = Proxy(
        Admission(
            registry,
            app[REVALIDATOR],
            FailureLimiter(auth.max_failures_per_address, auth.failure_window_seconds),
        ),
        app[POOL],
        app[_UPSTREAM],
        app[_REUSED],
        PayloadLimits.from_megs(workers.max_payload_megs),
        InflationBudget(
            workers.max_inflated_megs * MIB,
            STOCK_INFLATED_FACTOR * workers.max_payload_megs * MIB,
        ),
        app[_GATE],
        cluster,
        sessions,
        QuotaGuard(quota_limits(config.quota), registry.folder),
        config.data_dir,
        workers.max_answers_on_disk,
    )
    if cluster is None or config.cluster.storage != "local":
        yield
        sessions.close()
        app[PROXY].close()
        return
    from gateway.cluster import adopt_folders

    async def sub_of(name: str) -> str | None:
        found = await registry.get_by_name(name)
        return None if found is None else found.sub

    adopting = asyncio.create_task(adopt_folders(cluster.router, config.collections_dir, sub_of))
    yield
    adopting.cancel()
    await asyncio.gather(adopting, return_exceptions=True)
    sessions.close()
    app[PROXY].close()


async def _started(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.cognito.local_stand_in:
        log.warning(
            "using a LOCAL Cognito stand-in: not for production",
            extra={"endpoint": config.cognito.endpoint_url},
        )
    try:
        accounts: int | None = await app[REGISTRY].count()
    except RegistryUnavailable:
        accounts = None  # serve anyway: requests answer 503 until the registry answers
    log.info(
        "gateway started",
        extra={
            "data_dir": str(config.data_dir),
            "registry": config.registry.backend,
            "accounts": accounts,
        },
    )
    yield
