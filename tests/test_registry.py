import threading

import pytest

from gateway.auth.identity import Identity
from gateway.registry import DISABLED, Registry


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "registry.sqlite3", tmp_path / "collections")
    yield reg
    reg.close()


def test_first_sight_creates_row_and_folder_once(registry, tmp_path):
    ident = Identity("sub-1", "alice", "alice@example.com")
    account, created = registry.ensure(ident)
    assert created and account.name == "alice"
    assert (tmp_path / "collections" / "alice").is_dir()
    again, created_again = registry.ensure(ident)
    assert not created_again and again.name == "alice"
    assert registry.count() == 1


def test_name_collisions_get_a_suffix(registry, tmp_path):
    a, _ = registry.ensure(Identity("sub-1", "u1", "bob@one.example"))
    b, _ = registry.ensure(Identity("sub-2", "u2", "bob@two.example"))
    assert (a.name, b.name) == ("bob", "bob-2")


def test_a_leftover_folder_is_never_adopted(registry, tmp_path):
    (tmp_path / "collections" / "carol").mkdir(parents=True)
    (tmp_path / "collections" / "carol" / "collection.anki2").write_bytes(b"someone else's")
    account, _ = registry.ensure(Identity("sub-3", "carol", None))
    assert account.name == "carol-2"


def test_name_is_permanent_when_email_changes(registry):
    registry.ensure(Identity("sub-1", "u1", "old@example.com"))
    account, created = registry.ensure(Identity("sub-1", "u1", "new@example.com"))
    assert not created
    assert account.name == "old" and account.email == "new@example.com"


def test_traversal_in_identity_stays_inside_collections(registry, tmp_path):
    for i, evil in enumerate(["../../etc", "a/../../b", "/abs", "..", "\x00", "x" * 500]):
        account, _ = registry.ensure(Identity(f"sub-{i}", evil, None))
        folder = registry.folder(account)
        assert folder.parent == (tmp_path / "collections").resolve()
    assert sorted(p.name for p in (tmp_path / "collections").iterdir()) == sorted(
        registry.get(f"sub-{i}").name for i in range(6)
    )


def test_host_keys_route_to_active_accounts_only(registry):
    registry.ensure(Identity("sub-1", "alice", None))
    registry.add_host_key("sub-1", "k" * 40)
    assert registry.account_for_key("k" * 40).sub == "sub-1"
    assert registry.account_for_key("x" * 40) is None
    registry.set_status("sub-1", DISABLED)
    assert registry.account_for_key("k" * 40) is None


def test_registry_survives_reopen_and_stores_only_key_digests(tmp_path):
    reg = Registry(tmp_path / "r.sqlite3", tmp_path / "c")
    reg.ensure(Identity("sub-1", "alice", None))
    reg.add_host_key("sub-1", "secretkey" * 4)
    reg.close()
    assert b"secretkey" not in (tmp_path / "r.sqlite3").read_bytes()
    reopened = Registry(tmp_path / "r.sqlite3", tmp_path / "c")
    assert reopened.account_for_key("secretkey" * 4).name == "alice"
    reopened.close()


def test_two_registries_on_one_folder_create_one_account(tmp_path):
    # Two gateway processes sharing a data folder: simulated by two connections and threads.
    regs = [Registry(tmp_path / "r.sqlite3", tmp_path / "c") for _ in range(2)]
    results = []
    barrier = threading.Barrier(2)

    def go(reg):
        barrier.wait()
        results.append(reg.ensure(Identity("sub-1", "dave", None)))

    threads = [threading.Thread(target=go, args=(r,)) for r in regs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created for _, created in results) == [False, True]
    assert {a.name for a, _ in results} == {"dave"}
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["dave"]
    for r in regs:
        r.close()
