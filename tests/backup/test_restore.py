"""A restore checks every chosen account's snapshot before it touches any, and changes all or
none: the issue's examples with the real client, the gateway and the stock sync server (moto
as Cognito)."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
from anki.errors import SyncError

from gateway.appkeys import POOL
from gateway.backup.restore import restore
from gateway.backup.snapshot import BackupError, take
from gateway.backup.store import LocalStore
from tests.ankiclient import is_auth_error
from tests.conftest import MANIFEST_KEY
from tests.test_backup import cli_env, run_cli, synced_accounts
from tests.test_identity_e2e import sync_pushes

#: A user's trigger on `col`, as the issue found it. The client itself moves `scm` on by a few
#: ms during a full upload; a restore marks the schema changed at its own time, later.
TRIGGER = (
    "CREATE TRIGGER mine BEFORE UPDATE ON col WHEN NEW.scm - OLD.scm > 1000 BEGIN"
    " SELECT RAISE(ABORT, 'text the user chose'); END"
)


def folder_state(gw: Any, *accounts: str) -> dict[str, bytes]:
    """Every file of the accounts' folders (their sync servers stopped first), by path."""
    state = {}
    for account in accounts:
        gw.call(gw.app[POOL].stop(account))
        folder = gw.registry.folder(gw.registry.get_by_name(account))
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith(".gateway-"):
                state[str(path.relative_to(folder.parent))] = path.read_bytes()
    return state


def ahead_of(store: LocalStore, gw: Any, devices: list[Any]) -> str:
    """A snapshot, then a note per device synced after it: a restore would change each."""
    name = take(gw.config, store).name
    for device in devices:
        device.add_note("after the snapshot")
        assert sync_pushes(device)
    return name


def resealed(store: LocalStore, name: str, change: Any) -> None:
    """The snapshot's manifest changed by `change` and signed again with the right key (what a
    bug, not an attacker, could produce)."""
    from gateway.backup.manifest import open_sealed, seal

    key = f"snapshots/{name}/manifest.json"
    body = open_sealed(store.read(key), name, MANIFEST_KEY.encode())
    change(body)
    store.write(key, seal(body, MANIFEST_KEY.encode()))


def test_a_collection_replaced_in_the_store_is_refused_and_no_account_changes(
    cognito, tmp_path, start_gateway
) -> None:
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "ann", "ola")
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices)
    # Someone with write access to the backup store puts ola's collection in ann's place.
    ann = store.root / "snapshots" / name / "accounts" / "ann" / "collection.anki2"
    ann.write_bytes((ann.parent.parent / "ola" / "collection.anki2").read_bytes())
    before = folder_state(gw, "ann", "ola")

    with pytest.raises(BackupError, match="ann: collection.anki2 is not the file the backup took"):
        restore(gw.config, store, name)
    assert folder_state(gw, "ann", "ola") == before
    done = run_cli(cli_env(cognito, gw.config.data_dir), "backup", "verify", str(store.root))
    assert done.returncode == 1, done.stderr
    assert f"{name}: ann: collection.anki2 is not the file the backup took" in done.stderr
    for device in devices:
        assert sync_pushes(device)  # a normal sync: the server's copy is the device's
        device.close()


def test_a_refused_restore_leaves_no_folder_for_an_account_that_had_none(
    cognito, tmp_path, start_gateway
) -> None:
    # Before: every chosen account's folder was made before staging, and a refusal left an
    # empty `collections/<name>/` behind for an account that had none here (moved to another
    # node, or deleted, since the snapshot): a folder the node does not own.
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "ann", "ola")
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices)
    ann = store.root / "snapshots" / name / "accounts" / "ann" / "collection.anki2"
    ann.write_bytes(b"not the file the backup took")
    gw.call(gw.app[POOL].stop("ola"))
    ola = gw.registry.folder(gw.registry.get_by_name("ola"))
    ola.rename(tmp_path / "ola-moved-away")

    with pytest.raises(BackupError, match="ann: collection.anki2 is not the file the backup took"):
        restore(gw.config, store, name)
    assert not os.path.lexists(ola)
    for device in devices:
        device.close()


