"""End to end: an earlier server's folders → `accounts import` → the real client through the
gateway and the stock sync server. moto is Cognito."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from anki.collection import Collection

from gateway.__main__ import main as cli
from gateway.identity.cognito import CognitoProvider
from gateway.importer import run
from gateway.importer.folder import MARKER
from gateway.registry import SqliteRegistry
from gateway.workers.lock import try_lock
from tests import test_dynamo_e2e
from tests.ankiclient import Client, Required

PASSWORD = "Correct-Horse-9"
dynamodb_server = test_dynamo_e2e.dynamodb_server  # the fixture: moto's server on loopback


def old_folder(collections: Path, name: str, notes: list[str], media: dict[str, bytes]) -> Path:
    """A folder as the Cognito-patched ankisyncd left it: `collection.anki2` in the legacy
    schema 11 its Anki 2.1 library wrote (made here by the current library's downgrade),
    `collection.media/` and ankisyncd's own media index `collection.media.server.db`."""
    folder = collections / name
    folder.mkdir(parents=True)
    col = Collection(str(folder / "collection.anki2"))
    for text in notes:
        note = col.new_note(col.models.by_name("Basic"))
        note["Front"], note["Back"] = text, "back"
        col.add_note(note, col.decks.id("Default"))
    for file_name, data in media.items():
        stored = col.media.write_data(file_name, data)
        assert stored == file_name
        note = col.new_note(col.models.by_name("Basic"))
        note["Front"], note["Back"] = f'media <img src="{stored}">', "back"
        col.add_note(note, col.decks.id("Default"))
    col.close(downgrade=True)
    db = sqlite3.connect(folder / "collection.anki2")
    assert db.execute("SELECT ver FROM col").fetchone()[0] == 11  # the legacy format
    db.close()
    old_index = sqlite3.connect(folder / "collection.media.server.db")
    old_index.executescript(
        "CREATE TABLE media (fname TEXT NOT NULL PRIMARY KEY, usn INT NOT NULL, csum TEXT);"
        "CREATE TABLE meta (dirMod INT, lastUsn INT); INSERT INTO meta VALUES (0, 7);"
    )
    old_index.close()
    return folder


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def synced_device(tmp_path: Path, url: str, username: str) -> Client:
    """A fresh device, logged in as `username` and synced once."""
    device = Client(tmp_path / f"device-{username}")
    device.login(username, PASSWORD, url)
    device.sync()
    return device


def run_import(config, directory: Path, *, dry_run: bool = False) -> tuple[int, list[str]]:
    lines: list[str] = []

    async def go() -> int:
        provider = CognitoProvider(config.cognito)
        try:
            return await run(directory, config, provider, dry_run=dry_run, out=lines.append)
        finally:
            await provider.close()

    return asyncio.run(go()), lines


def test_old_folders_import_once_and_sync_every_note_and_media_file(
    cognito, tmp_path, start_gateway
):
    cognito.add_user("alice", PASSWORD, "alice@example.com")
    cognito.add_user("bob", PASSWORD, "bob@example.com")
    old = tmp_path / "old" / "collections"
    media = {"tree.jpg": os.urandom(3000), "straße.mp3": os.urandom(70_000)}
    old_folder(old, "alice", ["a1", "a2", "a3"], media)  # named after the username
    old_folder(old, "bob@example.com", ["b1"], {})  # named after the verified email
    config = cognito.config(tmp_path / "data")

    before = snapshot(old)
    code, plan = run_import(config, old, dry_run=True)
    assert code == 0, plan
    assert snapshot(old) == before
    assert not (tmp_path / "data").exists()  # a dry run creates nothing
    assert any(line.startswith("  alice → new account alice") for line in plan), plan
    assert any("bob@example.com → new account bob" in line for line in plan), plan

    code, report = run_import(config, old)
    assert code == 0, report
    assert any("2 media files" in line and "schema 11" in line for line in report), report
    assert (old / "alice" / MARKER).is_file()

    gw = start_gateway(config)
    device = Client(tmp_path / "device-alice")
    device.login("alice", PASSWORD, gw.url)
    assert device.sync() in (Required.FULL_DOWNLOAD, Required.FULL_SYNC)
    assert device.note_fronts() >= {"a1", "a2", "a3"}
    assert device.col.note_count() == 3 + len(media)
    for name, data in media.items():
        assert device.media_bytes(name) == data
    # The stock server upgraded the collection it was given.
    served = sqlite3.connect(config.collections_dir / "alice" / "collection.anki2")
    assert served.execute("SELECT ver FROM col").fetchone()[0] > 11
    served.close()
    # And it keeps syncing normally.
    device.add_note("after the move")
    device.sync()
    other = Client(tmp_path / "device-alice-2")
    other.login("alice", PASSWORD, gw.url)
    other.sync()
    assert "after the move" in other.note_fronts()

    bob = Client(tmp_path / "device-bob")
    bob.login("bob", PASSWORD, gw.url)
    bob.sync()
    assert bob.note_fronts() == {"b1"}
    for c in (device, other, bob):
        c.close()
    gw.stop()

    # A second run imports nothing again and says so.
    served_before = snapshot(config.collections_dir)
    code, again = run_import(config, old)
    assert code == 0, again
    assert sum("already imported" in line for line in again) == 2, again
    assert snapshot(config.collections_dir) == served_before


def test_a_copy_of_an_imported_folder_never_overwrites_the_account(cognito, tmp_path):
    cognito.add_user("alice", PASSWORD, "alice@example.com")
    config = cognito.config(tmp_path / "data")
    old_folder(tmp_path / "first", "alice", ["original"], {"a.png": b"first image"})
    assert run_import(config, tmp_path / "first")[0] == 0
    account = config.collections_dir / "alice"
    kept = (account / "collection.anki2").read_bytes()

    # The same user's folder again (say, from an older copy of the old server's disk).
    old_folder(tmp_path / "second", "alice", ["stale"], {"a.png": b"other image"})
    code, report = run_import(config, tmp_path / "second")
    assert code == 1
    assert any("NOT IMPORTED into alice: the account already has a collection" in r for r in report)
    assert (account / "collection.anki2").read_bytes() == kept
    assert (account / "media" / "a.png").read_bytes() == b"first image"
    assert (tmp_path / "second" / "alice" / "collection.anki2").exists()  # left where it was


def test_an_account_whose_sync_server_runs_is_refused_and_left_alone(cognito, tmp_path):
    sub = cognito.add_user("alice", PASSWORD, "alice@example.com")
    config = cognito.config(tmp_path / "data")
    from gateway.identity.provider import Identity

    async def provision() -> None:
        registry = SqliteRegistry(config.data_dir / "registry.sqlite3", config.collections_dir)
        await registry.ensure(Identity(sub=sub, username="alice", email="alice@example.com"))
        await registry.close()

    asyncio.run(provision())
    old_folder(tmp_path / "old", "alice", ["n"], {})
    held = try_lock(config.collections_dir, "alice")  # what a running worker holds
    assert held is not None
    try:
        code, report = run_import(config, tmp_path / "old")
    finally:
        held.release()
    assert code == 1
    assert any("its sync server is running" in line for line in report), report
    assert not (config.collections_dir / "alice" / "collection.anki2").exists()
    assert (tmp_path / "old" / "alice" / "collection.anki2").exists()
    # Once it is idle, the import goes through.
    assert run_import(config, tmp_path / "old")[0] == 0
    assert (config.collections_dir / "alice" / "collection.anki2").exists()


def test_the_command_line_runs_the_import(cognito, tmp_path, monkeypatch, capsys):
    cognito.add_user("carol", PASSWORD, "carol@example.com")
    config = cognito.config(tmp_path / "data")
    old_folder(tmp_path / "old", "carol", ["c"], {})
    for key, value in {
        "GATEWAY_DATA_DIR": str(config.data_dir),
        "GATEWAY_COGNITO_USER_POOL_ID": cognito.pool_id,
        "GATEWAY_COGNITO_CLIENT_ID": cognito.client_id,
        "GATEWAY_COGNITO_REGION": config.cognito.region or "eu-west-1",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli(["accounts", "import", str(tmp_path / "old"), "--dry-run"]) == 0
    assert "carol → new account carol" in capsys.readouterr().out
    assert cli(["accounts", "import", str(tmp_path / "old")]) == 0
    assert (config.collections_dir / "carol" / "collection.anki2").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of another owner")
def test_files_of_another_owner_are_copied_so_the_sync_server_can_write_them(cognito, tmp_path):
    cognito.add_user("olga", PASSWORD, "olga@example.com")
    config = cognito.config(tmp_path / "data")
    folder = old_folder(tmp_path / "old", "olga", ["n"], {"a.png": b"image"})
    for path in (folder / "collection.anki2", folder / "collection.media" / "a.png"):
        os.chown(path, 4321, 4321)  # the old server's user
        os.chmod(path, 0o600)
    code, report = run_import(config, tmp_path / "old")
    assert code == 0, report
    account = config.collections_dir / "olga"
    for path in (account / "collection.anki2", account / "media" / "a.png"):
        assert path.stat().st_uid == os.geteuid()
    assert (account / "media" / "a.png").read_bytes() == b"image"
    assert not (folder / "collection.anki2").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the refusal to run as root")
def test_root_is_refused_when_the_gateway_user_owns_the_data_folder(cognito, tmp_path, capsys):
    from gateway.importer import main as import_main

    config = cognito.config(tmp_path / "data")
    config.data_dir.mkdir()
    os.chown(config.data_dir, 10001, 10001)
    old_folder(tmp_path / "old", "x", ["n"], {})
    assert import_main([str(tmp_path / "old")], config) == 2
    assert "not as root" in capsys.readouterr().out
    assert not (config.data_dir / "registry.sqlite3").exists()


def test_an_import_cut_off_half_way_completes_when_run_again(cognito, tmp_path, monkeypatch):
    import importlib

    # (`gateway.importer.move` the attribute is the function; the module is this.)
    move_mod = importlib.import_module("gateway.importer.move")

    cognito.add_user("pia", PASSWORD, "pia@example.com")
    config = cognito.config(tmp_path / "data")
    media = {"one.png": b"1" * 10, "two.png": b"2" * 20}
    old_folder(tmp_path / "old", "pia", ["n1", "n2"], media)

    def power_cut(*args: object) -> None:
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:  # collection and media moved, then the machine stops
        patch.setattr(move_mod.mediadb, "write", power_cut)
        with pytest.raises(RuntimeError):
            run_import(config, tmp_path / "old")
    account = config.collections_dir / "pia"
    assert sorted(p.name for p in (account / "media").iterdir()) == sorted(media)
    assert (account / "collection.anki2").exists() and not (account / "media.db").exists()
    # One file the cut-off run had copied but not yet removed from the old folder.
    source_media = tmp_path / "old" / "pia" / "collection.media"
    (source_media / "one.png").write_bytes((account / "media" / "one.png").read_bytes())

    code, report = run_import(config, tmp_path / "old")  # the account's collection is its own
    assert code == 0, report
    assert not any(source_media.iterdir())
    assert "left behind" not in " ".join(report)
    index = sqlite3.connect(account / "media.db")
    rows = index.execute("SELECT fname, size, usn FROM media ORDER BY usn").fetchall()
    meta = index.execute("SELECT last_usn, total_bytes, total_nonempty_files FROM meta").fetchone()
    index.close()
    assert [(name, size) for name, size, _ in rows] == [("one.png", 10), ("two.png", 20)]
    assert meta == (2, 30, 2)
    assert not (account / ".gateway-import").exists()
    assert "already imported" in " ".join(run_import(config, tmp_path / "old")[1])


def test_a_media_only_folder_is_not_a_collection_and_makes_no_account(cognito, tmp_path):
    cognito.add_user("quinn", PASSWORD, "quinn@example.com")
    config = cognito.config(tmp_path / "data")
    media = tmp_path / "old" / "quinn" / "collection.media"
    media.mkdir(parents=True)
    (media / "a.png").write_bytes(b"a")
    for dry_run in (True, False):
        code, report = run_import(config, tmp_path / "old", dry_run=dry_run)
        assert code == 1
        assert any("quinn: NOT IMPORTED: not a collection folder" in line for line in report)
    assert not (config.collections_dir / "quinn").exists()
    assert (media / "a.png").exists()


def test_a_database_that_is_no_collection_goes_back_and_leaves_the_account_empty(cognito, tmp_path):
    cognito.add_user("ria", PASSWORD, "ria@example.com")
    config = cognito.config(tmp_path / "data")
    folder = tmp_path / "old" / "ria"
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "collection.anki2")
    db.execute("CREATE TABLE notes_of_something_else (x)")
    db.commit()
    db.close()
    original = (folder / "collection.anki2").read_bytes()
    code, report = run_import(config, tmp_path / "old")
    assert code == 1
    assert any("not an Anki collection" in line for line in report), report
    assert (folder / "collection.anki2").read_bytes() == original
    assert not (config.collections_dir / "ria").exists()  # judged before any account is made


@pytest.mark.parametrize("cut_at", ["collection.anki2", "b.png"])
def test_a_run_killed_just_after_a_file_reached_the_account_completes_when_run_again(
    cognito, tmp_path, monkeypatch, cut_at
):
    """SIGKILL between the two steps of a move (link, then unlink) left the file in both
    folders: a hard link, which the next run refused as such."""
    import importlib

    move_mod = importlib.import_module("gateway.importer.move")
    cognito.add_user("sam", PASSWORD, "sam@example.com")
    config = cognito.config(tmp_path / "data")
    media = {"a.png": b"a" * 10, "b.png": b"b" * 20}
    folder = old_folder(tmp_path / "old", "sam", ["n1"], media)

    def killed_after(operation):
        def step(src, *args, **kwargs):
            operation(src, *args, **kwargs)
            if src == cut_at:
                raise RuntimeError("SIGKILL")

        return step

    with monkeypatch.context() as patch:
        patch.setattr(move_mod.os, "link", killed_after(os.link))
        patch.setattr(move_mod.os, "rename", killed_after(os.rename))
        with pytest.raises(RuntimeError):
            run_import(config, tmp_path / "old")

    code, report = run_import(config, tmp_path / "old")
    assert code == 0, report
    assert "left behind" not in " ".join(report), report
    account = config.collections_dir / "sam"
    assert {p.name: p.read_bytes() for p in (account / "media").iterdir()} == media
    assert not (folder / "collection.anki2").exists()
    assert not any((folder / "collection.media").iterdir())
    assert (account / "collection.anki2").stat().st_nlink == 1


@pytest.mark.parametrize(
    "schema",
    [
        # Reading it never ends: the import hung on its own check.
        "CREATE VIEW col AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
        " SELECT count(*) AS ver FROM c",
        "CREATE VIEW col AS SELECT 11 AS ver",
        "CREATE VIRTUAL TABLE col USING fts5(ver)",
    ],
)
def test_a_crafted_col_that_is_no_table_is_refused_without_running_it(cognito, tmp_path, schema):
    import threading

    cognito.add_user("tia", PASSWORD, "tia@example.com")
    config = cognito.config(tmp_path / "data")
    folder = tmp_path / "old" / "tia"
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "collection.anki2")
    db.execute(schema)
    db.commit()
    db.close()
    result: list[tuple[int, list[str]]] = []
    runner = threading.Thread(
        target=lambda: result.append(run_import(config, tmp_path / "old")), daemon=True
    )
    runner.start()
    runner.join(60)
    assert result, "the import did not finish within 60 s"
    code, report = result[0]
    assert code == 1
    assert any(
        "tia: NOT IMPORTED: collection.anki2: holds what Anki never makes" in line
        for line in report
    ), report
    assert (folder / "collection.anki2").exists()
    assert not (config.collections_dir / "tia" / "collection.anki2").exists()


