"""Opening and closing this node's part of the cluster: `directory_for(config)` (SQLite or
DynamoDB), `open_cluster(config, secret, load)` (router, heartbeat, internal login timeout),
`close_cluster(cluster)`, and `adopt_folders(...)`, which claims the folders of this node's own
disk at start-up (cluster.storage local). The whole is in the package docstring."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from gateway.cluster import signing
from gateway.cluster.directory import Directory
from gateway.cluster.internal import Cluster
from gateway.cluster.router import Router
from gateway.config import Config
from gateway.naming import is_safe

log = logging.getLogger("gateway.cluster")

#: Node-to-node login calls: the owner may have to start a worker first.
LOGIN_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=3)


def directory_for(config: Config) -> Directory:
    """The registry's DynamoDB table when the registry is there, else a file in the data
    folder (processes on one host sharing it)."""
    if config.registry.backend == "dynamodb":
        from gateway.cluster.dynamo import DynamoDirectory
        from gateway.registry.dynamo import make_client

        return DynamoDirectory(make_client(config), config.registry.table)
    from gateway.cluster.sqlite import FILE, SqliteDirectory

    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteDirectory(config.data_dir / FILE)


async def open_cluster(config: Config, secret: bytes, load: Callable[[], int]) -> Cluster:
    """This node, announced (or announcing: a directory down at start is retried)."""
    c = config.cluster
    router = Router(
        directory_for(config),
        node_id=c.node_id,
        url=c.internal_url,
        public_url=c.public_url,
        storage=c.storage,
        lease_seconds=c.lease_seconds,
        heartbeat_seconds=c.heartbeat_seconds,
        load=load,
    )
    await router.start()
    session = aiohttp.ClientSession(timeout=LOGIN_TIMEOUT)
    return Cluster(router, signing.node_key(secret), c.max_clock_skew_seconds, session)


async def adopt_folders(
    router: Router, collections_dir: Path, sub_of: Callable[[str], Awaitable[str | None]]
) -> int:
    """Local storage: claim every account whose folder is on this node's disk and that nobody
    owns yet, so a single gateway that joins a cluster keeps its accounts (without this, the
    first request for an idle account could place it on a node without its collection).
    Conditional writes: an account owned by any node is left alone. Returns how many."""
    names = await asyncio.to_thread(_account_folders, collections_dir)
    adopted = 0
    try:
        for name in names:
            sub = await sub_of(name)
            if sub is not None and await router.adopt(sub):
                adopted += 1
    except Exception as exc:  # noqa: BLE001 - the directory or registry is down: say so
        log.error(
            "adopting account folders failed: restart this node before adding nodes",
            extra={"error": type(exc).__name__, "adopted": adopted},
        )
        raise
    log.info("account folders adopted", extra={"folders": len(names), "adopted": adopted})
    return adopted


def _account_folders(collections_dir: Path) -> list[str]:
    if not collections_dir.is_dir():
        return []
    return sorted(p.name for p in collections_dir.iterdir() if p.is_dir() and is_safe(p.name))


async def close_cluster(cluster: Cluster) -> None:
    await cluster.session.close()
    await cluster.router.close()
