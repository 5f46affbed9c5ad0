"""5. Cognito calls: 50 concurrent identical logins, and 1,000 logins of 100 users within the TTL.

Calls are counted inside the gateway (the production provider's own counter of API calls).
Before each run the credential cache is emptied, so every run starts uncached.
- burst: 50 clients send the same credentials at once (single flight: expect 1 call);
- TTL: 100 users log in 10 times each, in shuffled order, 16 at a time (expect 100 calls).

And, computed from the default settings (`pool_capacity`): how many accounts active within
every re-check interval one user pool serves. A re-check reads one user (AdminGetUser, quota
category UserRead: 120 calls a second per AWS account and Region by default); the re-checks
of all gateway processes share `auth.recheck_calls_per_second`, so the pool serves that many
times `auth.recheck_seconds` accounts, and the rest of the quota is left to logins' lookups,
provisioning and the portal. Before issue 18 a re-check was a ListUsers call (category
UserList: 30 a second, not adjustable) with no budget: all of that quota at 30 x interval
accounts, after which re-checks and provisioning were throttled.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from bench import httpload, stats
from bench.cognito import PASSWORD
from bench.context import Context
from gateway.config import AuthConfig

ID = 5
TITLE = "Cognito calls for concurrent and repeated logins"
TARGET = "1 call for 50 concurrent identical logins; 100 calls for 1,000 logins of 100 users"
BURST_USER = "burstuser"
#: Cognito's default quotas (calls a second per AWS account and Region) for the categories of
#: AdminGetUser (UserRead, adjustable) and ListUsers (UserList, not adjustable).
USER_READ_QUOTA = 120
USER_LIST_QUOTA = 30


def pool_capacity(auth: AuthConfig) -> dict[str, float]:
    """Accounts one pool serves with re-checks inside their budget, from the settings."""
    return {
        "recheck_seconds": float(auth.recheck_seconds),
        "recheck_calls_per_second": auth.recheck_calls_per_second,
        "share_of_user_read_quota": auth.recheck_calls_per_second / USER_READ_QUOTA,
        "accounts": auth.recheck_calls_per_second * auth.recheck_seconds,
        "accounts_before_list_users": float(USER_LIST_QUOTA * auth.recheck_seconds),
    }


async def burst(port: int, n: int) -> int:
    results = await asyncio.gather(
        *(httpload.login(port, BURST_USER, PASSWORD) for _ in range(n)), return_exceptions=True
    )
    return sum(isinstance(r, BaseException) for r in results)


async def many(port: int, users: list[str], total: int, concurrency: int, seed: int) -> int:
    rounds = total // len(users)
    order = [u for _ in range(rounds) for u in users]
    random.Random(seed).shuffle(order)  # noqa: S311 - benchmark order
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(user: str) -> None:
        nonlocal failures
        async with gate:
            try:
                await httpload.login(port, user, PASSWORD)
            except (OSError, httpload.ProtocolError, asyncio.IncompleteReadError):
                failures += 1

    await asyncio.gather(*(one(u) for u in order))
    return failures


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    users = [f"ttluser{i:03d}" for i in range(s.ttl_users)]
    pool = ctx.pool([BURST_USER, *users])
    gateway = ctx.gateway("m5", pool)
    runs: dict[str, list[dict[str, float]]] = {"burst": [], "ttl": []}
    try:
        for i in range(s.calls_runs):
            gateway.control("clear-cache")
            before = gateway.stats()["provider_calls"]
            failed = asyncio.run(burst(gateway.port, s.burst_logins))
            calls = gateway.stats()["provider_calls"] - before
            runs["burst"].append(
                {"logins": float(s.burst_logins), "calls": float(calls), "failures": float(failed)}
            )
            gateway.control("clear-cache")
            before = gateway.stats()["provider_calls"]
            failed = asyncio.run(many(gateway.port, users, s.ttl_logins, s.ttl_concurrency, seed=i))
            calls = gateway.stats()["provider_calls"] - before
            runs["ttl"].append(
                {
                    "logins": float(s.ttl_logins),
                    "users": float(len(users)),
                    "calls": float(calls),
                    "failures": float(failed),
                }
            )
            print(
                f"  run {i + 1}: burst of {s.burst_logins}: {runs['burst'][-1]['calls']:.0f} "
                f"call(s); {s.ttl_logins} logins of {len(users)} users: "
                f"{runs['ttl'][-1]['calls']:.0f} calls, {failed} failed"
            )
    finally:
        gateway.stop()
    figures: dict[str, Any] = {k: stats.over_runs(v) for k, v in runs.items()}
    capacity = figures["pool_capacity"] = pool_capacity(AuthConfig())
    burst_ok = all(r["calls"] == 1 and r["failures"] == 0 for r in runs["burst"])
    ttl_ok = all(r["calls"] == len(users) and r["failures"] == 0 for r in runs["ttl"])
    return {
        "figures": figures,
        "met": burst_ok and ttl_ok,
        "summary": (
            f"{figures['burst']['calls']['median']:.0f} call for {s.burst_logins} concurrent "
            f"logins; {figures['ttl']['calls']['median']:.0f} calls for {s.ttl_logins} logins "
            f"of {len(users)} users; one pool serves {capacity['accounts']:,.0f} accounts "
            f"active within each {capacity['recheck_seconds']:.0f} s at the default re-check "
            f"budget ({capacity['recheck_calls_per_second']:g} AdminGetUser calls/s)"
        ),
    }
