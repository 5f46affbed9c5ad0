"""Moving an account between nodes' own disks (local storage):
`python -m gateway accounts move NAME --to NODE`.

    command ──signed POST _cluster/move {"sub", "name", "to"} (the signature covers all three:
              a captured request cannot be sent on with another target)──► the owner node
    source  answers the account's requests with 503 ("moving"), waits for requests in flight
            (up to `DRAIN_SECONDS`), stops its worker, holds the account's lock, packs the
            folder with a manifest of hashes (copy.py)
            ──signed POST _cluster/receive?sub=&name= (the archive, streamed; the signature
              covers its SHA-256, `ARCHIVE`: a replay cannot carry another archive)──► target
    target  unpacks into `.incoming-<name>-<random>`, checks every hash and SQLite's
            integrity_check, moves an earlier folder of that name aside (`.replaced-...`, only
            when no worker holds it) and renames the copy into place; 200. Only a copy from
            the node the directory names as the account's owner, to another node, is taken
            (409 otherwise): a copy sent again once the account moved on never lands
    source  flips the owner item to the target (conditional write on its version), renames its
            own folder to `.moved-<name>-<time>` (kept until an operator deletes it), releases
            the lock and the account; 200 to the command

Each signed request (`move`, `receive`) is accepted once: its verified signature is spent in
the registry (`Cluster.first_use`; DynamoDB in a cluster), which every node and a restart see,
so a captured move or archive copy sent again within the replay window is refused (401), also
by a node the account has left since.

Any failure before the flip leaves the source the owner with its folder as it was; the target
removes its incoming copy. Clients keep syncing with their keys: keys derive from the shared
secret, so the target's worker issues and accepts the same ones. Folder names starting with a
dot are never account names (naming.py), so nothing set aside can clash with an account.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway.appkeys import REGISTRY
from gateway.cluster import copy, signing
from gateway.cluster.internal import CLUSTER, SEGMENT, Cluster
from gateway.cluster.placement import Serve
from gateway.errors import GatewayError
from gateway.naming import is_safe
from gateway.web.bodies import read_capped
from gateway.workers.lock import try_lock
from gateway.workers.pool import WorkerPool

log = logging.getLogger("gateway.cluster")

#: How long the source waits for requests in flight before it stops the worker anyway.
DRAIN_SECONDS = 30.0
#: Transfer of one account folder between nodes.
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=3600, sock_connect=5, sock_read=300)


class MoveFailed(Exception):
    """Nothing changed: the source still owns the account (the message says why)."""


REPLAYED = "signature already used (replay)"
#: On `_cluster/receive`: the archive's SHA-256 (hex), which the signature covers.
ARCHIVE = "X-Gateway-Archive-SHA256"


def identity(sub: str, name: str) -> str:
    return signing.identity_of(f"{sub}\0{name}")


def move_identity(sub: str, name: str, to: str) -> str:
    """What a move command's signature binds: the account and the target node."""
    return signing.identity_of(f"{sub}\0{name}\0{to}")


def copy_identity(sub: str, name: str, digest: str) -> str:
    """What a copy's signature binds: the account and the archive's SHA-256, so a copy's
    request sent again within the replay window cannot carry another archive."""
    return signing.identity_of(f"{sub}\0{name}\0{digest}")


async def give(
    cluster: Cluster, pool: WorkerPool, collections_dir: Path, sub: str, name: str, to: str
) -> dict[str, Any]:
    """The source's side; raises `MoveFailed`."""
    router = cluster.router
    if not is_safe(name):
        raise MoveFailed("unsafe account name")
    if not isinstance(await router.route(sub), Serve):
        raise MoveFailed(f"node {router.node_id} does not own the account")
    target = router.nodes.get(to)
    if to == router.node_id or target is None or not target.live(time.time()):
        raise MoveFailed(f"node {to!r} is not a live node other than this one")
    router.block(sub)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while pool.in_flight(name) and loop.time() < deadline:  # noqa: ASYNC110 - polls a count
            await asyncio.sleep(0.1)
        await pool.stop(name)
        lock = try_lock(collections_dir, name)
        if lock is None:
            raise MoveFailed("the account's worker is still running")
        try:
            folder = collections_dir / name
            with tempfile.TemporaryDirectory(dir=collections_dir) as tmp:
                archive = Path(tmp) / "account.tar"
                files = await asyncio.to_thread(copy.pack, folder, archive)
                await _send(cluster, target.url, sub, name, archive)
            if not await router.hand_over(sub, to):
                raise MoveFailed("the owner item changed meanwhile; the target's copy is unused")
            aside = collections_dir / f".moved-{name}-{int(time.time())}"
            folder.rename(aside)
        finally:
            lock.release()
    finally:
        router.unblock(sub)
    log.info("account moved", extra={"account": name, "to_node": to, "files": len(files)})
    return {"account": name, "to": to, "files": len(files), "kept": aside.name}


