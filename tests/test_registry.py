import asyncio
import threading

import pytest

from gateway.auth.identity import Identity
from gateway.registry import DISABLED, SqliteRegistry


@pytest.fixture
async def registry(tmp_path):
    reg = SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections")
    yield reg
    await reg.close()


async def test_first_sight_creates_row_and_folder_once(registry, tmp_path):
    ident = Identity("sub-1", "alice", "alice@example.com")
    account, created = await registry.ensure(ident)
    assert created and account.name == "alice"
    assert (tmp_path / "collections" / "alice").is_dir()
    again, created_again = await registry.ensure(ident)
    assert not created_again and again.name == "alice"
    assert await registry.count() == 1


async def test_name_collisions_get_a_suffix(registry, tmp_path):
    a, _ = await registry.ensure(Identity("sub-1", "u1", "bob@one.example"))
    b, _ = await registry.ensure(Identity("sub-2", "u2", "bob@two.example"))
    assert (a.name, b.name) == ("bob", "bob-2")


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


async def test_traversal_in_identity_stays_inside_collections(registry, tmp_path):
    for i, evil in enumerate(["../../etc", "a/../../b", "/abs", "..", "\x00", "x" * 500]):
        account, _ = await registry.ensure(Identity(f"sub-{i}", evil, None))
        folder = registry.folder(account)
        assert folder.parent == (tmp_path / "collections").resolve()
    assert sorted(p.name for p in (tmp_path / "collections").iterdir()) == sorted(
        [(await registry.get(f"sub-{i}")).name for i in range(6)]
    )


async def test_host_keys_route_to_active_accounts_only(registry):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.add_host_key("sub-1", "k" * 40)
    assert (await registry.account_for_key("k" * 40)).sub == "sub-1"
    assert await registry.account_for_key("x" * 40) is None
    await registry.set_status("sub-1", DISABLED)
    assert await registry.account_for_key("k" * 40) is None


async def test_registry_survives_reopen_and_stores_only_key_digests(tmp_path):
    reg = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c")
    await reg.ensure(Identity("sub-1", "alice", None))
    await reg.add_host_key("sub-1", "secretkey" * 4)
    await reg.close()
    assert b"secretkey" not in (tmp_path / "r.sqlite3").read_bytes()
    reopened = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c")
    assert (await reopened.account_for_key("secretkey" * 4)).name == "alice"
    await reopened.close()


async def test_two_registries_on_one_folder_create_one_account(tmp_path):
    # Two gateway processes sharing a data folder: simulated by two connections and threads.
    regs = [SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c") for _ in range(2)]
    results = []
    barrier = threading.Barrier(2)

    def go(reg):
        barrier.wait()
        results.append(asyncio.run(reg.ensure(Identity("sub-1", "dave", None))))

    threads = [threading.Thread(target=go, args=(r,)) for r in regs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created for _, created in results) == [False, True]
    assert {a.name for a, _ in results} == {"dave"}
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["dave"]
    for r in regs:
        await r.close()


async def test_sign_out_moves_the_generation_on_and_refuses_old_keys_in_every_process(
    registry, tmp_path
):
    await registry.ensure(Identity("sub-1", "alice", None))
    await registry.ensure(Identity("sub-2", "bob", None))
    await registry.add_host_key("sub-1", "a" * 40)
    await registry.add_host_key("sub-2", "b" * 40)
    assert (await registry.account_for_key("a" * 40)).name == "alice"  # now in the key cache
    other = SqliteRegistry(
        tmp_path / "registry.sqlite3", tmp_path / "collections"
    )  # another process
    assert (await other.account_for_key("a" * 40)).name == "alice"
    assert await other.sign_out("sub-1") == 1
    assert await registry.account_for_key("a" * 40) is None  # the cached answer does not outlive it
    assert (await registry.account_for_key("b" * 40)).name == "bob"  # other accounts untouched
    assert await registry.host_key_count("sub-1") == 0
    await registry.add_host_key("sub-1", "c" * 40, generation=1)
    assert (await other.account_for_key("c" * 40)).key_generation == 1
    assert await other.sign_out("sub-1") == 2
    with pytest.raises(KeyError):
        await other.sign_out("no-such-sub")
    await other.close()


async def test_provisioning_never_rewrites_an_existing_account(registry):
    await registry.ensure(Identity("sub-1", "alice", "alice@example.com"))
    account, created = await registry.ensure(
        Identity("sub-1", "nobody-at-all", None), refresh=False
    )
    assert not created
    assert (account.cognito_username, account.email) == ("alice", "alice@example.com")
    refreshed, _ = await registry.ensure(Identity("sub-1", "alice2", "new@example.com"))
    assert (refreshed.cognito_username, refreshed.email) == ("alice2", "new@example.com")


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
    from gateway.registry import key_digest

    db.execute("INSERT INTO host_keys VALUES (?, 'sub-1', 1)", (key_digest("k" * 40),))
    db.commit()
    db.close()
    reg = SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections")
    account = await reg.account_for_key("k" * 40)  # keys issued before the upgrade still work
    assert (account.name, account.key_generation) == ("alice", 0)
    assert await reg.sign_out("sub-1") == 1 and await reg.account_for_key("k" * 40) is None
    await reg.close()
