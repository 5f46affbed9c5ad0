"""`accounts copy-registry`: a gateway's SQLite registry copied into a DynamoDB table (a moto
server in its own process) while the gateway runs, the gateway restarted on the table with the
same data folder, a second copy for what was added meanwhile; real `anki` clients keep syncing
with the keys they hold (no login), moto for Cognito, the command line in a process of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import boto3
import pytest
from anki.errors import SyncError

from gateway.registry import DISABLED
from tests.ankiclient import Client, Required, is_auth_error
from tests.conftest import REGION
from tests.test_dynamo_e2e import accounts_cli, dynamodb_server  # noqa: F401 - the fixture

PASSWORD = "Correct-Horse-9"
TABLE = "anki-gateway-copy"
INCREMENTAL = (Required.NO_CHANGES, Required.NORMAL_SYNC)


def test_a_sqlite_registry_copied_into_dynamodb_keeps_devices_syncing_with_their_keys(
    cognito: Any,
    dynamodb_server: str,  # noqa: F811 - the fixture
    start_gateway: Any,
    tmp_path: Path,
) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        cognito.add_user(user, PASSWORD, f"{user}@example.com")
    data = tmp_path / "data"
    on_sqlite = cognito.config(data)
    cli = accounts_cli(data, cognito, TABLE, dynamodb_server)  # copies from data's SQLite

    def clients(name: str) -> Client:
        return Client(tmp_path / "clients" / name)

    # -- one node on SQLite, as deployed today ----------------------------------------------
    gw = start_gateway(on_sqlite)
    tablet = clients("tablet")
    tablet.login("alice", PASSWORD, gw.url)
    tablet.sync()
    alice = gw.registry.get_by_name("alice")
    assert gw.registry.sign_out(alice.sub) == 1  # the tablet's key is of generation 0
    phone, laptop = clients("phone"), clients("laptop")
    phone.add_note("written on SQLite")
    phone.login("alice", PASSWORD, gw.url)
    phone.sync()
    laptop.login("alice", PASSWORD, gw.url)
    laptop.sync()
    bobs = clients("bob")
    bobs.login("bob", PASSWORD, gw.url)
    bobs.sync()
    assert gw.registry.set_status(gw.registry.get_by_name("bob").sub, DISABLED)
    carols = clients("carol")
    carols.login("carol", PASSWORD, gw.url)
    carols.sync()

    made = cli("create-table")
    assert made.returncode == 0, made.stderr
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=dynamodb_server)

    def table() -> list[dict[str, Any]]:
        items = dynamodb.scan(TableName=TABLE, ConsistentRead=True)["Items"]
        return sorted(items, key=lambda item: item["pk"]["S"])

    # Someone else holds the name "carol" in the table already.
    squatter = {"pk": {"S": "name#carol"}, "sub": {"S": "someone-else"}}
    dynamodb.put_item(TableName=TABLE, Item=squatter)

    planned = cli("copy-registry", "--dry-run")
    assert planned.returncode == 4, planned.stdout + planned.stderr
    assert "carol: account not copied: its name is held by another account" in planned.stdout
    assert "accounts: 2 to copy, 0 already there, 1 in conflict" in planned.stdout
    assert table() == [squatter]  # a dry run writes nothing

    # -- first copy, while the node keeps running on SQLite ---------------------------------
    first = cli("copy-registry")
    assert first.returncode == 4, first.stdout + first.stderr
    assert "carol: account not copied: its name is held by another account" in first.stdout
    assert "accounts: 2 copied, 0 already there, 1 in conflict" in first.stdout
    # Alice's key of generation 1 (one for all her devices: the stock server derives it from
    # the account's worker password) and Bob's; not the tablet's (signed out), nor Carol's
    # (her account is not in the table).
    assert "keys: 2 copied, 0 already there, 0 in conflict" in first.stdout
    # A new user and another of Alice's devices log in between the two copies.
    daves, desk = clients("dave"), clients("desk")
    daves.add_note("Dave's, between the copies")
    daves.login("dave", PASSWORD, gw.url)
    daves.sync()
    desk.login("alice", PASSWORD, gw.url)
    desk.sync()
    gw.stop()

    # -- the node restarted on the table, same data folder; the second copy tops up ---------
    registry = dataclasses.replace(
        on_sqlite.registry, backend="dynamodb", table=TABLE, endpoint_url=dynamodb_server
    )
    gw = start_gateway(dataclasses.replace(on_sqlite, registry=registry))
    second = cli("copy-registry")
    assert second.returncode == 4, second.stdout + second.stderr
    assert "accounts: 1 copied, 2 already there, 1 in conflict" in second.stdout
    assert "keys: 1 copied, 2 already there, 0 in conflict" in second.stdout
    before = table()
    third = cli("copy-registry")
    assert third.returncode == 4, third.stdout + third.stderr
    assert "accounts: 0 copied, 3 already there, 1 in conflict" in third.stdout
    assert "keys: 0 copied, 3 already there, 0 in conflict" in third.stdout
    assert table() == before  # a run with nothing new changes nothing
    assert squatter in before  # the conflicting item was not overwritten
    assert not any(item["pk"]["S"].startswith("key#") and "carol" in str(item) for item in before)
    for line in (planned.stdout + first.stdout + second.stdout + third.stdout).splitlines():
        assert not any(len(word) == 64 for word in line.split()), line  # no key digests

    # Every device syncs with the key it holds, no login, no full sync; notes are there. (The
    # restarted gateway listens on another port: what a load balancer's address hides.)
    for device in (tablet, phone, laptop, desk, bobs, carols, daves):
        assert device.auth is not None
        device.auth.endpoint = gw.url
    phone.add_note("written on DynamoDB")
    assert phone.sync() in INCREMENTAL
    assert laptop.sync() in INCREMENTAL
    assert laptop.note_fronts() == {"written on SQLite", "written on DynamoDB"}
    assert desk.sync() in INCREMENTAL
    assert desk.note_fronts() == {"written on SQLite", "written on DynamoDB"}
    assert daves.sync() in INCREMENTAL
    fresh_dave = clients("dave-again")
    fresh_dave.login("dave", PASSWORD, gw.url)  # the same account (no "dave-2"), with his note
    fresh_dave.sync()
    assert fresh_dave.note_fronts() == {"Dave's, between the copies"}
    # Signed out before the copy: still refused. Disabled: still disabled. Carol's account was
    # not copied (her name is someone else's in the table): refused, as
    # docs/operations/dynamodb-registry.md says.
    for refused in (tablet, bobs, carols):
        with pytest.raises(SyncError) as info:
            refused.sync()
        assert is_auth_error(info.value)
    assert gw.registry.get_by_name("bob").status == DISABLED
    for device in (tablet, phone, laptop, desk, bobs, carols, daves, fresh_dave):
        device.close()