async def _send(cluster: Cluster, base: str, sub: str, name: str, archive: Path) -> None:
    url = base + SEGMENT + "receive"
    digest = await asyncio.to_thread(copy.sha256_of, archive)
    headers = cluster.sign("POST", url, copy_identity(sub, name, digest))
    headers[ARCHIVE] = digest
    try:
        with archive.open("rb") as body:
            async with cluster.session.post(
                url,
                params={"sub": sub, "name": name},
                data=body,
                headers=headers,
                timeout=TRANSFER_TIMEOUT,
            ) as answer:
                text = (await answer.text())[:300]
                status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MoveFailed(f"target unreachable: {type(exc).__name__}") from None
    if status != 200:
        raise MoveFailed(f"target refused the copy ({status}): {text}")


async def receive(request: web.Request, collections_dir: Path) -> web.StreamResponse:
    """The target's side of a move."""
    cluster = request.app[CLUSTER]
    sub, name = request.query.get("sub", ""), request.query.get("name", "")
    if not sub or not is_safe(name):
        return cluster.refuse(request, "malformed move")
    digest = request.headers.get(ARCHIVE, "")
    reason = cluster.problem(request, copy_identity(sub, name, digest))
    if reason is None and not await cluster.first_use(request, "receive", request.app[REGISTRY]):
        reason = REPLAYED
    if reason is not None:
        return cluster.refuse(request, reason)
    sender = request.headers.get(signing.NODE, "")
    owner = await cluster.router.owner_id(sub)
    if owner != sender or owner == cluster.router.node_id:
        # A copy sent again after the account moved on, or by a node that never owned it:
        # only the owner's copy, to a node that does not own the account, is taken.
        log.warning(
            "move refused: the copy is not from the account's owner", extra={"account": name}
        )
        return web.Response(status=409, text="the sender does not own the account")
    await asyncio.to_thread(collections_dir.mkdir, parents=True, exist_ok=True)  # a new node
    incoming = collections_dir / f".incoming-{name}-{secrets.token_hex(4)}"
    archive = incoming.with_suffix(".tar")
    try:
        received = hashlib.sha256()
        with archive.open("wb") as out:
            async for chunk in request.content.iter_chunked(1 << 20):
                received.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        if not hmac.compare_digest(received.hexdigest(), digest):
            return cluster.refuse(request, "archive differs from the signed one")
        problem = await asyncio.to_thread(copy.unpack, archive, incoming)
        if problem is not None:
            log.warning("move refused: copy does not check out", extra={"problem": problem})
            return web.Response(status=422, text=problem)
        final = collections_dir / name
        if final.exists():
            lock = try_lock(collections_dir, name)
            if lock is None:
                return web.Response(status=409, text="a worker runs this account here")
            try:
                final.rename(collections_dir / f".replaced-{name}-{int(time.time())}")
            finally:
                lock.release()
        incoming.rename(final)
    finally:
        archive.unlink(missing_ok=True)
        if incoming.exists():
            await asyncio.to_thread(shutil.rmtree, incoming, True)
    cluster.router.forget(sub)
    log.info("account received", extra={"account": name})
    return web.json_response({"ok": True})


async def request_move(config: Any, sub: str, name: str, to: str) -> dict[str, Any]:
    """The command's side: ask the owner node to move the account; raises `MoveFailed`."""
    from gateway.cluster import directory_for

    directory = directory_for(config)
    try:
        owner = await directory.owner(sub)
        nodes = await directory.nodes()
    finally:
        await directory.close()
    if owner is None:
        raise MoveFailed("the account is not placed on any node yet")
    if owner.node == to:
        raise MoveFailed(f"the account is on node {to} already")
    source = nodes.get(owner.node)
    if source is None or not source.live(time.time()):
        raise MoveFailed(f"its owner node {owner.node} is down")
    assert config.secret is not None  # config.validate: required in a cluster
    key = signing.node_key(config.secret.reveal().encode())
    url = source.url + SEGMENT + "move"
    headers = signing.sign(
        key,
        "POST",
        urlsplit(url).path,
        f"command@{config.cluster.node_id}",
        move_identity(sub, name, to),
        time.time(),
    )
    async with aiohttp.ClientSession(timeout=TRANSFER_TIMEOUT) as session:
        async with session.post(
            url, json={"sub": sub, "name": name, "to": to}, headers=headers
        ) as answer:
            text = await answer.text()
            if answer.status != 200:
                raise MoveFailed(f"node {owner.node} answered {answer.status}: {text[:300]}")
    return json.loads(text)


async def handle_move(
    request: web.Request, pool: WorkerPool, collections_dir: Path, name_of: Any
) -> web.StreamResponse:
    """The source's route; `name_of(sub)` is the registry's account name for `sub` (or None)."""
    cluster = request.app[CLUSTER]
    try:
        data = json.loads(await read_capped(request, 4096))
        sub, name, to = (str(data[k]) for k in ("sub", "name", "to"))
    except (ValueError, KeyError, TypeError, GatewayError):
        return cluster.refuse(request, "malformed move")
    reason = cluster.problem(request, move_identity(sub, name, to))
    if reason is None and not await cluster.first_use(request, "move", request.app[REGISTRY]):
        reason = REPLAYED
    if reason is not None:
        return cluster.refuse(request, reason)
    if await name_of(sub) != name:
        return web.Response(status=409, text="no such account")
    try:
        result = await give(cluster, pool, collections_dir, sub, name, to)
    except MoveFailed as exc:
        log.warning("move failed; nothing changed", extra={"account": name, "reason": str(exc)})
        return web.Response(status=409, text=str(exc))
    return web.json_response(result)
