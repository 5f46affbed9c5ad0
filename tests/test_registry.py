"""The registry's guarantees, each run against both implementations: SQLite (a file) and DynamoDB
(moto's `mock_aws`). "Another process" is another registry instance on the same store, with
caches of its own; `store.settle()` lets the DynamoDB caches age past `cache_seconds` (the
documented bound for changes made through another node).

moto applies each call without a lock of its own; the DynamoDB client here serialises calls
(`Serialized`) as DynamoDB applies each conditional write atomically, while tasks and threads
still interleave between calls, which is where the races under test are.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from gateway import metrics
from gateway.identity.provider import Identity
from gateway.registry import (
    ACTIVE,
    DELETING,
    DISABLED,
    SEEN_EVERY,
    SUSPENDED,
    Registry,
    RegistryUnavailable,
    SqliteRegistry,
    key_digest,
)
from gateway.registry import dynamo as dynamo_mod
from gateway.registry.base import AccountBeingDeleted
from gateway.registry.dynamo import DynamoRegistry, create_table

TABLE = "anki-gateway-test"
CACHE_SECONDS = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Serialized:
    """A boto3 client whose calls run one at a time (DynamoDB's per-request atomicity; moto
    has none across threads)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method) or name.startswith("_"):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


class Store:
    """One registry store and the instances ("processes") opened on it."""

    creates_folders = True

    def __init__(self, tmp_path: Path) -> None:
        self.collections = tmp_path / "collections"
        self.clock = Clock()
        self.opened: list[Registry] = []

    def open(self) -> Registry:
        registry = self._open()
        self.opened.append(registry)
        return registry

    def _open(self) -> Registry:
        raise NotImplementedError

    def settle(self) -> None:
        """Changes made through other instances are seen by every instance from now on."""

    def stored_text(self) -> str:
        raise NotImplementedError


class SqliteStore(Store):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.path = tmp_path / "registry.sqlite3"

    def _open(self) -> Registry:
        return SqliteRegistry(self.path, self.collections, clock=self.clock)

    def stored_text(self) -> str:
        return self.path.read_bytes().decode("latin-1")


class DynamoStore(Store):
    creates_folders = False

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.client = Serialized(boto3.client("dynamodb", region_name="eu-west-1"))
        create_table(self.client, TABLE)
        self.monotonic = Clock()

    def _open(self, **kwargs: Any) -> DynamoRegistry:
        options: dict[str, Any] = {
            "cache_seconds": CACHE_SECONDS,
            "clock": self.clock,
            "monotonic": self.monotonic,
        }
        return DynamoRegistry(self.client, TABLE, self.collections, **(options | kwargs))

    def settle(self) -> None:
        self.monotonic.now += CACHE_SECONDS + 0.001

    def stored_text(self) -> str:
        return repr(self.client.scan(TableName=TABLE)["Items"])


