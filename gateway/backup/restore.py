"""Putting accounts back from a snapshot (snapshot.py).

    restore(config, store, snapshot=None, accounts=None, *, wait=60) -> list[str]
        (the accounts restored); raises BackupError (no such snapshot or account, an account
        that could not be quiesced: then nothing was restored)

Each account is quiesced as for a backup (quiesce.hold: the gateways stop its sync server once
its syncs under way end, or after `wait` seconds, and hold its requests; the restore holds its
worker lock), every chosen account before any is touched, so the gateway keeps running and
nobody is logged out. The account's collection, media database and media files are replaced
by the snapshot's; its registry row is not touched (the same keys keep working). Its schema
is marked changed, so each device that synced after the snapshot is asked for a full sync
(upload or download: the user picks which copy wins) rather than failing its next normal
sync. Requests of an account restored early wait (then 503) while later ones are quiesced.
The registry itself is restored by hand, with every gateway stopped (README, "Backups").
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

from gateway.backup import quiesce
from gateway.backup.retention import snapshots
from gateway.backup.snapshot import SQLITE_FILES, BackupError
from gateway.backup.store import Store
from gateway.config import Config
from gateway.naming import is_safe
from gateway.workers.lock import account_dir


def restore(
    config: Config,
    store: Store,
    snapshot: str | None = None,
    accounts: list[str] | None = None,
    *,
    wait: float = 60.0,
) -> list[str]:
    available = snapshots(store)
    if not available:
        raise BackupError(f"no complete snapshot in {store.url}")
    name = snapshot or available[-1]
    if name not in available:
        raise BackupError(f"no snapshot {name!r} in {store.url}; there are: {', '.join(available)}")
    manifest = json.loads(store.read(f"snapshots/{name}/manifest.json"))
    chosen = accounts or sorted(manifest["accounts"])
    missing = [a for a in chosen if a not in manifest["accounts"]]
    if missing:
        raise BackupError(f"snapshot {name} has no account {', '.join(missing)}")
    for account in chosen:
        if not is_safe(account):
            raise BackupError(f"unsafe account name {account!r} in the manifest")
        for filename in manifest["accounts"][account]["media"]:
            if "/" in filename or "\0" in filename or filename in ("", ".", ".."):
                raise BackupError(f"{account}: bad media file name {filename!r} in the manifest")
    # Every chosen account quiesced before any is touched, as for a backup (quiesce.py: the
    # gateways stop its sync server and hold its requests): one that cannot be refuses the
    # whole restore, never leaves it half done.
    with contextlib.ExitStack() as stack:
        for account in chosen:
            held = quiesce.hold(config.collections_dir, account, wait)
            if isinstance(held, str):
                raise BackupError(
                    f"{account}: {held}; nothing was restored. Try again, with a longer --wait"
                    " if its syncs take long"
                )
            stack.enter_context(held)
        for account in chosen:
            _restore_one(config, store, name, account, manifest["accounts"][account]["media"])
    return chosen


def _restore_one(
    config: Config, store: Store, snapshot: str, account: str, media: dict[str, str]
) -> None:
    """Replace the account's files by the snapshot's; the caller has it quiesced."""
    folder = account_dir(config.collections_dir, account)
    for filename in SQLITE_FILES:
        for suffix in ("", "-wal", "-shm"):
            (folder / (filename + suffix)).unlink(missing_ok=True)
        key = f"snapshots/{snapshot}/accounts/{account}/{filename}"
        if store.exists(key):
            store.get(key, folder / filename)
    if (folder / "collection.anki2").is_file():
        _ask_for_full_sync(folder / "collection.anki2")
    media_dir = folder / "media"
    if media_dir.is_dir():
        shutil.rmtree(media_dir)
    media_dir.mkdir()
    for filename, digest in media.items():  # names checked by restore()
        store.get(f"blobs/{digest}", media_dir / filename)


def _ask_for_full_sync(collection: Path) -> None:
    """Mark the restored collection's schema as changed now (`col.scm`, milliseconds), as Anki
    does before a one-way sync: a device that synced after the snapshot is then asked which side
    wins (upload or download) instead of failing the normal sync's sanity check ("Please use
    Check Database")."""
    db = sqlite3.connect(collection)
    try:
        with db:
            db.execute("UPDATE col SET scm = ?", (int(time.time() * 1000),))
    finally:
        db.close()