def test_an_account_whose_import_was_cut_off_is_not_served_until_it_completes(
    cognito, tmp_path, monkeypatch, start_gateway
):
    """A device syncing into a half-imported account would upload media the re-run's new
    media.db renumbers (its own last usn then hides the imported files from it)."""
    import importlib

    from tests.test_identity_e2e import login_status

    move_mod = importlib.import_module("gateway.importer.move")
    cognito.add_user("uma", PASSWORD, "uma@example.com")
    config = cognito.config(tmp_path / "data")
    old_folder(tmp_path / "old", "uma", ["n1"], {"a.png": b"a" * 10})

    def power_cut(*args: object) -> None:
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:  # the collection and media moved, then the run died
        patch.setattr(move_mod.mediadb, "write", power_cut)
        with pytest.raises(RuntimeError):
            run_import(config, tmp_path / "old")
    assert (config.collections_dir / "uma" / "collection.anki2").exists()

    gw = start_gateway(config)
    assert login_status(gw.url, "uma", PASSWORD) == 503  # not the half-imported account
    gw.stop()
    code, report = run_import(config, tmp_path / "old")
    assert code == 0, report
    gw = start_gateway(config)
    device = synced_device(tmp_path, gw.url, "uma")
    assert device.note_fronts() == {"n1", 'media <img src="a.png">'}
    assert device.media_bytes("a.png") == b"a" * 10
    device.close()
    gw.stop()


