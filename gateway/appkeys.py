"""Typed application state (aiohttp `web.AppKey`), shared by every route module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from gateway.auth.login import LoginService
    from gateway.auth.revalidation import Revalidator
    from gateway.config import Config
    from gateway.identity.provider import IdentityProvider
    from gateway.ops.usagetotals import UsageTotals
    from gateway.registry import Registry
    from gateway.web.pace import Pacing
    from gateway.workers.pool import WorkerPool

CONFIG: web.AppKey[Config] = web.AppKey("config")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
PROVIDER: web.AppKey[IdentityProvider] = web.AppKey("provider")
POOL: web.AppKey[WorkerPool] = web.AppKey("pool")
LOGIN: web.AppKey[LoginService] = web.AppKey("login")
REVALIDATOR: web.AppKey[Revalidator] = web.AppKey("revalidator")
#: Usage totals over all accounts, walked every few minutes (metrics).
USAGE: web.AppKey[UsageTotals] = web.AppKey("usage_totals")
#: How fast request bodies must arrive (web/bodies.py); defaults when unset.
PACING: web.AppKey[Pacing] = web.AppKey("pacing")

#: Gauges read at scrape time besides the app's own (ops/gauges.py), registered by the
#: composition root (app.py): the last backup's and prune run's (backup/, retention/gauges.py).
GAUGES: web.AppKey[tuple[Collector, ...]] = web.AppKey("gauges")

#: The local account a request was routed to or logged in as (for the access log).
ACCOUNT: web.RequestKey[str] = web.RequestKey("account", str)