@pytest.fixture(params=["sqlite", "dynamodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        made: Store = SqliteStore(tmp_path)
        yield made
    else:
        with mock_aws():
            made = DynamoStore(tmp_path)
            yield made
    for registry in made.opened:
        await registry.close()


@pytest.fixture
def registry(store: Store) -> Registry:
    return store.open()


async def test_first_sight_creates_one_account(registry, store, tmp_path):
    ident = Identity("sub-1", "alice", "alice@example.com")
    account, created = await registry.ensure(ident)
    assert created and account.name == "alice" and account.active
    # SQLite makes the folder with the row; DynamoDB leaves it to the owner node's worker.
    assert (tmp_path / "collections" / "alice").is_dir() == store.creates_folders
    again, created_again = await registry.ensure(ident)
    assert not created_again and again.name == "alice"
    assert await registry.count() == 1
    assert await registry.get("sub-1") == again
    assert await registry.get_by_name("alice") == again
    assert await registry.get("sub-2") is None and await registry.get_by_name("bob") is None


async def test_name_collisions_get_a_suffix(registry):
    a, _ = await registry.ensure(Identity("sub-1", "u1", "bob@one.example"))
    b, _ = await registry.ensure(Identity("sub-2", "u2", "bob@two.example"))
    c, _ = await registry.ensure(Identity("sub-3", "bob", None))
    assert (a.name, b.name, c.name) == ("bob", "bob-2", "bob-3")


async def test_a_leftover_folder_is_never_adopted(registry, tmp_path):
    (tmp_path / "collections" / "carol").mkdir(parents=True)
    (tmp_path / "collections" / "carol" / "collection.anki2").write_bytes(b"someone else's")
    account, _ = await registry.ensure(Identity("sub-3", "carol", None))
    assert account.name == "carol-2"


async def test_name_is_permanent_when_email_changes(registry):
    await registry.ensure(Identity("sub-1", "u1", "old@example.com"))
    account, created = await registry.ensure(Identity("sub-1", "u1", "new@example.com"))
    assert not created
    assert account.name == "old" and account.email == "new@example.com"
    assert (await registry.get_by_name("old")).email == "new@example.com"


async def test_traversal_in_identity_stays_inside_collections(registry, tmp_path):
    for i, evil in enumerate(["../../etc", "a/../../b", "/abs", "..", "\x00", "x" * 500]):
        account, _ = await registry.ensure(Identity(f"sub-{i}", evil, None))
        folder = registry.folder(account)
        assert folder.parent == (tmp_path / "collections").resolve()
    names = [(await registry.get(f"sub-{i}")).name for i in range(6)]
    assert len(set(names)) == 6
    assert sorted(a.name for a in await registry.all()) == sorted(names)


async def test_host_keys_route_to_active_accounts_only(registry):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "k" * 40)
    await registry.add_host_key("sub-1", "k" * 40)  # again: ignored
    assert (await registry.account_for_key("k" * 40)).sub == "sub-1"
    assert await registry.account_for_key("x" * 40) is None
    assert registry.knows_key("k" * 40) and not registry.knows_key("x" * 40)
    assert await registry.host_key_count("sub-1") == 1
    assert await registry.set_status("sub-1", DISABLED)
    assert await registry.account_for_key("k" * 40) is None


async def test_only_key_digests_are_stored_and_a_reopened_registry_knows_them(store, registry):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "secretkey" * 4)
    await registry.close()
    store.opened.remove(registry)
    stored = store.stored_text()
    assert "secretkey" not in stored and key_digest("secretkey" * 4) in stored
    assert (await store.open().account_for_key("secretkey" * 4)).name == "alice"


async def test_concurrent_first_sights_of_one_sub_make_one_account(store):
    # Other gateway processes: instances of their own, each in its own thread and loop...
    others = [store.open() for _ in range(3)]
    # ...and several tasks of this process at once.
    here = store.open()
    barrier = threading.Barrier(len(others) + 1)
    results: list[tuple[Any, bool]] = []

    def elsewhere(registry: Registry) -> None:
        barrier.wait()
        results.append(asyncio.run(registry.ensure(Identity("sub-1", "dave", None))))

    async def in_this_process() -> None:
        await asyncio.to_thread(barrier.wait)
        results.extend(
            await asyncio.gather(*(here.ensure(Identity("sub-1", "dave", None)) for _ in range(5)))
        )

    threads = [threading.Thread(target=elsewhere, args=(r,)) for r in others]
    for t in threads:
        t.start()
    await in_this_process()
    for t in threads:
        await asyncio.to_thread(t.join)
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert {a.name for a, _ in results} == {"dave"}
    assert await here.count() == 1


async def test_concurrent_first_sights_of_one_name_get_different_names(store):
    instances = [store.open() for _ in range(4)]
    accounts = await asyncio.gather(
        *(
            r.ensure(Identity(f"sub-{i}", "erin", "erin@example.com"))
            for i, r in enumerate(instances)
        )
    )
    assert sorted(a.name for a, created in accounts if created) == [
        "erin",
        "erin-2",
        "erin-3",
        "erin-4",
    ]


async def test_sign_out_moves_the_generation_on_and_refuses_old_keys_in_every_process(
    registry, store
):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.ensure(Identity("sub-2", "bob", None))
    await registry.add_host_key("sub-1", "a" * 40)
    await registry.add_host_key("sub-2", "b" * 40)
    assert (await registry.account_for_key("a" * 40)).name == "alice"  # now cached
    other = store.open()  # another process
    assert (await other.account_for_key("a" * 40)).name == "alice"
    assert await other.sign_out("sub-1") == 1
    assert await other.account_for_key("a" * 40) is None  # at once where it was made
    store.settle()
    assert await registry.account_for_key("a" * 40) is None  # the cached answer is gone
    assert (await registry.account_for_key("b" * 40)).name == "bob"  # others untouched
    assert await registry.host_key_count("sub-1") == 0
    await registry.add_host_key("sub-1", "c" * 40, generation=1)
    assert (await other.account_for_key("c" * 40)).key_generation == 1
    assert await other.sign_out("sub-1") == 2
    with pytest.raises(KeyError):
        await other.sign_out("no-such-sub")


