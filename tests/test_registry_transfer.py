"""`registry/transfer.py`: what a copy of a SQLite registry into a DynamoDB table (moto's
`mock_aws`) writes, leaves alone and reports, case by case; the end-to-end run with real
clients is tests/test_registry_copy_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from gateway.identity.provider import Identity
from gateway.registry import DISABLED, SqliteRegistry
from gateway.registry.base import Account
from gateway.registry.transfer import copy_registry, differences
from tests.test_registry import TABLE, Clock, DynamoStore


@pytest.fixture
async def stores(tmp_path: Path) -> Any:
    """(SQLite registry, DynamoDB store) with accounts "alice" (signed out once, a key of each
    generation) and "bob" (deleted: his name retired)."""
    sqlite = SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "old", clock=Clock())
    alice, _ = await sqlite.ensure(Identity("sub-a", "alice", "alice@example.com"))
    await sqlite.add_host_key("sub-a", "old-key", 0)
    await sqlite.sign_out("sub-a")
    await sqlite.add_host_key("sub-a", "alice-key", 1)
    await sqlite.end_portal_sessions("sub-a")
    await sqlite.ensure(Identity("sub-b", "bob", None))
    await sqlite.delete("sub-b")
    with mock_aws():
        dynamo = DynamoStore(tmp_path)
        yield sqlite, dynamo
        for registry in dynamo.opened:
            await registry.close()
    await sqlite.close()


def test_differences_name_the_fields_that_differ_except_those_moving_with_use() -> None:
    a = Account("s", "alice", "alice", None, "active", 1.0, 2.0)
    moved = Account("s", "alice", "alice", None, "active", 1.0, 9.0, checked_at=9.0)
    changed = Account("s", "alice", "al", "a@x", DISABLED, 1.0, 2.0, key_generation=1)
    assert differences(a, a) == [] and differences(moved, a) == []
    assert differences(changed, a) == ["cognito_username", "email", "status", "key_generation"]


async def test_everything_is_copied_once_and_the_account_reads_back_equal(stores) -> None:
    sqlite, dynamo = stores
    table = dynamo.open()
    report = await copy_registry(await sqlite.contents(), table)
    assert report.conflicts == []
    assert report.counts == {
        "accounts": {"copied": 1, "present": 0, "conflict": 0},
        "retired names": {"copied": 1, "present": 0, "conflict": 0},
        "keys": {"copied": 1, "present": 0, "conflict": 0},
    }
    other = dynamo.open()  # another node: reads the table, not a cache
    assert await other.get("sub-a") == await sqlite.get("sub-a")
    assert (await other.account_for_key("alice-key")).name == "alice"
    assert await other.account_for_key("old-key") is None
    # The retired name is never given out again, not even to a new "bob".
    bob, created = await other.ensure(Identity("sub-new", "bob", None))
    assert created and bob.name == "bob-2"
    again = await copy_registry(await sqlite.contents(), dynamo.open())
    assert {kind: n["present"] for kind, n in again.counts.items()} == {
        "accounts": 1,
        "retired names": 1,
        "keys": 1,
    }
    assert again.conflicts == []


async def test_a_change_on_either_side_after_a_copy_is_reported_and_not_overwritten(
    stores,
) -> None:
    sqlite, dynamo = stores
    await copy_registry(await sqlite.contents(), dynamo.open())
    before = dynamo.client.scan(TableName=TABLE)["Items"]
    # After the first copy, on the SQLite registry: Alice signed out again, Carol created and
    # deleted. In the table: Carol's name taken by someone else.
    await sqlite.sign_out("sub-a")
    await sqlite.ensure(Identity("sub-c", "carol", None))
    await sqlite.delete("sub-c")
    dynamo.client.put_item(
        TableName=TABLE, Item={"pk": {"S": "name#carol"}, "sub": {"S": "someone-else"}}
    )
    report = await copy_registry(await sqlite.contents(), dynamo.open())
    assert report.conflicts == [
        "alice: account not copied: differs in the table: key_generation",
        "carol: retired name not copied: the name is held by another account in the table",
    ]
    after = dynamo.client.scan(TableName=TABLE)["Items"]
    squatter = {"pk": {"S": "name#carol"}, "sub": {"S": "someone-else"}}
    assert sorted(map(repr, after)) == sorted(map(repr, [*before, squatter]))


async def test_an_account_deleted_on_sqlite_after_the_copy_is_reported(stores, tmp_path) -> None:
    sqlite, dynamo = stores
    await sqlite.ensure(Identity("sub-d", "dave", None))
    await copy_registry(await sqlite.contents(), dynamo.open())
    await sqlite.delete("sub-d")
    report = await copy_registry(await sqlite.contents(), dynamo.open())
    assert report.conflicts == [
        "dave: retired name not copied: deleted in the SQLite registry but not in the table: "
        "delete it again"
    ]
    assert (await dynamo.open().get("sub-d")) is not None  # left for the operator


async def test_an_account_deleted_in_the_table_is_not_made_again(stores) -> None:
    sqlite, dynamo = stores
    await copy_registry(await sqlite.contents(), dynamo.open())
    await dynamo.open().delete("sub-a")
    report = await copy_registry(await sqlite.contents(), dynamo.open())
    assert report.conflicts == [
        "alice: account not copied: deleted in the table (its name is retired there)"
    ]
    assert await dynamo.open().get("sub-a") is None


async def test_a_dry_run_writes_nothing(stores) -> None:
    sqlite, dynamo = stores
    report = await copy_registry(await sqlite.contents(), dynamo.open(), dry_run=True)
    assert report.counts["accounts"]["copied"] == 1 and report.counts["keys"]["copied"] == 1
    assert dynamo.client.scan(TableName=TABLE)["Items"] == []
