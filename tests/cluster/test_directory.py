"""The directory contract, run against both implementations: SQLite (a file) and DynamoDB
(moto). Conditional claims keep one owner whatever the interleaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import boto3
import pytest
from moto import mock_aws

from gateway.cluster.directory import Directory, DirectoryUnavailable
from gateway.cluster.dynamo import DynamoDirectory
from gateway.cluster.placement import Node, Ownership
from gateway.cluster.sqlite import SqliteDirectory

TABLE = "anki-gateway"


def create_table(client, name: str) -> None:
    # The agreed layout (the registry's create_table makes the same): pk String, no sort key.
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture(params=["sqlite", "dynamodb"])
async def directory(request, tmp_path) -> AsyncIterator[Directory]:
    if request.param == "sqlite":
        found: Directory = SqliteDirectory(tmp_path / "cluster.sqlite3")
        yield found
        await found.close()
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_table(client, TABLE)
        found = DynamoDirectory(client, TABLE)
        yield found
        await found.close()


async def test_nodes_announce_and_are_listed(directory):
    assert await directory.nodes() == {}
    a = Node("a", "http://a/", "https://a.example/", 3, 1000.5)
    await directory.announce(a)
    await directory.announce(Node("b", "http://b/", "", 0, 999.0))
    again = Node("a", "http://a/", "https://a.example/", 4, 1010.25)
    await directory.announce(again)
    nodes = await directory.nodes()
    assert set(nodes) == {"a", "b"}
    assert nodes["a"] == again


async def test_claims_are_compare_and_set(directory):
    assert await directory.owner("sub-1") is None
    first = Ownership("sub-1", "a", 100.0, 1)
    assert await directory.claim(first, None)
    assert await directory.owner("sub-1") == first
    # A second placement of the same account loses.
    assert not await directory.claim(Ownership("sub-1", "b", 100.0, 1), None)
    # A takeover based on the current version wins once; a stale one loses.
    taken = Ownership("sub-1", "b", 200.0, 2)
    assert await directory.claim(taken, first)
    assert not await directory.claim(Ownership("sub-1", "c", 200.0, 2), first)
    assert await directory.owner("sub-1") == taken


async def test_concurrent_claims_leave_exactly_one_owner(directory):
    base = Ownership("sub-2", "a", 1.0, 1)
    assert await directory.claim(base, None)
    wins = await asyncio.gather(
        *(directory.claim(Ownership("sub-2", f"n{i}", 2.0, 2), base) for i in range(8))
    )
    assert sum(wins) == 1
    owner = await directory.owner("sub-2")
    assert owner is not None and owner.node == f"n{wins.index(True)}"


async def test_an_unreachable_store_is_unavailable_not_a_crash(tmp_path):
    client = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url="http://127.0.0.1:9")
    directory = DynamoDirectory(client, TABLE)
    with pytest.raises(DirectoryUnavailable):
        await directory.owner("x")
    await directory.close()
    missing = SqliteDirectory(tmp_path / "d.sqlite3")
    (tmp_path / "d.sqlite3").mkdir()  # a folder where the file should be: cannot be opened
    with pytest.raises(DirectoryUnavailable):
        await missing.owner("x")


async def test_nodes_dead_for_a_day_leave_the_dynamodb_index(aws):
    """Every heartbeat reads each node listed in the index (a GetItem each): node ids that
    come and go (a task id per ECS task, say) must not pile up there for good."""
    client = boto3.client("dynamodb", region_name="eu-west-1")
    create_table(client, TABLE)
    now = 1_800_000_000.0
    directory = DynamoDirectory(client, TABLE, clock=lambda: now)
    await directory.announce(Node("gone", "http://gone/", "", 0, now - 2 * 86400))
    await directory.announce(Node("a", "http://a/", "", 0, now + 30))
    await directory.announce(Node("b", "http://b/", "", 0, now - 3600))  # down, not for long
    assert set(await directory.nodes()) == {"gone", "a", "b"}
    assert set(await directory.nodes()) == {"a", "b"}
    await directory.announce(Node("gone", "http://gone/", "", 0, now + 30))  # back again
    assert set(await directory.nodes()) == {"gone", "a", "b"}
    await directory.close()
