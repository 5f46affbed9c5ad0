"""Erasing a deleted account's folder on its owner node (several nodes, local storage).

erase_remote(cluster, sub, name)   the node that deleted the account (the portal) asks the
                                   owner node; returns None, or why not (to log: the folder
                                   then stays on that node for an operator)
handle_erase(...)                  the owner's `_cluster/erase` route: signed over the sub
                                   and name (move.identity); refused (409) while the
                                   registry still has the account, so a valid signature
                                   alone can never erase a live account; accepted once
                                   (its signature spent in the registry when it acts:
                                   sent again, 401)
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.appkeys import REGISTRY
from gateway.cluster.internal import CLUSTER, SEGMENT, Cluster
from gateway.cluster.move import REPLAYED, identity
from gateway.errors import GatewayError
from gateway.naming import is_safe
from gateway.web.bodies import read_capped
from gateway.workers.pool import WorkerPool

log = logging.getLogger("gateway.cluster")


async def erase_remote(cluster: Cluster, sub: str, name: str, patience: float = 10.0) -> str | None:
    """After an account's deletion: have its owner node (when another node) stop its worker and
    remove its folder. The owner refuses while its registry still shows the account (a cached
    row, up to `registry.cache_seconds`): asked again for `patience` seconds. None when done or
    nothing to do; else why not (the caller logs it: the folder stays for an operator)."""
    node = await cluster.router.remote_owner(sub)
    if node is None:
        return None
    url = node.url + SEGMENT + "erase"
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        headers = cluster.sign("POST", url, identity(sub, name))
        try:
            async with cluster.session.post(
                url, json={"sub": sub, "name": name}, headers=headers
            ) as answer:
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"node {node.id} unreachable: {type(exc).__name__}"
        if status == 200:
            return None
        if status != 409 or asyncio.get_running_loop().time() > deadline:
            return f"node {node.id} answered {status}"
        await asyncio.sleep(0.5)


async def handle_erase(
    request: web.Request, pool: WorkerPool, collections_dir: Path, name_of: Any
) -> web.StreamResponse:
    """The owner's side of `erase_remote`. Only for an account the registry no longer has: a
    valid signature alone cannot erase a live account."""
    cluster = request.app[CLUSTER]
    try:
        data = json.loads(await read_capped(request, 4096))
        sub, name = str(data["sub"]), str(data["name"])
    except (ValueError, KeyError, TypeError, GatewayError):
        return cluster.refuse(request, "malformed erase")
    reason = cluster.problem(request, identity(sub, name))
    if reason is not None:
        return cluster.refuse(request, reason)
    if not is_safe(name) or await name_of(sub) is not None:
        return web.Response(status=409, text="the account still exists")
    # Spent only once it acts: the sender asks again (same second, same signature) after a 409.
    if not await cluster.first_use(request, "erase", request.app[REGISTRY]):
        return cluster.refuse(request, REPLAYED)
    await pool.stop(name)
    await asyncio.to_thread(shutil.rmtree, collections_dir / name, True)
    cluster.router.forget(sub)
    log.info("account folder erased for a deleted account", extra={"account": name})
    return web.json_response({"ok": True})