async def test_a_key_newer_than_a_cached_row_is_read_again_not_refused(registry, store):
    """Sign out everywhere and log in again through another node (several nodes behind a load
    balancer); the device's next request reaches this node, whose cached row still has the old
    generation. The key is newer than that row, so the row is read again: refusing it (403)
    would log out the device that has just logged in."""
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "a" * 40)
    assert (await registry.account_for_key("a" * 40)).key_generation == 0  # the row cached
    other = store.open()  # another node
    assert await other.sign_out("sub-1") == 1
    await other.add_host_key("sub-1", "c" * 40, generation=1)
    account = await registry.account_for_key("c" * 40)
    assert account is not None and account.key_generation == 1
    assert await registry.account_for_key("a" * 40) is None  # and the old key goes at once


async def test_status_changes_and_only_from_are_a_compare_and_set(registry, store):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "k" * 40)
    assert await registry.set_status("sub-1", DISABLED)  # the operator
    # A re-check that read "active" before cannot turn it into a suspension a login lifts.
    assert not await registry.set_status("sub-1", SUSPENDED, only_from="active")
    assert (await registry.get("sub-1")).status == DISABLED
    assert not await registry.set_status("no-such-sub", DISABLED)
    assert await registry.get("no-such-sub") is None  # no stub row was made
    assert await registry.set_status("sub-1", "active")
    assert (await registry.account_for_key("k" * 40)).active
    other = store.open()
    assert await other.set_status("sub-1", SUSPENDED, only_from="active")
    store.settle()
    assert await registry.account_for_key("k" * 40) is None
    assert await registry.count_by_status() == {SUSPENDED: 1}


async def test_provisioning_never_rewrites_an_existing_account(registry):
    await registry.ensure(Identity("sub-1", "alice", "alice@example.com"))
    account, created = await registry.ensure(
        Identity("sub-1", "nobody-at-all", None), refresh=False
    )
    assert not created
    assert (account.cognito_username, account.email) == ("alice", "alice@example.com")
    refreshed, _ = await registry.ensure(Identity("sub-1", "alice2", "new@example.com"))
    assert (refreshed.cognito_username, refreshed.email) == ("alice2", "new@example.com")
    kept, _ = await registry.ensure(Identity("sub-1", "alice3", None))
    assert (kept.cognito_username, kept.email) == ("alice3", "new@example.com")


async def test_others_named_finds_other_active_accounts_by_username_or_email(registry):
    await registry.ensure(Identity("sub-1", "Remy", "remy@example.com"))
    await registry.ensure(Identity("sub-2", "other", "REMY@example.com"))
    await registry.ensure(Identity("sub-3", "remy@example.com", None))
    await registry.ensure(Identity("sub-4", "nobody", "nobody@example.com"))
    await registry.set_status("sub-3", SUSPENDED)
    found = await registry.others_named("sub-1", {"remy", "remy@example.com"})
    assert [a.sub for a in found] == ["sub-2"]
    assert [a.sub for a in await registry.others_named("", {"remy"})] == ["sub-1"]
    assert await registry.others_named("sub-1", set()) == []


async def test_seen_writes_last_sync_at_most_once_a_minute(registry, store):
    # As admission calls it: with the account the key was just routed to.
    account, _ = await registry.ensure(Identity("sub-1", "alice", None))
    store.clock.now += SEEN_EVERY - 1
    await registry.seen(await registry.get("sub-1"))
    assert (await registry.get("sub-1")).last_seen == account.last_seen
    store.clock.now += 1
    await registry.seen(await registry.get("sub-1"))
    assert (await registry.get("sub-1")).last_seen == store.clock.now
    store.clock.now += 1
    await registry.seen(await registry.get("sub-1"))
    assert (await registry.get("sub-1")).last_seen == store.clock.now - 1


async def test_touch_mark_checked_and_portal_epochs(registry, store):
    await registry.ensure(Identity("sub-1", "alice", None))
    store.clock.now += 100
    await registry.touch("sub-1")
    touched = await registry.get("sub-1")
    assert touched.last_seen == touched.checked_at == store.clock.now
    await registry.mark_checked("sub-1", 5.0)
    assert (await registry.get("sub-1")).checked_at == 5.0
    await registry.end_portal_sessions("sub-1")
    await registry.end_portal_sessions("sub-1")
    assert (await registry.get("sub-1")).portal_epoch == 2
    await registry.touch("no-such-sub")
    await registry.end_portal_sessions("no-such-sub")
    assert await registry.count() == 1


