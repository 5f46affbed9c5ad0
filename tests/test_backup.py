"""Backups and restores with the real `anki` client syncing through the gateway (moto as
Cognito, and as S3 for the s3:// destination)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import zstandard
from anki.errors import SyncError

from gateway.__main__ import main as gateway_main
from gateway.appkeys import LOGIN, POOL
from gateway.backup.restore import restore
from gateway.backup.retention import snapshots
from gateway.backup.snapshot import BackupError, check, take
from gateway.backup.store import LocalStore, S3Store
from tests.ankiclient import Client, Required, is_auth_error
from tests.conftest import MANIFEST_KEY
from tests.test_identity_e2e import PASSWORD, raw, sync_pushes, synced_device


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


def synced_accounts(cognito: Any, tmp_path: Path, start_gateway: Any, *names: str) -> tuple:
    """A gateway, and for each name a Cognito user and a device that has synced through it."""
    for name in names:
        cognito.add_user(name, PASSWORD, f"{name}@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    return gw, [synced_device(tmp_path, gw, name, name) for name in names]


def test_accounts_with_running_sync_servers_are_copied_and_one_restores_byte_for_byte(
    cognito, tmp_path, start_gateway
) -> None:
    gw, (device, other) = synced_accounts(cognito, tmp_path, start_gateway, "bea", "ben")
    for n in range(3):
        device.add_note(f"note {n}")
        device.add_media(f"file-{n}.bin", os.urandom(20_000))
    device.sync()
    store = LocalStore(tmp_path / "backups")
    assert sorted(gw.app[POOL].running()) == ["bea", "ben"]

    # Both sync servers run and hold their collections exclusively: the gateway stops each
    # for its copy (no request is in flight), and the next sync starts a new one.
    taken = take(gw.config, store)
    assert taken.missed == {}
    manifest = json.loads(store.read(f"snapshots/{taken.name}/manifest.json"))
    assert sorted(manifest["accounts"]) == ["bea", "ben"] and manifest["missed"] == {}
    copied = tmp_path / "copied.anki2"
    store.get(f"snapshots/{taken.name}/accounts/bea/collection.anki2", copied)
    assert check(copied) == "ok"
    with sqlite3.connect(copied) as db:
        assert db.execute("SELECT count() FROM notes").fetchone()[0] == len(device.note_fronts())
    other.add_note("after the backup")
    assert sync_pushes(other)  # ben's next sync gets a new server

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
    with pytest.raises(BackupError, match="--keep must be at least 1"):
        take(gw.config, store, keep=0)
    assert store.keys("") == []  # refused before anything was copied
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


def test_a_restore_while_the_users_sync_server_runs_stops_it_and_keeps_the_user_logged_in(
    cognito, tmp_path, start_gateway
) -> None:
    gw, (device,) = synced_accounts(cognito, tmp_path, start_gateway, "dan")
    store = LocalStore(tmp_path / "backups")
    take(gw.config, store)
    restored = device.note_fronts()
    device.add_note("synced after the snapshot")
    assert sync_pushes(device)
    assert gw.app[POOL].running() == ["dan"]
    # No `accounts disable` (a 403: Anki logs the user out) and no waiting for the server to
    # go idle: the restore asks the gateways like a backup does.
    assert restore(gw.config, store, accounts=["dan"]) == ["dan"]
    out = device.col.sync_collection(device.auth, sync_media=False)  # still logged in
    assert out.required == Required.FULL_SYNC
    device.full_sync(upload=False)
    assert device.note_fronts() == restored
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
        ("GATEWAY_BACKUP_MANIFEST_KEY", MANIFEST_KEY),
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
    assert samples["gateway_backup_missed_accounts{}"] == 0


def cli_env(cognito: Any, data_dir: Path) -> dict[str, str]:
    """The environment `python -m gateway` needs for this gateway's data folder."""
    return {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_COGNITO_USER_POOL_ID": cognito.pool_id,
        "GATEWAY_COGNITO_CLIENT_ID": cognito.client_id,
        "GATEWAY_COGNITO_REGION": "eu-west-1",
        "GATEWAY_LOGGING_FORMAT": "text",
        "GATEWAY_BACKUP_MANIFEST_KEY": MANIFEST_KEY,
    }


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` as its own process (as a cron job runs it)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def snapshot_notes(store: LocalStore, name: str, account: str, scratch: Path) -> set[str]:
    """The note fronts in a snapshot's collection, after a full integrity check of the copy."""
    copied = scratch / f"{name}-{account}.anki2"
    store.get(f"snapshots/{name}/accounts/{account}/collection.anki2", copied)
    with contextlib.closing(sqlite3.connect(copied)) as db:
        db.create_collation(
            "unicase", lambda a, b: (a.casefold() > b.casefold()) - (a.casefold() < b.casefold())
        )
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {flds.split("\x1f")[0] for (flds,) in db.execute("SELECT flds FROM notes")}


def snapshot_media(store: LocalStore, name: str, account: str, scratch: Path) -> dict[str, bytes]:
    """A snapshot's media files of `account`, checked against its own copy of media.db: every
    file the media database lists is there, with the checksum it lists, and nothing else."""
    manifest = json.loads(store.read(f"snapshots/{name}/manifest.json"))
    files = {
        filename: store.read(f"blobs/{digest}")
        for filename, digest in manifest["accounts"][account]["media"].items()
    }
    copied = scratch / f"{name}-{account}-media.db"
    store.get(f"snapshots/{name}/accounts/{account}/media.db", copied)
    with contextlib.closing(sqlite3.connect(copied)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        listed = dict(db.execute("SELECT fname, csum FROM media WHERE csum IS NOT NULL"))
    assert {n: hashlib.sha1(data).digest() for n, data in files.items()} == listed  # noqa: S324
    return files


class SyncLoop:
    """A device adding a note and a media file and syncing, again and again, in a thread;
    `completed` has (monotonic time, note fronts) after each sync it completed."""

    def __init__(self, device: Client) -> None:
        self.device = device
        self.completed: list[tuple[float, set[str]]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            self.device.add_note(f"loop {n}")
            self.device.add_media(f"loop-{n}.bin", os.urandom(30_000))
            try:
                self.device.sync()
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                self.failures.append(repr(exc))
                continue
            self.completed.append((time.monotonic(), self.device.note_fronts()))

    def __enter__(self) -> SyncLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def wait_for_more(self, count: int = 2) -> None:
        """Until `count` more syncs completed (or one failed)."""
        wanted, deadline = len(self.completed) + count, time.monotonic() + 120
        while len(self.completed) < wanted and not self.failures:
            assert time.monotonic() < deadline, "the client stopped completing syncs"
            time.sleep(0.05)

    def backups(self, env: dict[str, str], backups: Path, runs: int) -> list[tuple[float, str]]:
        """`python -m gateway backup` `runs` times while the loop syncs (each after two more
        completed syncs); (when each began, its snapshot's name)."""
        taken = []
        for _ in range(runs):
            self.wait_for_more()
            began = time.monotonic()
            done = run_cli(env, "backup", "--to", str(backups))
            assert done.returncode == 0, done.stderr
            assert "NOT backed up" not in done.stderr
            taken.append((began, snapshots(LocalStore(backups))[-1]))
        self.wait_for_more()  # the client keeps syncing afterwards
        return taken

    def assert_each_holds_a_completed_sync(
        self, store: LocalStore, runs: list[tuple[float, str]], account: str, scratch: Path
    ) -> None:
        """Each snapshot is the state after one completed sync, not older than the last one
        completed before its backup began, and its media match its media.db and the device."""
        for began, name in runs:
            notes = snapshot_notes(store, name, account, scratch)
            matching = [i for i, (_, fronts) in enumerate(self.completed) if fronts == notes]
            assert matching, f"snapshot {name} holds no completed sync"
            last_before = max(i for i, (when, _) in enumerate(self.completed) if when < began)
            assert max(matching) >= last_before
            for filename, data in snapshot_media(store, name, account, scratch).items():
                assert media_of(self.device)[filename] == data


def test_a_backup_during_a_clients_syncs_holds_a_completed_sync_and_restores_byte_for_byte(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("syd", PASSWORD, "syd@example.com")
    config = cognito.config(tmp_path / "data")
    gw = start_gateway(config)
    device = synced_device(tmp_path, gw, "syd", "syd")
    env = cli_env(cognito, config.data_dir)
    backups = tmp_path / "backups"
    store = LocalStore(backups)
    with SyncLoop(device) as loop:
        runs = loop.backups(env, backups, 3)
    assert loop.failures == []
    loop.assert_each_holds_a_completed_sync(store, runs, "syd", tmp_path)

    name = runs[-1][1]
    gw.call(gw.app[POOL].stop("syd"))
    wipe(gw.registry.folder(gw.registry.get_by_name("syd")))
    done = run_cli(env, "restore", "--from", str(backups), "--account", "syd")
    assert done.returncode == 0, done.stderr
    fresh = fresh_download(tmp_path, gw, "fresh", "syd")
    assert fresh.note_fronts() == snapshot_notes(store, name, "syd", tmp_path)
    assert media_of(fresh) == snapshot_media(store, name, "syd", tmp_path)
    assert len(media_of(fresh)) >= 4
    device.close()
    fresh.close()


def test_two_gateway_processes_on_one_data_folder_quiesce_an_account_for_a_backup(
    cognito, tmp_path, start_gateway
) -> None:
    # Two gateways on one data folder (their locks are per open file: as two processes).
    cognito.add_user("kim", PASSWORD, "kim@example.com")
    config = cognito.config(tmp_path / "data")
    first, second = start_gateway(config), start_gateway(config)
    synced_device(tmp_path, first, "kim-1", "kim").close()
    assert first.app[POOL].running() == ["kim"]
    # The device syncs through the second gateway, to the first one's sync server.
    device = synced_device(tmp_path, second, "kim-2", "kim")
    assert second.app[POOL].running() == []
    backups = tmp_path / "backups"
    with SyncLoop(device) as loop:
        runs = loop.backups(cli_env(cognito, config.data_dir), backups, 3)
    assert loop.failures == []
    loop.assert_each_holds_a_completed_sync(LocalStore(backups), runs, "kim", tmp_path)
    # The first gateway stopped its server for the first backup; the next one started with
    # the second gateway, which stopped it for the later backups.
    assert first.app[POOL].running() == []
    device.close()


def test_a_sync_left_open_delays_a_backup_only_until_wait_then_it_is_cut_retryably(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("ivy", PASSWORD, "ivy@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "ivy", "ivy")
    assert device.auth is not None
    key = device.auth.hkey
    # A client that opens a collection sync and never finishes it (or syncs for ever).
    assert raw(gw.url, "sync/meta", key, {"v": 11, "cv": "26.09.3,raw,linux"}) == 200
    assert raw(gw.url, "sync/start", key, {"minUsn": 0, "lnewer": False, "graves": None}) == 200
    store = LocalStore(tmp_path / "backups")
    began = time.monotonic()
    taken = take(gw.config, store, wait=2)
    took = time.monotonic() - began
    assert taken.missed == {}
    assert 2 <= took < 2 + 10  # waited for the open sync, but only `wait` seconds
    assert snapshot_notes(store, taken.name, "ivy", tmp_path) == device.note_fronts()
    # The cut sync's next step is told to try again (503: Anki keeps the user logged in; a
    # fresh sync server would answer it 400, "Please use Check Database").
    assert raw(gw.url, "sync/applyGraves", key, {"chunk": {}}) == 503
    device.add_note("after the cut")
    assert sync_pushes(device)
    device.close()


def test_a_request_held_past_the_hold_gets_a_503_and_the_user_stays_logged_in(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.backup import gate, quiesce
    from gateway.workers.lock import account_dir

    monkeypatch.setattr(gate, "HOLD_SECONDS", 1.0)
    cognito.add_user("hal", PASSWORD, "hal@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "hal", "hal")
    assert device.auth is not None
    folder = account_dir(gw.config.collections_dir, "hal")
    # A backup that takes longer than a request may wait.
    with quiesce.post(folder, force_at=time.time() + 600):
        began = time.monotonic()
        assert raw(gw.url, "sync/meta", device.auth.hkey, {"v": 11, "cv": "x"}) == 503
        assert 1 <= time.monotonic() - began < 5
        device.add_note("held")
        with pytest.raises(SyncError) as failed:
            device.sync()
        assert not is_auth_error(failed.value)

        # A login that needs the account's sync server waits too, and is not told "wrong
        # password" either.
        async def forget_cached_logins() -> None:
            gw.app[LOGIN].forget_user("hal")

        gw.call(forget_cached_logins())
        other = Client(tmp_path / "clients" / "hal-2")
        with pytest.raises(SyncError) as failed:
            other.login("hal", PASSWORD, gw.url)
        assert not is_auth_error(failed.value)
    assert sync_pushes(device)  # the same login, once the backup is done
    other.login("hal", PASSWORD, gw.url)
    other.close()
    device.close()


def test_an_account_that_cannot_be_quiesced_is_missed_named_and_counted(
    cognito, tmp_path, start_gateway, monkeypatch, capsys
) -> None:
    from gateway.backup import quiesce
    from gateway.workers.lock import try_lock
    from tests.test_metrics import metrics_url, scrape

    monkeypatch.setattr(quiesce, "STOP_MARGIN", 0.5)
    cognito.add_user("bo", PASSWORD, "bo@example.com")
    cognito.add_user("al", PASSWORD, "al@example.com")
    config = cognito.config(tmp_path / "data")
    gw = start_gateway(config)
    for name in ("bo", "al"):
        synced_device(tmp_path, gw, name, name).close()
    gw.call(gw.app[POOL].stop("bo"))
    for name, value in cli_env(cognito, config.data_dir).items():
        if name.startswith("GATEWAY_"):
            monkeypatch.setenv(name, value)
    # bo's worker lock held by something that does not answer a backup's want (a hung or
    # older gateway): never copied torn, named instead.
    held = try_lock(config.collections_dir, "bo")
    assert held is not None
    try:
        assert gateway_main(["backup", "--to", str(tmp_path / "backups"), "--wait", "0.5"]) == 1
    finally:
        held.release()
    err = capsys.readouterr().err
    assert "NOT backed up: bo: its sync server did not stop within 1 s" in err
    assert "al" not in err
    store = LocalStore(tmp_path / "backups")
    manifest = json.loads(store.read(f"snapshots/{snapshots(store)[-1]}/manifest.json"))
    assert sorted(manifest["accounts"]) == ["al"] and list(manifest["missed"]) == ["bo"]
    assert scrape(metrics_url(gw))["gateway_backup_missed_accounts{}"] == 1


def running_after(gw: Any, seconds: float) -> list[str]:
    time.sleep(seconds)
    return gw.app[POOL].running()


def test_a_sync_server_is_stopped_for_a_backup_only_once_no_gateway_has_a_request_or_sync_open(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.backup import quiesce
    from gateway.forwarding.upstream import Upstream
    from gateway.workers.lock import account_dir

    cognito.add_user("lou", PASSWORD, "lou@example.com")
    config = cognito.config(tmp_path / "data")
    first, second = start_gateway(config), start_gateway(config)
    device = synced_device(tmp_path, first, "lou", "lou")  # the sync server runs in `first`
    assert device.auth is not None
    key, folder = device.auth.hkey, account_dir(config.collections_dir, "lou")
    # Through the other gateway: a body still arriving holds nothing (it is read whole before
    # it goes to a sync server, forwarding/body.py) ...
    header = json.dumps({"v": 11, "k": key, "c": "26.09.3,raw,linux", "s": "raw2"})
    body = zstandard.ZstdCompressor().compress(os.urandom(200_000))
    slow = socket.create_connection(("127.0.0.1", second.port))
    slow.sendall(
        f"POST /sync/upload HTTP/1.1\r\nHost: x\r\nanki-sync: {header}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:100_000]
    )
    time.sleep(0.5)
    assert quiesce.idle_everywhere(folder)
    slow.close()
    # ... a request on its way through the sync server does (held there by the test) ...
    arrived, go_on = threading.Event(), threading.Event()
    send = Upstream.to_worker

    async def held_send(self: Upstream, request: Any, upstream_path: str, *args: Any, **kw: Any):
        if upstream_path == "msync/begin":
            arrived.set()
            await asyncio.to_thread(go_on.wait, 60)
        return await send(self, request, upstream_path, *args, **kw)

    monkeypatch.setattr(Upstream, "to_worker", held_send)
    begin = threading.Thread(target=raw, args=(second.url, "msync/begin", key, {}))
    begin.start()
    assert arrived.wait(10)
    assert not quiesce.idle_everywhere(folder)
    # ... and so does a collection sync left open (by another device).
    assert raw(second.url, "sync/meta", key, {"v": 11, "cv": "26.09.3,raw,linux"}) == 200
    assert raw(second.url, "sync/start", key, {"minUsn": 0, "lnewer": False, "graves": None}) == 200
    with quiesce.post(folder, force_at=time.time() + 600):
        assert running_after(first, 1.5) == ["lou"]
        go_on.set()  # the request ends
        begin.join(30)
        assert running_after(first, 1.5) == ["lou"]  # the sync is still open
        assert raw(second.url, "sync/abort", key, {}) == 200  # passes: it belongs to that sync
        assert running_after(first, 1.5) == []
    monkeypatch.setattr(Upstream, "to_worker", send)
    device.add_note("after")
    assert sync_pushes(device)
    device.close()


def test_a_sync_start_held_by_a_backup_keeps_its_sync_once_the_backup_is_done(
    cognito, tmp_path, start_gateway
) -> None:
    # Seen in CI as a device's sync failing during a backup ("AnkiWeb encountered a problem"):
    # the start claimed the account's sync lease, was held while the backup stopped the
    # worker (which drops the lease), then reached the fresh worker, and the sync's next
    # request was refused as cut (503).
    from gateway.backup import quiesce
    from gateway.workers.lock import account_dir

    cognito.add_user("ned", PASSWORD, "ned@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "ned", "ned")
    assert device.auth is not None
    key, folder = device.auth.hkey, account_dir(gw.config.collections_dir, "ned")
    assert raw(gw.url, "sync/meta", key, {"v": 11, "cv": "26.09.3,raw,linux"}) == 200
    started: list[int] = []
    with quiesce.post(folder, force_at=time.time() + 600):
        start = threading.Thread(
            target=lambda: started.append(
                raw(gw.url, "sync/start", key, {"minUsn": 0, "lnewer": False, "graves": None})
            )
        )
        start.start()
        deadline = time.monotonic() + 10
        while gw.app[POOL].running():  # the backup's watcher stops the idle worker
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert start.is_alive()  # held for the backup
    start.join(30)
    assert started == [200]
    graves = {"chunk": {"cards": [], "decks": [], "notes": []}}
    assert raw(gw.url, "sync/applyGraves", key, graves) == 200
    assert raw(gw.url, "sync/abort", key, {}) == 200
    device.add_note("after")
    assert sync_pushes(device)
    device.close()


def test_a_sync_cut_by_a_backup_is_not_in_the_snapshot_and_the_client_syncs_it_again(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.proxy import Proxy

    cognito.add_user("max", PASSWORD, "max@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "max", "max")
    before = device.note_fronts()
    # A client slow to send `sync/finish`: the sync stays open past the backup's --wait.
    finishing, go_on = threading.Event(), threading.Event()
    forward = Proxy._forward

    async def slow_finish(self: Proxy, request: Any, upstream_path: str, *args: Any) -> Any:
        if upstream_path == "sync/finish":
            finishing.set()
            await asyncio.to_thread(go_on.wait, 60)
        return await forward(self, request, upstream_path, *args)

    monkeypatch.setattr(Proxy, "_forward", slow_finish)
    for n in range(200):
        device.add_note(f"cut {n}")
    failures: list[BaseException] = []

    def sync() -> None:
        try:
            device.sync(media=False)
        except SyncError as exc:
            failures.append(exc)

    syncing = threading.Thread(target=sync)
    syncing.start()
    store = LocalStore(tmp_path / "backups")
    try:
        assert finishing.wait(60)
        taken = take(gw.config, store, wait=1)
    finally:
        go_on.set()
        syncing.join(60)
    assert taken.missed == {}
    # The stock server applies a sync's changes in one transaction, committed by `finish`:
    # stopped before it, the 200 notes it had received are not in the collection.
    assert snapshot_notes(store, taken.name, "max", tmp_path) == before
    # The gateway's 503 for the cut sync's finish (a fresh sync server would answer 409, "Only
    # one copy of Anki can sync to your account at once"); the user stays logged in.
    assert len(failures) == 1 and not is_auth_error(failures[0])
    assert "Please try again" in str(failures[0])
    monkeypatch.setattr(Proxy, "_forward", forward)
    assert sync_pushes(device)
    fresh = fresh_download(tmp_path, gw, "fresh", "max")
    assert fresh.note_fronts() == device.note_fronts() and len(fresh.note_fronts()) == 201
    device.close()
    fresh.close()


def test_an_account_whose_copy_fails_is_missed_and_every_other_account_is_still_backed_up(
    cognito, tmp_path, start_gateway
) -> None:
    gw, devices = synced_accounts(cognito, tmp_path, start_gateway, "aaa", "zoe")
    for name, device in zip(("aaa", "zoe"), devices, strict=True):
        device.close()
        gw.call(gw.app[POOL].stop(name))
    # aaa's collection is damaged on disk (a bad sector, a full disk while it was written):
    # its copy fails its check. That must cost aaa's copy, not everyone's.
    damaged = gw.registry.folder(gw.registry.get_by_name("aaa")) / "collection.anki2"
    with damaged.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 8192)
    store = LocalStore(tmp_path / "backups")
    taken = take(gw.config, store)
    assert list(taken.missed) == ["aaa"] and "copy failed" in taken.missed["aaa"]
    manifest = json.loads(store.read(f"snapshots/{taken.name}/manifest.json"))
    assert sorted(manifest["accounts"]) == ["zoe"] and list(manifest["missed"]) == ["aaa"]
    assert not store.keys(f"snapshots/{taken.name}/accounts/aaa")


def test_a_second_backup_of_one_data_folder_is_refused_and_two_nodes_keep_two_snapshots(
    cognito, tmp_path, start_gateway
) -> None:
    gw, (device,) = synced_accounts(cognito, tmp_path, start_gateway, "sam")
    device.close()
    node2 = start_gateway(cognito.config(tmp_path / "node2"))
    # A timer's run and an operator's, or two nodes sharing a destination, in one second: the
    # other backup starts while the first one is still uploading (its manifest not written).
    inner: dict[str, object] = {}

    class Overlapping(LocalStore):
        def put(self, key: str, path: Path) -> None:
            super().put(key, path)
            if not inner:
                with pytest.raises(BackupError, match="another backup of .* is running") as same:
                    take(gw.config, LocalStore(self.root), clock=5_000)
                inner["same"] = same.value
                inner["node2"] = take(node2.config, LocalStore(self.root), clock=5_000).name

    store = Overlapping(tmp_path / "backups")
    outer = take(gw.config, store, clock=5_000).name
    assert outer != inner["node2"]
    assert sorted(snapshots(store)) == sorted([outer, inner["node2"]])
    for name in (outer, inner["node2"]):
        manifest = json.loads(store.read(f"snapshots/{name}/manifest.json"))
        assert manifest["snapshot"] == name
        assert store.exists(f"snapshots/{name}/registry.sqlite3")
    assert sorted(json.loads(store.read(f"snapshots/{outer}/manifest.json"))["accounts"]) == ["sam"]


def test_a_backup_killed_while_it_holds_an_account_lets_it_go_and_leaves_no_copy_behind(
    cognito, tmp_path, start_gateway
) -> None:
    from gateway.backup import quiesce

    config = cognito.config(tmp_path / "data")
    gw, (device,) = synced_accounts(cognito, tmp_path, start_gateway, "kit")
    folder = gw.registry.folder(gw.registry.get_by_name("kit"))
    env = {**cli_env(cognito, config.data_dir), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    backup = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway", "backup", "--to", str(tmp_path / "backups")], env=env
    )
    deadline = time.monotonic() + 60
    while quiesce.wanted(folder) is None:  # it wants kit: its copy is under way or next
        assert backup.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    backup.kill()  # SIGKILL: no clean-up of its own
    backup.wait()
    assert quiesce.wanted(folder) is None  # the kernel dropped its want with it
    device.add_note("after the killed backup")
    assert sync_pushes(device)  # held no longer
    leftovers = [*(tmp_path / "tmp").iterdir(), *config.data_dir.glob("backup-scratch/*")]
    assert leftovers  # its copy of the registry at least

    done = run_cli(env, "backup", "--to", str(tmp_path / "backups"))
    assert done.returncode == 0, done.stderr
    # The next run cleared the killed one's copy (a timer killing runs must not fill the disk).
    assert [*(tmp_path / "tmp").iterdir(), *config.data_dir.glob("backup-scratch/*")] == []
    device.close()


def test_restoring_every_account_when_one_cannot_be_quiesced_changes_nothing(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.backup import quiesce
    from gateway.workers.lock import try_lock

    monkeypatch.setattr(quiesce, "STOP_MARGIN", 0.5)
    gw, (amy, zed) = synced_accounts(cognito, tmp_path, start_gateway, "amy", "zed")
    store = LocalStore(tmp_path / "backups")
    take(gw.config, store)
    amy.add_note("after the backup")
    assert sync_pushes(amy)
    gw.call(gw.app[POOL].stop("amy"))
    after = (gw.registry.folder(gw.registry.get_by_name("amy")) / "collection.anki2").read_bytes()
    gw.call(gw.app[POOL].stop("zed"))
    held = try_lock(gw.config.collections_dir, "zed")  # something that ignores a want
    assert held is not None
    try:
        with pytest.raises(BackupError, match="zed: its sync server did not stop .* nothing was"):
            restore(gw.config, store, wait=0.5)
    finally:
        held.release()
    # Refused as a whole: amy (restored first, by name) keeps the note she synced since.
    now = (gw.registry.folder(gw.registry.get_by_name("amy")) / "collection.anki2").read_bytes()
    assert now == after
    for client in (amy, zed):
        client.close()


def test_a_device_that_synced_after_the_snapshot_is_asked_for_a_full_sync_after_a_restore(
    cognito, tmp_path, start_gateway
) -> None:
    gw, (device,) = synced_accounts(cognito, tmp_path, start_gateway, "pia")
    store = LocalStore(tmp_path / "backups")
    take(gw.config, store)
    restored = device.note_fronts()
    device.add_note("synced after the snapshot")
    assert sync_pushes(device)
    gw.call(gw.app[POOL].stop("pia"))
    restore(gw.config, store)
    # The device is ahead of the restored collection. A normal sync would fail its sanity check
    # ("Please use Check Database"); Anki's answer for diverged copies is to ask the user which
    # side wins (a full sync), as after a schema change.
    out = device.col.sync_collection(device.auth, sync_media=False)
    assert out.required == Required.FULL_SYNC
    device.full_sync(upload=False)  # the user keeps the restored collection
    assert device.note_fronts() == restored
    fresh = fresh_download(tmp_path, gw, "fresh", "pia")
    assert fresh.note_fronts() == restored
    for client in (device, fresh):
        client.close()


def test_an_account_too_big_for_the_free_space_is_missed_rather_than_filling_the_data_disk(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    from gateway.ops import readiness

    gw, (big, small) = synced_accounts(cognito, tmp_path, start_gateway, "big", "small")
    big.add_media("large.bin", os.urandom(4 << 20))
    big.sync()
    floor = gw.config.server.min_free_disk_megs << 20
    # The data disk (where the copy goes, and where every user's sync writes) has the floor
    # /ready needs plus 2 MiB: a 4 MiB account must not take it below the floor.
    monkeypatch.setattr(readiness, "free_bytes", lambda folder: floor + (2 << 20))
    taken = take(gw.config, LocalStore(tmp_path / "backups"))
    assert list(taken.missed) == ["big"]
    assert "would leave less than server.min_free_disk_megs (1024 MiB) free" in taken.missed["big"]
    assert not (gw.config.data_dir / "backup-scratch").exists()
    for client in (big, small):
        client.close()


def test_a_backup_to_s3_asks_for_the_stored_media_once_not_once_per_file(
    cognito, tmp_path, start_gateway
) -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(
        Bucket="anki-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    gw, (device,) = synced_accounts(cognito, tmp_path, start_gateway, "mia")
    for n in range(20):
        device.add_media(f"m{n}.bin", os.urandom(1_000))
    device.sync()
    store = S3Store("anki-backups", "gw1", client=s3)
    take(gw.config, store)
    calls: list[str] = []
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    taken = take(gw.config, store)
    manifest = json.loads(store.read(f"snapshots/{taken.name}/manifest.json"))
    assert len(manifest["accounts"]["mia"]["media"]) == 20
    # Each HEAD is a round trip (tens of ms to S3): one per media file made an account with
    # 10,000 files cost minutes every run, even with nothing new to store.
    assert calls.count("HeadObject") == 0
    assert calls.count("PutObject") == 4  # registry, collection, media database, manifest
    device.close()


@pytest.mark.parametrize("case", ["beneath a file", "a file"])
def test_a_destination_that_cannot_be_written_is_one_line_not_a_traceback(
    cognito, tmp_path, case
) -> None:
    # As in the container: `backup --to /backups` with nothing mounted there, as uid 10001 (it
    # cannot create a folder at the root of the file system; root here can, hence these cases).
    (tmp_path / "data").mkdir()
    (tmp_path / "file").write_text("")
    destination = tmp_path / "file" / "backups" if case == "beneath a file" else tmp_path / "file"
    result = run_cli(cli_env(cognito, tmp_path / "data"), "backup", "--to", str(destination))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"anki-cognito-gateway backup: cannot write {destination}: ")
    assert "uid 10001" in line
