"""Erasing a deleted account's folder on its owner node (several nodes, local storage).

erase_remote(cluster, sub, name)   the node that deleted the account (the portal) asks the
                                   owner node, and asks again (`PAUSE` apart, each attempt
                                   signed afresh) while the owner answers 409 or 503, for
                                   `patience` seconds; returns None, or why not (to log: the
                                   folder then stays on that node for an operator)
handle_erase(request, erase, name_of)
                                   the owner's `_cluster/erase` route: signed over the sub
                                   and name (move.identity); refused (409) while the
                                   registry still has the account, so a valid signature
                                   alone can never erase a live account; accepted once (its
                                   signature spent in the registry before it acts: sent
                                   again, 401). The folder goes only through `erase(name) ->
                                   None | str` (app.py passes backup/erase.py's handshake:
                                   every gateway process on the node stops the account's
                                   sync server, the folder goes under its worker lock); a
                                   reason back (a backup, restore or export holds the
                                   account; its server did not stop in time) is a 503 with
                                   Retry-After, the folder left whole, never a 401/403; so
                                   is an OSError from it (the disk refused part of the
                                   removal: what is left stays until the next attempt).

Why the signature is spent before the erase, not once it completes: spent afterwards, a replay
of a completed request (within the replay window) would go through the erase again before its
refusal: a want posted, servers stopped, and whatever is in the folder by then removed (nothing
today, as a deleted account's name is retired; but an operator's restore of that account in
the meantime would go). Spent first, each signature acts at most once, as the move routes'
do; an attempt answered 503 has spent its own, and the sender's next attempt, a whole second
later, carries a new time and so a new signature (signing.py signs whole seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from gateway.appkeys import REGISTRY
from gateway.cluster.internal import CLUSTER, RETRY_AFTER, SEGMENT, Cluster
from gateway.cluster.move import REPLAYED, identity
from gateway.errors import GatewayError
from gateway.naming import is_safe
from gateway.web.bodies import read_capped

log = logging.getLogger("gateway.cluster")

#: Seconds between the sender's attempts: at least one, so each is signed with a later time
#: than the one before (an attempt answered 503 has spent its signature).
PAUSE = 1.0
#: The owner's answers the sender asks again after: the registry still shows the account (409),
#: the account cannot be erased just now (503).
_AGAIN = frozenset({409, 503})

Erase = Callable[[str], Awaitable[str | None]]
NameOf = Callable[[str], Awaitable[str | None]]


async def erase_remote(cluster: Cluster, sub: str, name: str, patience: float = 10.0) -> str | None:
    """After an account's deletion: have its owner node (when another node) erase its folder.
    The owner refuses while its registry still shows the account (a cached row, up to
    `registry.cache_seconds`: 409) or while the account cannot be erased now (503): asked again
    for `patience` seconds. None when done or nothing to do; else why not (the caller logs it:
    the folder stays for an operator)."""
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
        if status not in _AGAIN or asyncio.get_running_loop().time() > deadline:
            return f"node {node.id} answered {status}"
        await asyncio.sleep(PAUSE)


async def handle_erase(request: web.Request, erase: Erase, name_of: NameOf) -> web.StreamResponse:
    """The owner's side of `erase_remote` (module doc). Only for an account the registry no
    longer has: a valid signature alone cannot erase a live account."""
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
    # Spent before it acts (module doc); not on a 409: the sender may ask again in the same
    # second with the same signature.
    if not await cluster.first_use(request, "erase", request.app[REGISTRY]):
        return cluster.refuse(request, REPLAYED)
    try:
        left = await erase(name)
    except OSError as exc:
        # The disk's refusal (a file it will not unlink now, a lock file it cannot write): an
        # erase that cannot happen now, like a reason back; the sender asks again, signed
        # afresh. Anything else is a fault of ours: a 500, loud.
        left = f"the disk refused: {type(exc).__name__} {exc.strerror or ''}".rstrip()
    if left is not None:
        log.warning(
            "a deleted account's folder cannot be erased now: 503, the deleting node asks again",
            extra={"account": name, "reason": left},
        )
        return web.Response(
            status=503, text="try again shortly", headers={"Retry-After": str(RETRY_AFTER)}
        )
    cluster.router.forget(sub)
    log.info("account folder erased for a deleted account", extra={"account": name})
    return web.json_response({"ok": True})