async def test_a_deletion_claim_and_seen_writes_exclude_each_other(registry, store):
    """`accounts prune` claims an account unseen since a cutoff with one conditional write;
    from then on no "seen" write lands (in this or another process) and its keys wait (503);
    an account seen since the cutoff is never claimed; released, it is usable again."""
    t0 = store.clock.now
    claimed_one, _ = await registry.ensure(Identity("sub-1", "alice", None))
    await registry.ensure(Identity("sub-2", "bob", None))
    await registry.add_host_key("sub-1", "k" * 40)
    assert await registry.account_for_key("k" * 40) is not None
    store.clock.now += 100
    other = store.open()  # another gateway process
    assert await other.touch("sub-2")  # bob logs in: seen after the cutoff
    cutoff = t0 + 10
    assert await registry.claim_for_deletion("sub-2", cutoff) is None
    assert (await registry.get("sub-2")).status == ACTIVE
    claimed = await registry.claim_for_deletion("sub-1", cutoff)
    assert claimed is not None and claimed.status == DELETING and claimed.name == "alice"
    assert await registry.claim_for_deletion("sub-1", cutoff) is None  # claimed once only
    assert await registry.claim_for_deletion("no-such-sub", cutoff) is None
    store.settle()
    # No login, sync or re-check of alice writes "seen" any more, nor revives her account.
    assert not await other.touch("sub-1")
    await other.seen(await other.get("sub-1"))
    await other.mark_checked("sub-1")
    again, created = await other.ensure(Identity("sub-1", "alice-renamed", None))
    assert not created and again.status == DELETING
    store.settle()
    row = await registry.get("sub-1")
    assert (row.status, row.last_seen, row.checked_at) == (DELETING, t0, 0.0)
    with pytest.raises(AccountBeingDeleted):  # 503 until deleted: never a logout meanwhile
        await other.account_for_key("k" * 40)
    assert await registry.count_by_status() == {ACTIVE: 1, DELETING: 1}
    # Released (Cognito could not be told): usable again, and seen again.
    assert await registry.set_status("sub-1", ACTIVE, only_from=DELETING)
    assert await registry.touch("sub-1")
    assert (await registry.get("sub-1")).last_seen == store.clock.now
    assert (await registry.account_for_key("k" * 40)).active
    # Deleted: the key is unknown (403), no longer waiting.
    assert await registry.claim_for_deletion("sub-1", store.clock.now + 1) is not None
    await registry.delete("sub-1")
    assert await registry.account_for_key("k" * 40) is None


async def test_of_a_concurrent_claim_and_login_exactly_one_wins(store):
    """The prune (this process) and a login's `touch` (another process, its own thread) at
    once, on accounts unseen since the cutoff: each account ends claimed with no login
    written, or seen with no claim; never both, never neither."""
    here, there = store.open(), store.open()
    subs = [f"sub-{i}" for i in range(6)]
    for sub in subs:
        await here.ensure(Identity(sub, f"user{sub[-1]}", None))
    cutoff = store.clock.now + 1
    store.clock.now += 100
    barrier = threading.Barrier(2)
    touched: dict[str, bool] = {}

    def logins() -> None:
        async def run() -> None:
            for sub in subs:
                await asyncio.to_thread(barrier.wait)
                touched[sub] = await there.touch(sub)

        asyncio.run(run())

    thread = threading.Thread(target=logins)
    thread.start()
    claimed: dict[str, bool] = {}
    for sub in subs:
        await asyncio.to_thread(barrier.wait)
        claimed[sub] = await here.claim_for_deletion(sub, cutoff) is not None
    await asyncio.to_thread(thread.join)
    store.settle()
    for sub in subs:
        assert touched[sub] != claimed[sub], sub
        row = await here.get(sub)
        assert row.status == (DELETING if claimed[sub] else ACTIVE)
        assert (row.last_seen > cutoff) == touched[sub]


