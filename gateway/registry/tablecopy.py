"""Copying another registry's items into the DynamoDB table (registry/transfer.py,
`accounts copy-registry`): `DynamoRegistry` (dynamo.py) takes these methods from `CopyIn`.

    copy_account(account, dry_run=False) -> (outcome, reason)
        the account (all its fields) and its name claim, unless either is in the table
    copy_retired_name(retired, dry_run=False) -> (outcome, reason)
        the retired claim `name#<name>`, unless a claim is in the table
    copy_host_key(key, name, dry_run=False) -> (outcome, reason)
        `key#<digest>` issued to the account `name`, unless it is in the table

Outcomes as `transfer.COPIED`, `PRESENT` (the same item is there) or `CONFLICT` (with a reason
naming no key). Each write is conditional: an item in the table is never replaced, and a write
that lost a race is compared again (`transfer.after_failed_write`). `dry_run`: read only.
Items have the layout of dynamo.py's docstring (table.py makes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from cachetools import TTLCache

from gateway.registry import transfer
from gateway.registry.base import Account, IssuedKey, RetiredName
from gateway.registry.table import KEY, NAME, _account_item, _key_item, _n, _s
from gateway.registry.tablecalls import TableCalls


class CopyIn:
    """The copy-in methods of `DynamoRegistry`, which holds the table calls, the caches and the
    account reads they use."""

    _calls: TableCalls
    _counts: TTLCache[str, dict[str, int]]

    if TYPE_CHECKING:

        async def _read(self, sub: str) -> Account | None: ...

        def _remember(self, sub: str, account: Account | None) -> None: ...

    async def copy_account(self, account: Account, *, dry_run: bool = False) -> tuple[str, str]:
        """Write `account` (all its fields) and its name claim, unless either is in the table:
        (outcome, reason) as `transfer.COPIED`, `PRESENT` (the same account) or `CONFLICT` (a
        reason naming no key). `dry_run`: read only."""
        outcome = await self._compare_account(account)
        if outcome[0] != transfer.COPIED or dry_run:
            return outcome
        try:
            await self._calls.call(
                "transact_write_items",
                expected=("TransactionCanceledException",),
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._calls.table,
                            "Item": {"pk": _s(NAME + account.name), "sub": _s(account.sub)},
                            # Its own claim (not retired) may be there: an account deleted in
                            # the table keeps its claim retired and is not made again.
                            "ConditionExpression": "attribute_not_exists(pk) OR "
                            "(#sub = :sub AND attribute_not_exists(retired_at))",
                            "ExpressionAttributeNames": {"#sub": "sub"},
                            "ExpressionAttributeValues": {":sub": _s(account.sub)},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._calls.table,
                            "Item": _account_item(account),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ],
            )
        except ClientError:
            return transfer.after_failed_write(await self._compare_account(account))
        self._remember(account.sub, account)
        self._counts.clear()
        return outcome

    async def _compare_account(self, account: Account) -> tuple[str, str]:
        claim = await self._calls.get_item(NAME + account.name)
        if claim is not None:
            if claim.get("sub", {}).get("S") != account.sub:
                return transfer.CONFLICT, "its name is held by another account in the table"
            if "retired_at" in claim:
                return transfer.CONFLICT, "deleted in the table (its name is retired there)"
        there = await self._read(account.sub)
        if there is None:
            return transfer.COPIED, ""
        changed = transfer.differences(there, account)
        if changed:
            return transfer.CONFLICT, "differs in the table: " + ", ".join(changed)
        return transfer.PRESENT, ""

    async def copy_retired_name(
        self, retired: RetiredName, *, dry_run: bool = False
    ) -> tuple[str, str]:
        """Write the retired claim `name#<name>` unless a claim is in the table; as
        `copy_account`."""
        outcome = await self._compare_retired(retired)
        if outcome[0] != transfer.COPIED or dry_run:
            return outcome
        item = {
            "pk": _s(NAME + retired.name),
            "sub": _s(retired.sub),
            "retired_at": _n(retired.retired_at),
        }
        if await self._calls.put_new(item):
            return outcome
        return transfer.after_failed_write(await self._compare_retired(retired))

    async def _compare_retired(self, retired: RetiredName) -> tuple[str, str]:
        claim = await self._calls.get_item(NAME + retired.name)
        if claim is None:
            return transfer.COPIED, ""
        if claim.get("sub", {}).get("S") != retired.sub:
            return transfer.CONFLICT, "the name is held by another account in the table"
        if "retired_at" not in claim:
            return (
                transfer.CONFLICT,
                "deleted in the SQLite registry but not in the table: delete it again",
            )
        return transfer.PRESENT, ""

    async def copy_host_key(
        self, key: IssuedKey, name: str, *, dry_run: bool = False
    ) -> tuple[str, str]:
        """Write `key#<digest>` (issued to the account `name`) unless it is in the table; as
        `copy_account`."""
        outcome = await self._compare_key(key, name)
        if outcome[0] != transfer.COPIED or dry_run:
            return outcome
        if await self._calls.put_new(_key_item(key, name)):
            return outcome
        return transfer.after_failed_write(await self._compare_key(key, name))

    async def _compare_key(self, key: IssuedKey, name: str) -> tuple[str, str]:
        item = await self._calls.get_item(KEY + key.digest)
        if item is None:
            return transfer.COPIED, ""
        there = (
            item.get("sub", {}).get("S"),
            int(item["generation"]["N"]) if "generation" in item else None,
            item.get("name", {}).get("S", name),
        )
        if there != (key.sub, key.generation, name):
            return transfer.CONFLICT, "a host key differs in the table (account or generation)"
        return transfer.PRESENT, ""
