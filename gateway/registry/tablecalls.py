"""The registry table's API calls (registry/dynamo.py makes every DynamoDB call through here):
one call in the thread pool with its failure mapped, the pages of a scan or query, a
conditional PutItem.

    TableCalls(client, table, threads=N)
      .call(operation, expected=(), **params) -> dict   `client.<operation>(**params)`
      .get_item(pk) -> item | None                      consistent read
      .all_pages(operation, params) -> [item]           every page of a scan or query
      .query(index, attr, value) -> [item]              one index, every page
      .scan_accounts(projection=None) -> [item]         every `account#` item
      .put_new(item) -> bool                            PutItem only where no item has its pk
      .close()                                          queued calls finish first
    unavailable(operation, code, kind=None) -> RegistryUnavailable   logged and counted

Errors: a ClientError whose code is in `expected` is raised as it is (the caller's answer,
e.g. a failed condition); every other failure is a `RegistryUnavailable` (503), logged (at
ERROR when it is this gateway's setup: a missing table, denied access) and counted in
`gateway_registry_errors_total{kind}` with kind throttled, unavailable or misconfigured. Nothing
of botocore's is chained into the logs (aws/calls.py). botocore retries (standard mode, 3
tries) before an error counts.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from gateway import metrics
from gateway.aws.calls import CLOSED, SETUP, UNREACHABLE, AwsCallFailed, AwsCalls
from gateway.registry.base import RegistryUnavailable
from gateway.registry.table import ACCOUNT, _s

log = logging.getLogger("gateway.registry")

#: Error codes after which a call may succeed later by itself (metrics label, log level).
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_UNAVAILABLE = {"InternalServerError", "ServiceUnavailable", "TransactionConflictException"}


def unavailable(operation: str, code: str, kind: str | None = None) -> RegistryUnavailable:
    """The error to raise (and log and count) for a failed call; `kind` from `code` (an AWS
    error code) unless given: throttled, unavailable, or misconfigured (a missing table,
    denied access: this gateway's setup, logged at ERROR)."""
    if kind is None:
        kind = (
            "throttled"
            if code in _THROTTLED
            else "unavailable"
            if code in _UNAVAILABLE
            else "misconfigured"
        )
    level = logging.ERROR if kind == "misconfigured" else logging.WARNING
    metrics.registry_error(kind)
    detail = f"registry unavailable: DynamoDB {operation} failed ({kind}: {code})"
    log.log(level, "%s", detail, extra={"operation": operation, "code": code, "kind": kind})
    return RegistryUnavailable(detail)


class TableCalls:
    """The calls on DynamoDB table `table` through boto3 `client`, `threads` at a time."""

    def __init__(self, client: Any, table: str, *, threads: int) -> None:
        self.table = table
        self._aws = AwsCalls(client, threads=threads, name="registry")

    async def call(self, operation: str, *, expected: tuple[str, ...] = (), **params: Any) -> Any:
        """One API call in the thread pool. ClientErrors whose code is in `expected` are
        raised as they are; every other failure as a logged, counted RegistryUnavailable."""
        try:
            return await self._aws.run(operation, expected, **params)
        except AwsCallFailed as failed:
            if failed.kind == CLOSED:  # the gateway is stopping
                error = RegistryUnavailable("registry closing")
            else:
                # Throttled or unavailable by its code (refused); refused, reset, DNS, TLS,
                # timeouts (unreachable); no credentials or region, bad parameters (setup).
                kind = {UNREACHABLE: "unavailable", SETUP: "misconfigured"}.get(failed.kind)
                error = unavailable(operation, failed.code, kind)
        # Raised outside the except block: nothing of botocore's is chained into logs.
        raise error

    async def get_item(self, pk: str) -> dict[str, Any] | None:
        answer = await self.call(
            "get_item", TableName=self.table, Key={"pk": _s(pk)}, ConsistentRead=True
        )
        return answer.get("Item")

    async def scan_accounts(self, projection: str | None = None) -> list[dict[str, Any]]:
        """Every `account#` item (a filtered scan: other items are read, never returned)."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :account)",
            "ExpressionAttributeValues": {":account": _s(ACCOUNT)},
        }
        if projection is not None:
            params["ProjectionExpression"] = projection
            if projection.startswith("#"):
                params["ExpressionAttributeNames"] = {projection: projection[1:]}
        return await self.all_pages("scan", params)

    async def query(self, index: str, attr: str, value: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": f"{attr} = :v",
            "ExpressionAttributeValues": {":v": _s(value)},
        }
        return await self.all_pages("query", params)

    async def all_pages(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The items of every page of a scan or query."""
        items: list[dict[str, Any]] = []
        while True:
            page = await self.call(operation, **params)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            params = {**params, "ExclusiveStartKey": page["LastEvaluatedKey"]}

    async def put_new(self, item: dict[str, Any]) -> bool:
        """PutItem only if no item has its `pk`; whether it was written."""
        try:
            await self.call(
                "put_item",
                expected=("ConditionalCheckFailedException",),
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError:
            return False
        return True

    async def close(self) -> None:
        await self._aws.close()