def test_a_run_killed_after_marking_the_folder_leaves_the_account_servable_when_run_again(
    cognito, tmp_path, monkeypatch
):
    import importlib

    move_mod = importlib.import_module("gateway.importer.move")
    cognito.add_user("vera", PASSWORD, "vera@example.com")
    config = cognito.config(tmp_path / "data")
    old_folder(tmp_path / "old", "vera", ["n1"], {})

    def marked_then_killed(*args: object) -> None:
        write_new(*args)
        raise RuntimeError("SIGKILL")

    write_new = move_mod._write_new
    with monkeypatch.context() as patch:
        patch.setattr(move_mod, "_write_new", marked_then_killed)
        with pytest.raises(RuntimeError):
            run_import(config, tmp_path / "old")
    account = config.collections_dir / "vera"
    assert (account / ".gateway-import").exists()

    code, report = run_import(config, tmp_path / "old")
    assert code == 0, report
    assert any("already imported" in line for line in report), report
    assert not (account / ".gateway-import").exists()  # else the account is never served


def test_an_import_into_a_dynamodb_registry_is_served_by_the_gateway(
    cognito, dynamodb_server, tmp_path, start_gateway
):
    import dataclasses

    from gateway.registry.dynamo import create_table, make_client

    cognito.add_user("wes", PASSWORD, "wes@example.com")
    config = cognito.config(tmp_path / "data")
    registry = dataclasses.replace(
        config.registry, backend="dynamodb", table="imports", endpoint_url=dynamodb_server
    )
    config = dataclasses.replace(config, registry=registry)
    create_table(make_client(config), "imports")
    old_folder(tmp_path / "old", "wes", ["w1"], {"w.png": b"w" * 30})

    code, plan = run_import(config, tmp_path / "old", dry_run=True)
    assert code == 0, plan
    assert any("wes → new account wes" in line for line in plan), plan
    assert not config.data_dir.exists()  # a dry run creates nothing
    code, report = run_import(config, tmp_path / "old")
    assert code == 0, report
    gw = start_gateway(config)
    device = synced_device(tmp_path, gw.url, "wes")
    assert "w1" in device.note_fronts()
    assert device.media_bytes("w.png") == b"w" * 30
    device.close()
    gw.stop()
    assert "already imported" in " ".join(run_import(config, tmp_path / "old")[1])


def test_a_media_file_replaced_during_the_move_is_left_behind_and_the_rest_imported(
    cognito, tmp_path, monkeypatch
):
    import importlib

    move_mod = importlib.import_module("gateway.importer.move")
    cognito.add_user("xia", PASSWORD, "xia@example.com")
    config = cognito.config(tmp_path / "data")
    folder = old_folder(tmp_path / "old", "xia", ["n1"], {"a.png": b"a" * 10, "b.png": b"b" * 9})
    media = folder / "collection.media"
    rename = os.rename

    def swapped_first(src, *args, **kwargs):
        if src == "b.png":  # another process replaces the file after it was checked
            (media / "b.new").write_bytes(b"swapped")
            os.replace(media / "b.new", media / "b.png")
        return rename(src, *args, **kwargs)

    monkeypatch.setattr(move_mod.os, "rename", swapped_first)
    code, report = run_import(config, tmp_path / "old")
    assert code == 0, report
    assert any("left behind: b.png" in line and "changed" in line for line in report), report
    account = config.collections_dir / "xia"
    assert sorted(p.name for p in (account / "media").iterdir()) == ["a.png"]
    assert (media / "b.png").read_bytes() == b"swapped"
    assert not (account / ".gateway-import").exists()