def test_a_manifest_changed_in_the_store_is_refused_before_anything_is_written(
    cognito, tmp_path, start_gateway
) -> None:
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "ivy")
    devices[0].add_media("pic.bin", b"picture")
    devices[0].sync()
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices)
    key = f"snapshots/{name}/manifest.json"
    manifest = json.loads(store.read(key))
    manifest["accounts"]["ivy"]["media"]["pic.bin"] = "../../../etc/hostname"
    store.write(key, json.dumps(manifest).encode())  # without the key: its MAC no longer fits
    before = folder_state(gw, "ivy")

    with pytest.raises(BackupError, match="manifest's MAC does not match"):
        restore(gw.config, store, name)
    assert folder_state(gw, "ivy") == before
    done = run_cli(
        cli_env(cognito, gw.config.data_dir), "backup", "verify", f"{store.root}/snapshots/{name}"
    )
    assert done.returncode == 1 and "MAC does not match" in done.stderr, done.stderr
    devices[0].close()


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [
        ("media", {"pic.bin": "../../../etc/hostname"}, "'pic.bin' has no SHA-256 digest"),
        ("media", {"../escape": "0" * 64}, "bad file name '../escape'"),
        ("files", {"collection.anki2": "ABC"}, "'collection.anki2' has no SHA-256 digest"),
    ],
)
def test_a_signed_manifest_naming_a_path_is_refused_before_anything_is_written(
    cognito, tmp_path, start_gateway, field, value, refusal
) -> None:
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "amy", "zed")
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices)
    resealed(store, name, lambda body: body["accounts"]["zed"][field].update(value))
    before = folder_state(gw, "amy", "zed")
    with pytest.raises(BackupError, match=f"zed: {refusal}"):
        restore(gw.config, store, name)
    assert folder_state(gw, "amy", "zed") == before
    for device in devices:
        device.close()


def test_a_users_trigger_on_col_refuses_the_restore_without_running_and_the_rest_restores(
    cognito, tmp_path, start_gateway
) -> None:
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "eve", "abe", "zoe")
    eve = devices[0]
    # What a user can send with a stock client: a schema change forces a full upload, and the
    # collection uploaded carries a trigger of the user's own (made in Anki's debug console).
    eve.col.mod_schema(check=False)
    eve.col.db.execute(TRIGGER)
    eve.full_sync(upload=True)
    served = gw.registry.folder(gw.registry.get_by_name("eve")) / "collection.anki2"
    gw.call(gw.app[POOL].stop("eve"))
    assert b"text the user chose" in served.read_bytes()  # the stock server kept it
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices[1:])
    before = folder_state(gw, "abe", "eve", "zoe")
    time.sleep(1.1)  # the restore's `scm` is then over a second later: the trigger would fire

    with pytest.raises(BackupError) as refused:
        restore(gw.config, store, name)
    message = str(refused.value)
    assert message.startswith("eve: collection.anki2: holds what Anki never makes (trigger 'mine')")
    assert "--exclude eve" in message and "text the user chose" not in message
    assert folder_state(gw, "abe", "eve", "zoe") == before  # abe (before eve by name) too
    env = cli_env(cognito, gw.config.data_dir)
    done = run_cli(env, "backup", "verify", str(store.root))
    assert done.returncode == 1 and "eve: collection.anki2: holds what" in done.stderr
    assert "Traceback" not in done.stderr and "abe" not in done.stderr

    done = run_cli(env, "restore", "--from", str(store.root), "--exclude", "eve")
    assert done.returncode == 0, done.stderr
    assert "restored 2 account(s): abe, zoe" in done.stdout
    after = folder_state(gw, "abe", "eve", "zoe")
    assert {k: v for k, v in after.items() if k.startswith("eve/")} == {
        k: v for k, v in before.items() if k.startswith("eve/")
    }
    for device in devices[1:]:
        # Restored: the note synced after the snapshot is gone from the server's copy.
        device.col.sync_collection(device.auth, sync_media=False)
        device.full_sync(upload=False)
        assert "after the snapshot" not in device.note_fronts()
    for device in devices:
        device.close()


def _checked_col(device: Any, text: str) -> None:
    """`col` made again with a CHECK constraint named `text` that holds for today's `scm` and
    not a second later: plain SQL, no trigger, view or virtual table (what a user can run in
    Anki's debug console before a full upload)."""
    db = device.col.db
    (sql,) = db.list("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'col'")
    limit = db.scalar("SELECT scm FROM col") + 1000
    checked = sql.rstrip().rstrip(")") + f', CONSTRAINT "{text}" CHECK (scm < {limit}))'
    db.execute("ALTER TABLE col RENAME TO col_before")
    db.execute(checked)
    db.execute("INSERT INTO col SELECT * FROM col_before")
    db.execute("DROP TABLE col_before")