async def test_quota_overrides_are_set_kept_per_field_and_seen_by_another_process(registry, store):
    await registry.ensure(Identity("sub-1", "alice", None))
    fresh = await registry.get("sub-1")
    assert (fresh.quota_media_megs, fresh.quota_collection_megs) == (None, None)
    assert await registry.set_quota("sub-1", {"quota_media_megs": 5, "quota_collection_megs": 0})
    assert await registry.set_quota("sub-1", {"quota_media_file_megs": 2})
    account = await registry.get("sub-1")
    assert (
        account.quota_collection_upload_megs,
        account.quota_collection_megs,
        account.quota_media_megs,
        account.quota_media_file_megs,
    ) == (None, 0, 5, 2)
    # Back to the default for one field; the others stay.
    assert await registry.set_quota("sub-1", {"quota_media_megs": None})
    other = store.open()
    store.settle()
    seen = await other.get_by_name(account.name)
    assert (seen.quota_collection_megs, seen.quota_media_megs, seen.quota_media_file_megs) == (
        0,
        None,
        2,
    )
    assert not await registry.set_quota("no-such-sub", {"quota_media_megs": 1})
    assert await registry.get("no-such-sub") is None
    for bad in ({"quota_media_megs": -1}, {"quota_media_megs": 1.5}, {"status": 1}):
        with pytest.raises(ValueError):
            await registry.set_quota("sub-1", bad)


async def test_delete_removes_the_account_its_name_claim_and_its_keys(registry, store):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.ensure(Identity("sub-2", "bob", None))
    await registry.add_host_key("sub-1", "k" * 40)
    other = store.open()
    assert (await other.account_for_key("k" * 40)).name == "alice"
    removed = await registry.delete("sub-1")
    assert removed.name == "alice"
    assert await registry.delete("sub-1") is None
    assert await registry.account_for_key("k" * 40) is None
    store.settle()
    assert await other.account_for_key("k" * 40) is None
    assert await registry.get_by_name("alice") is None
    assert await registry.host_key_count("sub-1") == 0
    assert [a.name for a in await registry.all()] == ["bob"]
    again, created = await registry.ensure(Identity("sub-1", "alice", None))
    assert created


async def test_count_by_status_and_all(registry):
    for i, name in enumerate(["carl", "anna", "bert"]):
        await registry.ensure(Identity(f"sub-{i}", name, None))
    await registry.set_status("sub-1", DISABLED)
    assert await registry.count_by_status() == {"active": 2, DISABLED: 1}
    assert [a.name for a in await registry.all()] == ["anna", "bert", "carl"]
    assert await registry.count() == 3
    assert await registry.writable()


# -- SQLite only -------------------------------------------------------------------------------


async def test_a_registry_from_before_key_generations_is_upgraded_in_place(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "registry.sqlite3")
    db.executescript(
        """
        CREATE TABLE accounts (sub TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            cognito_username TEXT NOT NULL, email TEXT, status TEXT NOT NULL DEFAULT 'active',
            created_at REAL NOT NULL, last_seen REAL NOT NULL, checked_at REAL NOT NULL DEFAULT 0);
        CREATE TABLE host_keys (key_sha256 TEXT PRIMARY KEY,
            sub TEXT NOT NULL REFERENCES accounts(sub), created_at REAL NOT NULL);
        INSERT INTO accounts VALUES ('sub-1', 'alice', 'alice', NULL, 'active', 1, 1, 0);
        """
    )
    db.execute("INSERT INTO host_keys VALUES (?, 'sub-1', 1)", (key_digest("k" * 40),))
    db.commit()
    db.close()
    reg = SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections")
    account = await reg.account_for_key("k" * 40)  # keys issued before the upgrade still work
    assert (account.name, account.key_generation) == ("alice", 0)
    assert await reg.sign_out("sub-1") == 1 and await reg.account_for_key("k" * 40) is None
    await reg.close()


async def test_sqlite_admission_sees_every_change_of_an_account_row_at_the_next_request(
    tmp_path: Path,
):
    """Admission keeps account rows between changes of the file (issue 18: one row read per
    request): a change made by another process's connection, by this one, or by a plain
    SQLite client counts at the next request all the same."""
    path, folders = tmp_path / "registry.sqlite3", tmp_path / "collections"
    here, other = SqliteRegistry(path, folders), SqliteRegistry(path, folders)
    await here.ensure(Identity("sub-1", "alice", None))
    await here.add_host_key("sub-1", "a" * 40)
    assert (await here.account_for_key("a" * 40)).status == "active"
    assert (await here.account_for_key("a" * 40)).status == "active"  # kept: no change
    assert await other.set_status("sub-1", "disabled")  # another process
    assert await here.account_for_key("a" * 40) is None
    assert await here.set_status("sub-1", "active")  # this connection
    assert (await here.account_for_key("a" * 40)).status == "active"
    assert await other.set_quota("sub-1", {"quota_media_megs": 7})
    assert (await here.account_for_key("a" * 40)).quota_media_megs == 7
    plain = sqlite3.connect(path)  # outside the gateway (an operator's sqlite3 shell)
    plain.execute("UPDATE accounts SET status = 'disabled' WHERE sub = 'sub-1'")
    plain.commit()
    plain.close()
    assert await here.account_for_key("a" * 40) is None
    await here.close()
    await other.close()


