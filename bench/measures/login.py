"""4. Login latency: cached, uncached with a running worker, uncached with a cold worker.

Each login is one `POST sync/hostKey` on a fresh connection, as a client logging in sends it.
- cached: the same credentials again within the TTL (no Cognito, no worker);
- uncached, running worker: the credential cache is emptied before each login, the account's
  worker stays up (Cognito + registry + the worker's own login);
- uncached, cold worker: the cache is emptied and the worker stopped before each login, as after
  an idle reap (Cognito + registry + worker start + the worker's login).

Cognito (moto on loopback, through the production boto3 provider) is timed inside the gateway
around each `authenticate` call; "excluding Cognito" subtracts that login's own call time.
moto alone (one AdminInitiateAuth from this process) is reported for reference.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import httpload, stats
from bench.cognito import PASSWORD, Pool
from bench.context import Context

ID = 4
TITLE = "Login latency"
TARGET = "cached p50 <= 2 ms; cold worker, excluding Cognito, p50 <= 400 ms"
CACHED_LIMIT_MS, COLD_LIMIT_MS = 2.0, 400.0
USER = "loginuser"


async def _timed_logins(port: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await httpload.login(port, USER, PASSWORD)
        out.append((time.perf_counter() - started) * 1000)
    return out


def timed_login(port: int) -> float:
    return asyncio.run(_timed_logins(port, 1))[0]


def uncached(gateway: Any, n: int, *, cold: bool) -> dict[str, list[float]]:
    totals, cognito = [], []
    for _ in range(n):
        gateway.control("clear-cache")
        if cold:
            gateway.control("stop-workers")
        gateway.control("reset")
        totals.append(timed_login(gateway.port))
        calls = gateway.stats()["authenticate_ms"]
        assert len(calls) == 1, f"expected one Cognito call per uncached login, saw {len(calls)}"
        cognito.append(calls[0])
    return {"total": totals, "cognito": cognito}


def moto_alone(pool: Pool, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        pool.boto.admin_initiate_auth(
            UserPoolId=pool.pool_id,
            ClientId=pool.client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": USER, "PASSWORD": PASSWORD},
        )
        out.append((time.perf_counter() - started) * 1000)
    return out


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    pool = ctx.pool([USER])
    gateway = ctx.gateway("m4", pool)
    runs: dict[str, list[dict[str, float]]] = {
        "cached": [],
        "uncached_running": [],
        "uncached_cold": [],
        "moto_alone": [],
    }
    try:
        timed_login(gateway.port)  # first login: account and worker exist from here on
        for i in range(s.login_runs):
            cached = asyncio.run(_timed_logins(gateway.port, s.cached_logins))
            runs["cached"].append(stats.latency(cached))
            for kind, cold, n in (
                ("uncached_running", False, s.warm_logins),
                ("uncached_cold", True, s.cold_logins),
            ):
                got = uncached(gateway, n, cold=cold)
                rest = [t - c for t, c in zip(got["total"], got["cognito"], strict=True)]
                summary = stats.latency(got["total"])
                summary["cognito_p50"] = stats.percentile(got["cognito"], 50)
                summary["excluding_cognito_p50"] = stats.percentile(rest, 50)
                summary["excluding_cognito_p90"] = stats.percentile(rest, 90)
                summary["cognito_share"] = stats.ratio(summary["cognito_p50"], summary["p50"])
                runs[kind].append(summary)
            runs["moto_alone"].append(stats.latency(moto_alone(pool, s.warm_logins)))
            print(
                f"  run {i + 1}: cached p50 {runs['cached'][-1]['p50']:.2f} ms; uncached "
                f"p50 {runs['uncached_running'][-1]['p50']:.1f} ms (Cognito "
                f"{runs['uncached_running'][-1]['cognito_p50']:.1f}); cold p50 "
                f"{runs['uncached_cold'][-1]['p50']:.0f} ms (Cognito "
                f"{runs['uncached_cold'][-1]['cognito_p50']:.1f})"
            )
    finally:
        gateway.stop()
    figures = {kind: stats.over_runs(r) for kind, r in runs.items()}
    cached_p50 = figures["cached"]["p50"]["median"]
    cold_rest = figures["uncached_cold"]["excluding_cognito_p50"]["median"]
    return {
        "figures": figures,
        "met": cached_p50 <= CACHED_LIMIT_MS and cold_rest <= COLD_LIMIT_MS,
        "summary": (
            f"cached p50 {cached_p50:.2f} ms; uncached p50 "
            f"{figures['uncached_running']['p50']['median']:.1f} ms; cold p50 "
            f"{figures['uncached_cold']['p50']['median']:.0f} ms, {cold_rest:.0f} ms "
            "excluding Cognito"
        ),
    }