def test_a_users_check_constraint_on_col_refuses_the_restore_and_verify_without_a_traceback(
    cognito, tmp_path, start_gateway
) -> None:
    # Before: the checks passed it (only tables and indexes), then marking the staged schema
    # changed (UPDATE col SET scm) failed the constraint: `restore` ended in a traceback naming
    # the user's text, no account restored and no --exclude named; `backup verify` passed it.
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "ida", "ava")
    ida = devices[0]
    ida.col.mod_schema(check=False)
    _checked_col(ida, "text the user chose")
    ida.full_sync(upload=True)
    store = LocalStore(tmp_path / "backups")
    ahead_of(store, gw, devices[1:])
    before = folder_state(gw, "ava", "ida")
    time.sleep(1.1)  # the restore's `scm` is then over a second later: the constraint fails

    env = cli_env(cognito, gw.config.data_dir)
    done = run_cli(env, "backup", "verify", str(store.root))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ida: collection.anki2:" in done.stderr and "ava" not in done.stderr
    done = run_cli(env, "restore", "--from", str(store.root))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "text the user chose" not in done.stderr
    assert "ida: collection.anki2:" in done.stderr and "--exclude ida" in done.stderr
    assert folder_state(gw, "ava", "ida") == before
    done = run_cli(env, "restore", "--from", str(store.root), "--exclude", "ida")
    assert done.returncode == 0, done.stderr
    assert "restored 1 account(s): ava" in done.stdout
    for device in devices:
        device.close()


def test_backup_verify_passes_a_sound_snapshot_and_names_its_exit_codes(
    cognito, tmp_path, start_gateway
) -> None:
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "kai")
    devices[0].add_media("a.bin", b"a" * 1000)
    devices[0].sync()
    store = LocalStore(tmp_path / "backups")
    name = take(gw.config, store).name
    env = cli_env(cognito, gw.config.data_dir)
    done = run_cli(env, "backup", "verify", f"{store.root}/snapshots/{name}")
    assert done.returncode == 0, done.stderr
    assert f"snapshot {name} in {store.root} verified" in done.stdout
    # A media file damaged in the store.
    (blob,) = (store.root / "blobs").iterdir()
    blob.write_bytes(b"b" * 1000)
    done = run_cli(env, "backup", "verify", str(store.root))
    assert done.returncode == 1
    assert "kai: media file 'a.bin' is not the file the backup took" in done.stderr
    # Cannot check: no such snapshot; no key.
    assert run_cli(env, "backup", "verify", f"{store.root}/snapshots/nope").returncode == 2
    no_key = {k: v for k, v in env.items() if k != "GATEWAY_BACKUP_MANIFEST_KEY"}
    done = run_cli(no_key, "backup", "verify", str(store.root))
    assert done.returncode == 2 and "backup.manifest_key is not set" in done.stderr
    # The key shows nowhere, not even in a refusal made with it.
    for run in (done, run_cli(env, "backup", "verify", str(store.root))):
        assert MANIFEST_KEY not in run.stdout + run.stderr
    devices[0].close()


def test_a_snapshot_taken_with_another_key_or_unsigned_is_refused(
    cognito, tmp_path, start_gateway
) -> None:
    from dataclasses import replace

    from gateway.config import BackupConfig, Secret

    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "uma")
    store = LocalStore(tmp_path / "backups")
    other = replace(gw.config, backup=BackupConfig(manifest_key=Secret("x" * 40)))
    name = take(other, store).name
    with pytest.raises(BackupError, match="not the key it was taken with"):
        restore(gw.config, store, name)
    key = f"snapshots/{name}/manifest.json"
    old = json.loads(store.read(key))
    for field in ("mac", "format", "registry", "secret_sha256"):
        old.pop(field)
    for entry in old["accounts"].values():
        entry.pop("files")
    store.write(key, json.dumps(old).encode())  # as snapshots were before manifests were signed
    with pytest.raises(BackupError, match="its manifest is not signed"):
        restore(gw.config, store, name)
    devices[0].close()


def failing_rename(at: int, fail: Any) -> Any:
    """os.rename, but the `at`-th call runs `fail()` instead."""
    from gateway.backup import swap

    rename, calls = swap.os.rename, []

    def rename_or_fail(source: Any, target: Any) -> None:
        calls.append(target)
        if len(calls) == at:
            fail()
        rename(source, target)

    return rename_or_fail


