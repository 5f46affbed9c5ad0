"""Backups and restores with the real `anki` client syncing through the gateway (moto as
Cognito, and as S3 for the s3:// destination)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import boto3
import pytest

from gateway.__main__ import main as gateway_main
from gateway.appkeys import POOL
from gateway.backup.restore import restore
from gateway.backup.snapshot import BackupError, check, snapshots, take
from gateway.backup.store import LocalStore, S3Store
from tests.ankiclient import Client
from tests.test_identity_e2e import PASSWORD, synced_device


def media_of(client: Client) -> dict[str, bytes]:
    folder = Path(client.col.media.dir())
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def wipe(folder: Path) -> None:
    for child in folder.iterdir():
        if child.name.startswith("collection.anki2") or child.name.startswith("media"):
            if child.is_dir():
                import shutil

                shutil.rmtree(child)
            else:
                child.unlink()


def fresh_download(tmp_path: Path, gw: Any, name: str, login: str) -> Client:
    fresh = Client(tmp_path / "clients" / name)
    fresh.login(login, PASSWORD, gw.url)
    fresh.sync()  # an empty client and a full server: a full download, then media
    return fresh


def test_a_busy_account_is_skipped_not_waited_for_and_an_idle_one_restores_byte_for_byte(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("bea", PASSWORD, "bea@example.com")
    cognito.add_user("ben", PASSWORD, "ben@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "bea", "bea")
    for n in range(3):
        device.add_note(f"note {n}")
        device.add_media(f"file-{n}.bin", os.urandom(20_000))
    device.sync()
    other = synced_device(tmp_path, gw, "ben", "ben")
    store = LocalStore(tmp_path / "backups")

    # Both sync servers run: the stock server holds its collection exclusively, so a copy
    # would wait for ever; the backup skips them and says so, at once.
    taken = take(gw.config, store)
    assert taken.busy == ("bea", "ben")
    assert json.loads(store.read(f"snapshots/{taken.name}/manifest.json"))["accounts"] == {}

    gw.call(gw.app[POOL].stop("bea"))
    taken = take(gw.config, store)
    assert taken.busy == ("ben",)
    copied = tmp_path / "copied.anki2"
    store.get(f"snapshots/{taken.name}/accounts/bea/collection.anki2", copied)
    assert check(copied) == "ok"
    with sqlite3.connect(copied) as db:
        assert db.execute("SELECT count() FROM notes").fetchone()[0] == len(device.note_fronts())

    account = gw.registry.get_by_name("bea")
    folder = gw.registry.folder(account)
    wipe(folder)
    assert not (folder / "collection.anki2").exists()
    assert restore(gw.config, store, taken.name, ["bea"]) == ["bea"]
    fresh = fresh_download(tmp_path, gw, "fresh", "bea")
    assert fresh.note_fronts() == device.note_fronts()
    assert media_of(fresh) == media_of(device)
    assert len(media_of(device)) == 3
    for client in (device, other, fresh):
        client.close()


def test_unchanged_media_is_not_copied_again_and_retention_prunes_what_nobody_uses(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("cid", PASSWORD, "cid@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "cid", "cid")
    device.add_media("one.bin", os.urandom(10_000))
    device.sync()
    gw.call(gw.app[POOL].stop("cid"))
    store = LocalStore(tmp_path / "backups")
    first = take(gw.config, store, clock=1_000).name
    blobs = store.keys("blobs")
    assert len(blobs) == 1
    second = take(gw.config, store, clock=2_000).name
    assert store.keys("blobs") == blobs  # the same file: not stored again
    device.add_media("two.bin", os.urandom(10_000))
    device.sync()
    gw.call(gw.app[POOL].stop("cid"))
    third = take(gw.config, store, clock=3_000, keep=2).name
    assert snapshots(store) == [second, third] and first not in snapshots(store)
    assert len(store.keys("blobs")) == 2
    manifest = json.loads(store.read(f"snapshots/{third}/manifest.json"))
    assert sorted(manifest["accounts"]["cid"]["media"]) == sorted(name for name in media_of(device))
    device.close()


def test_the_secret_goes_only_to_a_destination_marked_for_it(cognito, tmp_path, start_gateway):
    gw = start_gateway(cognito.config(tmp_path / "data"))
    store = LocalStore(tmp_path / "backups")
    with pytest.raises(BackupError, match="SECRETS-OK"):
        take(gw.config, store, include_secret=True)
    assert snapshots(store) == []
    name = take(gw.config, store).name
    assert not store.exists(f"snapshots/{name}/gateway.secret")
    store.write("SECRETS-OK", b"")
    name = take(gw.config, store, include_secret=True).name
    secret = (gw.config.data_dir / "gateway.secret").read_bytes()
    assert store.read(f"snapshots/{name}/gateway.secret") == secret


def test_restore_refuses_an_account_whose_sync_server_runs(cognito, tmp_path, start_gateway):
    cognito.add_user("dan", PASSWORD, "dan@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "dan", "dan")
    gw.call(gw.app[POOL].stop("dan"))
    store = LocalStore(tmp_path / "backups")
    take(gw.config, store)
    device.sync()  # its worker runs again
    with pytest.raises(BackupError, match="sync server is running"):
        restore(gw.config, store, accounts=["dan"])
    device.close()


def test_backup_and_restore_through_s3_and_the_command_line(
    cognito, tmp_path, start_gateway, monkeypatch, capsys
) -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(
        Bucket="anki-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    cognito.add_user("eva", PASSWORD, "eva@example.com")
    config = cognito.config(tmp_path / "data")
    gw = start_gateway(config)
    device = synced_device(tmp_path, gw, "eva", "eva")
    device.add_media("pic.bin", os.urandom(15_000))
    device.sync()
    gw.call(gw.app[POOL].stop("eva"))
    for name, value in (
        ("GATEWAY_DATA_DIR", str(config.data_dir)),
        ("GATEWAY_COGNITO_USER_POOL_ID", cognito.pool_id),
        ("GATEWAY_COGNITO_CLIENT_ID", cognito.client_id),
    ):
        monkeypatch.setenv(name, value)
    assert gateway_main(["backup", "--to", "s3://anki-backups/gw1", "--keep", "3"]) == 0
    assert "snapshot " in capsys.readouterr().out
    store = S3Store("anki-backups", "gw1", client=s3)
    assert len(snapshots(store)) == 1 and len(store.keys("blobs")) == 1
    wipe(gw.registry.folder(gw.registry.get_by_name("eva")))
    assert gateway_main(["restore", "--from", "s3://anki-backups/gw1", "--account", "eva"]) == 0
    fresh = fresh_download(tmp_path, gw, "fresh", "eva")
    assert fresh.note_fronts() == device.note_fronts()
    assert media_of(fresh) == media_of(device)
    assert gateway_main(["restore", "--from", "s3://anki-backups/gw1", "--account", "nobody"]) == 1
    assert "no account nobody" in capsys.readouterr().err
    device.close()
    fresh.close()


def test_the_last_backup_shows_in_the_metrics(cognito, tmp_path, start_gateway) -> None:
    import time

    from tests.test_metrics import metrics_url, scrape

    gw = start_gateway(cognito.config(tmp_path / "data"))
    assert "gateway_backup_last_success_timestamp_seconds{}" not in scrape(metrics_url(gw))
    before = time.time()
    take(gw.config, LocalStore(tmp_path / "backups"))
    samples = scrape(metrics_url(gw))
    assert before <= samples["gateway_backup_last_success_timestamp_seconds{}"] <= time.time()
    assert samples["gateway_backup_busy_accounts{}"] == 0