# -- DynamoDB only -----------------------------------------------------------------------------


@pytest.fixture
async def dynamo(tmp_path: Path) -> Any:
    with mock_aws():
        made = DynamoStore(tmp_path)
        yield made
        for registry in made.opened:
            await registry.close()


async def test_create_table_is_idempotent_and_leaves_other_items_alone(dynamo):
    dynamo.client.put_item(TableName=TABLE, Item={"pk": {"S": "node#a"}, "url": {"S": "u"}})
    create_table(dynamo.client, TABLE)
    table = dynamo.client.describe_table(TableName=TABLE)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert dynamo.client.get_item(TableName=TABLE, Key={"pk": {"S": "node#a"}})["Item"]


async def test_the_cluster_codes_items_are_never_returned_or_changed(dynamo):
    registry = dynamo.open()
    await registry.ensure(Identity("sub-1", "alice", None))
    for pk in ("node#n1", "owner#alice"):
        dynamo.client.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "status": {"S": "x"}})
    # Another team's attribute on an account item survives this code's updates.
    dynamo.client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "account#sub-1"}},
        UpdateExpression="SET owner_node = :n",
        ExpressionAttributeValues={":n": {"S": "n1"}},
    )
    await registry.ensure(Identity("sub-1", "alice2", "a@example.com"))
    await registry.touch("sub-1")
    await registry.set_status("sub-1", DISABLED)
    await registry.sign_out("sub-1")
    assert [a.name for a in await registry.all()] == ["alice"]
    assert await registry.count() == 1 and await registry.count_by_status() == {DISABLED: 1}
    item = dynamo.client.get_item(TableName=TABLE, Key={"pk": {"S": "account#sub-1"}})["Item"]
    assert item["owner_node"] == {"S": "n1"}
    await registry.delete("sub-1")
    left = sorted(i["pk"]["S"] for i in dynamo.client.scan(TableName=TABLE)["Items"])
    assert left == ["name#alice", "node#n1", "owner#alice"]  # the name stays retired


def _counter(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class Failing:
    """A client that fails every call with `error` once `failing` is set (moto cannot throttle
    or go away on demand); otherwise the real (moto) client."""

    def __init__(self, client: Any, error: Callable[[str], Exception]) -> None:
        self._client = client
        self._error = error
        self.failing = False
        #: The operations called, failed or not.
        self.attempts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(name)
            if self.failing:
                raise self._error(name)
            return method(*args, **kwargs)

        return call


def _throttled(operation: str) -> Exception:
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        operation,
    )


def _unreachable(operation: str) -> Exception:
    return EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("error", "kind"), [(_throttled, "throttled"), (_unreachable, "unavailable")]
)
async def test_while_dynamodb_fails_known_devices_are_served_from_memory_and_the_rest_is_503(
    dynamo, error, kind
):
    client = Failing(dynamo.client, error)
    registry = DynamoRegistry(
        client,
        TABLE,
        dynamo.collections,
        cache_seconds=CACHE_SECONDS,
        stale_seconds=900,
        clock=dynamo.clock,
        monotonic=dynamo.monotonic,
    )
    alice, _ = await registry.ensure(Identity("sub-1", "alice", None))
    await registry.ensure(Identity("sub-2", "bob", None))
    await registry.add_host_key("sub-1", "a" * 40)
    await registry.add_host_key("sub-2", "b" * 40)
    assert await registry.account_for_key("a" * 40)  # served once: alice is known here
    errors, stale = (
        _counter("gateway_registry_errors_total", kind=kind),
        _counter("gateway_registry_stale_answers_total"),
    )
    client.failing = True
    dynamo.settle()  # past cache_seconds: the row must be read again, and cannot be
    assert (await registry.account_for_key("a" * 40)).name == "alice"
    await registry.seen(alice)  # "last sync" is skipped, the request is not failed
    dynamo.monotonic.now += 800  # still inside stale_seconds
    assert (await registry.account_for_key("a" * 40)).name == "alice"
    for call in (
        registry.account_for_key("c" * 40),  # an unknown key: never guessed at
        registry.ensure(Identity("sub-3", "carol", None)),
        registry.get("sub-2"),
        registry.sign_out("sub-1"),
        registry.add_host_key("sub-1", "d" * 40),
    ):
        with pytest.raises(RegistryUnavailable) as caught:
            await call
        assert caught.value.status == 503
    assert not await registry.writable()
    dynamo.monotonic.now += 101  # past stale_seconds
    with pytest.raises(RegistryUnavailable):
        await registry.account_for_key("a" * 40)
    assert _counter("gateway_registry_errors_total", kind=kind) > errors
    assert _counter("gateway_registry_stale_answers_total") == stale + 2
    client.failing = False
    assert (await registry.account_for_key("a" * 40)).name == "alice"
    assert (await registry.account_for_key("b" * 40)).name == "bob"
    await registry.close()