def test_a_failure_while_swapping_the_second_account_puts_the_first_back_too(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.backup import swap

    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "bea", "ben")
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices)
    before = folder_state(gw, "bea", "ben")

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    # bea's three files out and the snapshot's three in, ben's out, then his first one fails.
    monkeypatch.setattr(swap.os, "rename", failing_rename(10, full_disk))
    with pytest.raises(BackupError, match="could not be swapped .* every account is as it was"):
        restore(gw.config, store, name)
    monkeypatch.undo()
    assert folder_state(gw, "bea", "ben") == before
    for device in devices:
        assert sync_pushes(device)
        device.close()


def test_a_restore_killed_while_swapping_leaves_the_account_unserved_until_run_again(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.backup import swap

    gw, (device,) = synced_accounts(cognito, tmp_path, start_gateway, "kim")
    store = LocalStore(tmp_path / "backups")
    restored = device.note_fronts()
    name = ahead_of(store, gw, [device])
    # Killed (no clean-up of its own) after kim's files went out and one of the snapshot's in.
    # Its sync server stopped first: a forked child would inherit the descriptor of its lock.
    gw.call(gw.app[POOL].stop("kim"))
    monkeypatch.setattr(swap.os, "rename", failing_rename(5, lambda: os._exit(9)))
    killed = multiprocessing.get_context("fork").Process(
        target=restore, args=(gw.config, store, name)
    )
    killed.start()
    killed.join(120)
    monkeypatch.undo()
    assert killed.exitcode == 9
    with pytest.raises(SyncError) as refused:
        device.sync()
    assert not is_auth_error(refused.value)  # 503: the user stays logged in

    assert restore(gw.config, store, name) == ["kim"]
    device.col.sync_collection(device.auth, sync_media=False)
    device.full_sync(upload=False)
    assert device.note_fronts() == restored
    device.close()


def test_a_restore_without_the_free_space_to_stage_it_refuses_before_touching_anything(
    cognito, tmp_path, start_gateway, monkeypatch, capsys
) -> None:
    from gateway.__main__ import main as gateway_main
    from gateway.ops import readiness

    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "big", "tiny")
    devices[0].add_media("large.bin", os.urandom(3 << 20))
    devices[0].sync()
    store = LocalStore(tmp_path / "backups")
    name = ahead_of(store, gw, devices)
    # What staging writes, from the store's own files: each account's SQLite files and the
    # blob of each media file it lists.
    manifest = json.loads(store.read(f"snapshots/{name}/manifest.json"))
    files = (store.root / "snapshots" / name / "accounts").rglob("*")
    need = sum(p.stat().st_size for p in files if p.is_file()) + sum(
        (store.root / "blobs" / digest).stat().st_size
        for entry in manifest["accounts"].values()
        for digest in entry["media"].values()
    )
    assert need > 3 << 20
    floor = gw.config.server.min_free_disk_megs << 20
    for variable, value in (
        ("GATEWAY_DATA_DIR", str(gw.config.data_dir)),
        ("GATEWAY_COGNITO_USER_POOL_ID", cognito.pool_id),
        ("GATEWAY_COGNITO_CLIENT_ID", cognito.client_id),
        ("GATEWAY_BACKUP_MANIFEST_KEY", MANIFEST_KEY),
    ):
        monkeypatch.setenv(variable, value)
    before = folder_state(gw, "big", "tiny")
    asked: list[Path] = []

    def free(folder: Path) -> int:
        asked.append(folder)
        return floor + need - 1  # one byte short

    monkeypatch.setattr(readiness, "free_bytes", free)
    assert gateway_main(["restore", "--from", str(store.root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "not enough free space on the data disk" in err and "nothing was restored" in err
    assert asked == [gw.config.collections_dir]
    assert folder_state(gw, "big", "tiny") == before
    for account in ("big", "tiny"):
        assert not (gw.config.collections_dir / account / ".gateway-restore-new").exists()
    assert not (gw.config.data_dir / "backup-scratch").exists()

    # Just enough: restored.
    monkeypatch.setattr(readiness, "free_bytes", lambda folder: floor + need)
    assert gateway_main(["restore", "--from", str(store.root)]) == 0
    assert folder_state(gw, "big", "tiny") != before
    for device in devices:
        device.close()
