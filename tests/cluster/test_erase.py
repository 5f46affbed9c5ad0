"""The owner's side of a cluster erase (`_cluster/erase`, gateway/cluster/erase.py): the real
route, signatures and registry, in one process over HTTP on loopback; the erase itself a
function that fails the way the disk can."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from gateway.appkeys import REGISTRY
from gateway.cluster import erase as cluster_erase
from gateway.cluster import move, signing
from gateway.cluster.internal import CLUSTER, SEGMENT, Cluster
from gateway.registry.sqlite import SqliteRegistry
from tests.cluster.test_router import Clock, router


async def test_an_erase_that_fails_on_the_disk_is_a_503_and_asked_again(tmp_path, aiohttp_client):
    """An erase that raises OSError (a file the disk will not unlink now, a lock file it cannot
    write) is the erase that cannot happen now: 503 with Retry-After, so the deleting node asks
    again with a fresh signature, never a 500 it gives up on with the folder half-removed."""
    key = signing.node_key(b"k" * 32)
    calls: list[str] = []

    async def erase(name: str) -> str | None:
        calls.append(name)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied")
        return None

    async def nobody(sub: str) -> str | None:  # the registry no longer has the account
        return None

    async def route(request: web.Request) -> web.StreamResponse:
        return await cluster_erase.handle_erase(request, erase, nobody)

    app = web.Application()
    app.router.add_post("/" + SEGMENT + "erase", route)
    app[CLUSTER] = Cluster(router(tmp_path, "b", Clock(), "local"), key, 30, session=None)  # type: ignore[arg-type]
    app[REGISTRY] = SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "unused")
    client = await aiohttp_client(app)

    async def ask() -> tuple[int, str | None]:
        headers = signing.sign(
            key, "POST", "/" + SEGMENT + "erase", "a", move.identity("sub-a", "alice"), time.time()
        )
        body = json.dumps({"sub": "sub-a", "name": "alice"})
        async with client.post(
            "/" + SEGMENT + "erase",
            data=body,
            headers={**headers, "Content-Type": "application/json"},
        ) as answer:
            return answer.status, answer.headers.get("Retry-After")

    first = await ask()
    await asyncio.sleep(cluster_erase.PAUSE + 0.05)  # the sender's pause: a fresh signature
    second = await ask()
    assert (first, second, calls) == ((503, "5"), (200, None), ["alice", "alice"])
    await app[REGISTRY].close()