async def test_a_missing_table_is_a_503_logged_as_misconfigured(dynamo, caplog):
    registry = DynamoRegistry(dynamo.client, "no-such-table", dynamo.collections)
    with pytest.raises(RegistryUnavailable):
        await registry.ensure(Identity("sub-1", "alice", None))
    assert not await registry.writable()
    record = next(r for r in caplog.records if r.name == "gateway.registry")
    assert record.levelname == "ERROR" and "misconfigured" in record.getMessage()
    await registry.close()


async def test_calls_do_not_block_the_event_loop(dynamo):
    registry = DynamoRegistry(_SlowClient(dynamo.client, 0.3), TABLE, dynamo.collections)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.get_running_loop().create_task(tick())
    await registry.get("sub-1")
    ticker.cancel()
    assert ticks >= 10  # the loop kept running during the 0.3 s call
    await registry.close()


class _SlowClient:
    def __init__(self, client: Any, seconds: float) -> None:
        self._client, self._seconds = client, seconds

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._seconds)
            return method(*args, **kwargs)

        return call


async def test_one_account_per_sub_even_when_nodes_would_pick_different_names(dynamo, tmp_path):
    # Node A has a leftover folder "dave" (so it claims "dave-2"), node B has not: the account
    # item's own condition keeps them to one account.
    (tmp_path / "a" / "dave").mkdir(parents=True)
    nodes = [
        DynamoRegistry(dynamo.client, TABLE, tmp_path / name, clock=dynamo.clock)
        for name in ("a", "b")
    ]
    results = await asyncio.gather(*(n.ensure(Identity("sub-1", "dave", None)) for n in nodes))
    assert sorted(created for _, created in results) == [False, True]
    assert results[0][0] == results[1][0]
    names = [i["pk"]["S"] for i in dynamo.client.scan(TableName=TABLE)["Items"]]
    assert sorted(names) == ["account#sub-1", f"name#{results[0][0].name}"]
    for node in nodes:
        await node.close()


async def test_delete_still_works_when_the_name_claim_is_missing(dynamo):
    registry = dynamo.open()
    await registry.ensure(Identity("sub-1", "alice", None))
    dynamo.client.delete_item(TableName=TABLE, Key={"pk": {"S": "name#alice"}})
    assert (await registry.delete("sub-1")).name == "alice"
    assert await registry.get("sub-1") is None


async def test_a_deleted_accounts_name_is_never_given_to_another_sub(registry, store, tmp_path):
    # A worker's password (so the host key the stock server answers) derives from the account
    # name and key generation alone: a new account under a freed name would get the very key
    # the deleted account's devices still hold, and they would sync into it.
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "k" * 40)
    await registry.delete("sub-1")
    shutil.rmtree(tmp_path / "collections" / "alice", ignore_errors=True)  # as the portal does
    other = store.open()  # another process or node
    store.settle()
    for reg in (registry, other):
        assert await reg.get_by_name("alice") is None
    newcomer, created = await other.ensure(Identity("sub-2", "alice", None))
    assert created and newcomer.name == "alice-2"
    again, created = await registry.ensure(Identity("sub-1", "alice", None))
    assert created and again.name == "alice-3"  # the same sub too: its old key is not revived


async def test_while_dynamodb_fails_last_sync_is_not_retried_on_every_request(dynamo):
    # Each failed call already costs botocore's retries; one more UpdateItem per request of
    # every known device would hammer a throttled table and slow every request down.
    client = Failing(dynamo.client, _throttled)
    registry = DynamoRegistry(
        client, TABLE, dynamo.collections, clock=dynamo.clock, monotonic=dynamo.monotonic
    )
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "a" * 40)
    client.failing = True
    dynamo.clock.now += SEEN_EVERY
    for _ in range(5):  # requests of a known device, 1 s apart, past cache_seconds
        dynamo.clock.now += 1
        dynamo.monotonic.now += 1
        account = await registry.account_for_key("a" * 40)
        await registry.seen(account)
    assert client.attempts.count("update_item") == 1
    client.failing = False
    dynamo.clock.now += SEEN_EVERY
    dynamo.monotonic.now += SEEN_EVERY
    await registry.seen(await registry.account_for_key("a" * 40))
    assert (await registry.get("sub-1")).last_seen == dynamo.clock.now  # written once it works
    await registry.close()


