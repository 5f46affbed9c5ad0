"""The cluster directory: heartbeat items (`node#<id>`) and owner items (`owner#<sub>`).

    Directory.announce(node)              write this node's heartbeat item
    Directory.nodes() -> {id: Node}       every node that announced itself (live or not; DynamoDB
                                          leaves out nodes dead for over a day)
    Directory.owner(sub) -> Ownership?    the account's owner item
    Directory.claim(new, replaces) -> bool
        a conditional write: `new` is stored only if the owner item is still `replaces`
        (None: only if there is no owner item), compared by version; False when another node
        changed it first. This is what keeps one owner, and so one worker, per account.
    DirectoryUnavailable                  the store cannot answer now (503, never 403)

Implementations: `dynamo.DynamoDirectory` (the DynamoDB table the registry uses; boto3 in a
thread pool) and `sqlite.SqliteDirectory` (a file in a data folder shared by processes on one
host). Every method is a coroutine and never blocks the event loop.
"""

from __future__ import annotations

import abc

from gateway.cluster.placement import Node, Ownership
from gateway.errors import Unavailable

NODE_PREFIX = "node#"
OWNER_PREFIX = "owner#"


class DirectoryUnavailable(Unavailable):
    """The directory's store cannot answer now: 503 with Retry-After, never 403."""


class Directory(abc.ABC):
    @abc.abstractmethod
    async def announce(self, node: Node) -> None: ...

    @abc.abstractmethod
    async def nodes(self) -> dict[str, Node]: ...

    @abc.abstractmethod
    async def owner(self, sub: str) -> Ownership | None: ...

    @abc.abstractmethod
    async def claim(self, new: Ownership, replaces: Ownership | None) -> bool: ...

    async def close(self) -> None:
        return None


def node_item(node: Node) -> dict[str, str | int | float]:
    return {
        "url": node.url,
        "public_url": node.public_url,
        "load": node.load,
        "expires": node.expires,
    }


def node_from(node_id: str, item: dict[str, object]) -> Node:
    return Node(
        id=node_id,
        url=str(item["url"]),
        public_url=str(item.get("public_url") or ""),
        load=int(str(item.get("load", 0))),
        expires=float(str(item["expires"])),
    )


def ownership_from(sub: str, item: dict[str, object]) -> Ownership:
    return Ownership(
        sub=sub,
        node=str(item["node"]),
        expires=float(str(item["expires"])),
        version=int(str(item["version"])),
    )
