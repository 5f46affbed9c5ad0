"""The directory in the registry's DynamoDB table (partition key `pk`, String, no sort key).

Items written here: `node#<id>` (a heartbeat: url, public_url, load, expires), `node#` (the
set of node ids announced, so listing nodes never scans the table; an id whose node has been
dead for a day leaves it, `FORGET_SECONDS`) and `owner#<sub>`
(node, expires, version). Account items belong to the registry and are never touched.
`claim` is a conditional PutItem (`attribute_not_exists(pk)` or `version = :old`). Only
GetItem, PutItem and UpdateItem are used: the registry's policy (deploy/dynamodb.yaml) covers
them, and nothing here scans the table. boto3 blocks, so every call runs in this directory's
own thread pool (aws/calls.py); throttling, timeouts and network errors raise
`DirectoryUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from gateway.aws.calls import AwsCallFailed, AwsCalls
from gateway.cluster.directory import (
    NODE_PREFIX,
    OWNER_PREFIX,
    Directory,
    DirectoryUnavailable,
    node_from,
    ownership_from,
)
from gateway.cluster.placement import Node, Ownership

#: A claim lost to another node: the answer, not a failure.
_CONFLICT = ("ConditionalCheckFailedException",)
#: The item listing every node id (no node id is empty, so it cannot clash with one).
INDEX = NODE_PREFIX
#: A node whose heartbeat ended this long ago (seconds) leaves the index.
FORGET_SECONDS = 86400.0


class DynamoDirectory(Directory):
    def __init__(
        self, client: Any, table: str, *, threads: int = 8, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._table = table
        self._aws = AwsCalls(client, threads=threads, name="cluster-directory")

    async def _call(self, operation: str, **params: Any) -> Any:
        try:
            return await self._aws.run(operation, _CONFLICT, **params)
        except AwsCallFailed as failed:
            error = DirectoryUnavailable(f"cluster directory: {failed.code or 'error'}")
        raise error

    async def announce(self, node: Node) -> None:
        item = {
            "pk": {"S": NODE_PREFIX + node.id},
            "url": {"S": node.url},
            "public_url": {"S": node.public_url},
            "load": {"N": str(node.load)},
            "expires": {"N": repr(node.expires)},
        }
        await self._call("put_item", TableName=self._table, Item=item)
        await self._call(
            "update_item",
            TableName=self._table,
            Key={"pk": {"S": INDEX}},
            UpdateExpression="ADD ids :me",
            ExpressionAttributeValues={":me": {"SS": [node.id]}},
        )

    async def nodes(self) -> dict[str, Node]:
        index = await self._call(
            "get_item",
            TableName=self._table,
            Key={"pk": {"S": INDEX}},
            ConsistentRead=True,
        )
        ids = sorted(index.get("Item", {}).get("ids", {}).get("SS", []))
        # One GetItem per node, at once: a handful of nodes, and the registry's IAM policy
        # (deploy/dynamodb.yaml) already allows GetItem.
        answers = await asyncio.gather(
            *(
                self._call(
                    "get_item",
                    TableName=self._table,
                    Key={"pk": {"S": NODE_PREFIX + node_id}},
                    ConsistentRead=True,
                )
                for node_id in ids
            )
        )
        found: dict[str, Node] = {}
        for node_id, answer in zip(ids, answers, strict=True):
            if "Item" in answer:
                found[node_id] = node_from(node_id, _plain(answer["Item"]))
        await self._forget_gone(ids, found)
        return found

    async def _forget_gone(self, ids: list[str], found: dict[str, Node]) -> None:
        """Drop from the index the ids of nodes dead for over `FORGET_SECONDS` (each costs
        every node a GetItem per heartbeat; ids that come and go would pile up). A node that
        comes back adds itself again with its next heartbeat. Best effort."""
        limit = self._clock() - FORGET_SECONDS
        gone = [i for i in ids if i not in found or found[i].expires < limit]
        if not gone:
            return
        with contextlib.suppress(DirectoryUnavailable):
            await self._call(
                "update_item",
                TableName=self._table,
                Key={"pk": {"S": INDEX}},
                UpdateExpression="DELETE ids :gone",
                ExpressionAttributeValues={":gone": {"SS": gone}},
            )

    async def owner(self, sub: str) -> Ownership | None:
        answer = await self._call(
            "get_item",
            TableName=self._table,
            Key={"pk": {"S": OWNER_PREFIX + sub}},
            ConsistentRead=True,
        )
        item = answer.get("Item")
        return None if item is None else ownership_from(sub, _plain(item))

    async def claim(self, new: Ownership, replaces: Ownership | None) -> bool:
        from botocore.exceptions import ClientError

        item = {
            "pk": {"S": OWNER_PREFIX + new.sub},
            "node": {"S": new.node},
            "expires": {"N": repr(new.expires)},
            "version": {"N": str(new.version)},
        }
        if replaces is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "version = :old",
                "ExpressionAttributeValues": {":old": {"N": str(replaces.version)}},
            }
        try:
            await self._call("put_item", TableName=self._table, Item=item, **condition)
        except ClientError:  # only the _CONFLICT gets here (_call)
            return False
        return True

    async def close(self) -> None:
        await self._aws.close(wait=False)


def _plain(item: dict[str, dict[str, Any]]) -> dict[str, object]:
    """A DynamoDB item's attributes as plain values (numbers stay strings)."""
    return {name: next(iter(value.values())) for name, value in item.items()}