async def test_an_account_item_without_its_attributes_is_a_503_not_an_endless_loop(dynamo):
    # Another part of the gateway updating `account#<sub>` just as the account is deleted
    # leaves an item with only its own attribute: the account condition fails for every name.
    registry = dynamo.open()
    dynamo.client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "account#sub-1"}},
        UpdateExpression="SET owner_node = :n",
        ExpressionAttributeValues={":n": {"S": "n1"}},
    )
    with pytest.raises(RegistryUnavailable):
        await asyncio.wait_for(registry.ensure(Identity("sub-1", "alice", None)), 10)
    assert sorted(i["pk"]["S"] for i in dynamo.client.scan(TableName=TABLE)["Items"]) == [
        "account#sub-1"
    ]


async def test_a_deleted_accounts_keys_never_open_the_same_subs_next_account(registry, store):
    # portal.delete_cognito_user "keep": the same sub signs in again and gets a new account
    # (generation 0 again). Another process that answered the old key must not route it there.
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "k" * 40)
    other = store.open()
    assert (await other.account_for_key("k" * 40)).name == "alice"
    await registry.delete("sub-1")
    again, created = await registry.ensure(Identity("sub-1", "alice", None))
    assert created and again.key_generation == 0
    store.settle()
    assert await other.account_for_key("k" * 40) is None
    assert await registry.account_for_key("k" * 40) is None


async def test_a_key_item_left_after_a_deletion_never_opens_the_subs_next_account(dynamo):
    # The key items go after the account (housekeeping that may fail: "refused anyway").
    registry = dynamo.open()
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "k" * 40)
    pk = {"pk": {"S": "key#" + key_digest("k" * 40)}}
    left = dynamo.client.get_item(TableName=TABLE, Key=pk)["Item"]
    await registry.delete("sub-1")
    dynamo.client.put_item(TableName=TABLE, Item=left)  # as if its removal had failed
    await registry.ensure(Identity("sub-1", "alice", None))
    assert await dynamo.open().account_for_key("k" * 40) is None


# -- nonces of signed requests (provisioning, moves) ------------------------------------------


async def test_a_nonce_is_spent_once_for_every_process_and_after_a_restart(store):
    one, two = store.open(), store.open()
    until = store.clock.now + 600
    assert await one.spend_nonce("n" * 64, until) is True
    assert await two.spend_nonce("n" * 64, until) is False  # another process
    await one.close()
    store.opened.remove(one)
    assert await store.open().spend_nonce("n" * 64, until) is False  # a restart
    assert await two.spend_nonce("m" * 64, until) is True


async def test_nonces_do_not_accumulate(store):
    """Issue 21: SQLite drops expired nonces as it spends a new one; a DynamoDB nonce item
    carries the table's TTL attribute (whole seconds, not before `until`), and the table
    has TTL enabled on it, so DynamoDB deletes it on its own."""
    registry = store.open()
    until = store.clock.now + 10.5
    assert await registry.spend_nonce("n" * 64, until)
    store.clock.now += 11
    assert await registry.spend_nonce("m" * 64, store.clock.now + 10)
    if isinstance(store, SqliteStore):
        db = sqlite3.connect(store.path)
        try:
            kept = [row[0] for row in db.execute("SELECT nonce FROM nonces")]
        finally:
            db.close()
        assert kept == ["m" * 64]
        return
    assert isinstance(store, DynamoStore)
    item = store.client.get_item(TableName=TABLE, Key={"pk": {"S": "nonce#" + "n" * 64}})["Item"]
    assert int(item[dynamo_mod.TTL_ATTRIBUTE]["N"]) == math.ceil(until)
    ttl = store.client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == dynamo_mod.TTL_ATTRIBUTE


async def test_an_expired_nonce_is_forgotten(store):
    registry = store.open()
    assert await registry.spend_nonce("n" * 64, store.clock.now + 10)
    store.clock.now += 11
    assert await registry.spend_nonce("n" * 64, store.clock.now + 10)
    assert not await registry.spend_nonce("n" * 64, store.clock.now + 10)
