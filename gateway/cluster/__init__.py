"""Several gateway nodes serving one set of accounts (issue 12). Off unless `cluster.node_id`
is set: a single gateway builds none of this and its request path does not change.

    placement.py   pure: nodes, owner items, `decide()` (serve, forward, place, take over, down)
    signing.py     pure: node-to-node request signatures
    directory.py   the directory interface (heartbeat and owner items), `dynamo.py`, `sqlite.py`
    router.py      this node's heartbeat, and `route(sub)` for every admitted request
    internal.py    the internal routes other nodes forward to, and the login call to an owner

`open_cluster(config, secret, load)` builds and starts it; `Cluster.close()` stops it.
Terms: an *ownership lease* is a node's claim on an account (not `WorkerPool.lease()`, which
borrows a worker for one request).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.cluster import signing
from gateway.cluster.directory import Directory
from gateway.cluster.internal import Cluster
from gateway.cluster.router import Router
from gateway.config import Config

#: Node-to-node login calls: the owner may have to start a worker first.
LOGIN_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=3)


def directory_for(config: Config) -> Directory:
    """The registry's DynamoDB table when the registry is there, else a file in the data
    folder (processes on one host sharing it)."""
    registry: Any = getattr(config, "registry", None)
    if registry is not None and getattr(registry, "backend", "sqlite") == "dynamodb":
        from gateway.cluster.dynamo import DynamoDirectory

        return DynamoDirectory.connect(
            registry.table, registry.region, getattr(registry, "endpoint_url", "")
        )
    from gateway.cluster.sqlite import FILE, SqliteDirectory

    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteDirectory(config.data_dir / FILE)


async def open_cluster(config: Config, secret: bytes, load: Callable[[], int]) -> Cluster:
    """This node, announced; raises `DirectoryUnavailable` if the directory cannot be reached."""
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


async def close_cluster(cluster: Cluster) -> None:
    await cluster.session.close()
    await cluster.router.close()
