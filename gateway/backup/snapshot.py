"""Taking a consistent snapshot of the gateway's state while people keep syncing.

    take(config, store, *, include_secret=False, keep=None) -> str (the snapshot's name)
        raises BackupError (secret refused, a copy failed its integrity check)

Layout in the store:
    snapshots/<name>/registry.sqlite3          (the SQLite registry only: DynamoDB backs
                                               itself up, point-in-time recovery)
    snapshots/<name>/accounts/<account>/collection.anki2, media.db
    snapshots/<name>/gateway.secret            (only with include_secret, see below)
    snapshots/<name>/manifest.json             (written last: a snapshot without it is partial)
    blobs/<sha256>                             media files, shared by every snapshot

Each account is copied while holding its lock (workers/lock.py), so no sync server runs for it
meanwhile: the stock server opens a collection with SQLite's exclusive locking mode, so nothing
can read it while its server runs (measured: a copy then waits for ever). An account whose sync
server is running is skipped and named in the result ("busy"): it is copied at the next run
(servers stop after `workers.idle_timeout_seconds` without requests), and a sync that wants to
start meanwhile waits for the copy (at most `workers.start_timeout_seconds`, else 503). SQLite
files are copied with SQLite's online backup API (https://sqlite.org/backup.html) and checked
(PRAGMA quick_check) before they are stored; the registry is copied the same way while the
gateway runs.
Accounts without a folder on this disk (never synced, or kept on another node) are left out.
Media files are content-addressed: a file already in `blobs/` is not copied again.
The gateway secret (it derives every host key) goes only to a store marked for secrets: an
object named SECRETS-OK (store.py) that an operator creates by hand at the destination.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.backup.store import SECRETS_MARK, Store
from gateway.config import Config
from gateway.credentials import SECRET_FILE
from gateway.registry import REGISTRY_FILE, Account, Registry, SqliteRegistry, open_registry
from gateway.workers.lock import try_lock

log = logging.getLogger("gateway.backup")
SQLITE_FILES = ("collection.anki2", "media.db")


class BackupError(Exception):
    """The backup (or restore) cannot be done; the message says why and what to do."""


def _unicase(a: str, b: str) -> int:
    """Anki's `unicase` collation (case-insensitive), close enough to read the file."""
    x, y = a.casefold(), b.casefold()
    return (x > y) - (x < y)


def check(path: Path) -> str:
    """SQLite's quick_check of a copy ("ok" when sound). The quick form: it checks the file's
    structure without re-sorting Anki's indexes by a collation only Anki implements exactly."""
    db = sqlite3.connect(path)
    try:
        db.create_collation("unicase", _unicase)
        return str(db.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        db.close()


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database, checked; BackupError if it is not ok."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    result = check(target)
    if result != "ok":
        raise BackupError(f"{source}: the copy fails its integrity check ({result})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _name(store: Store, clock: float) -> str:
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock))
    name, n = base, 1
    while store.exists(f"snapshots/{name}/manifest.json"):
        n += 1
        name = f"{base}-{n}"
    return name


async def _accounts(registry: Registry) -> list[Account]:
    try:
        return await registry.all()
    finally:
        await registry.close()


@dataclass(frozen=True)
class Taken:
    name: str
    #: Accounts skipped because their sync server was running (copied next time).
    busy: tuple[str, ...] = ()


def take(
    config: Config,
    store: Store,
    *,
    include_secret: bool = False,
    keep: int | None = None,
    clock: float | None = None,
) -> Taken:
    if include_secret and not store.exists(SECRETS_MARK):
        raise BackupError(
            f"refusing to copy the gateway secret to {store.url}: it is not marked for secrets."
            f" Create an empty {SECRETS_MARK} there first if it is as protected as the secret."
        )
    name = _name(store, time.time() if clock is None else clock)
    prefix = f"snapshots/{name}"
    manifest: dict[str, object] = {"snapshot": name, "created": time.time(), "accounts": {}}
    accounts: dict[str, object] = {}
    new_blobs = 0
    with tempfile.TemporaryDirectory(prefix="gateway-backup-") as scratch:
        tmp = Path(scratch)
        if config.registry.backend == "sqlite":
            registry_copy = tmp / "registry.sqlite3"
            sqlite_copy(config.data_dir / REGISTRY_FILE, registry_copy)
            store.put(f"{prefix}/{REGISTRY_FILE}", registry_copy)
            registry: Registry = SqliteRegistry(registry_copy, tmp / "unused-collections")
        else:  # DynamoDB keeps its own backups (point-in-time recovery, deploy/dynamodb.yaml)
            registry = open_registry(config)
        busy = []
        for account in asyncio.run(_accounts(registry)):
            if not (config.collections_dir / account.name).is_dir():
                # Never synced, or (on a cluster) kept on another node's disk: nothing here.
                continue
            lock = try_lock(config.collections_dir, account.name)
            if lock is None:
                busy.append(account.name)
                continue
            try:
                new_blobs += _copy_account(config, store, prefix, account.name, tmp, accounts)
            finally:
                lock.release()
            accounts[account.name]["sub"] = account.sub  # type: ignore[index]
        manifest["accounts"] = accounts
        manifest["busy"] = busy
        manifest["secret"] = include_secret
        if include_secret:
            store.put(f"{prefix}/gateway.secret", config.data_dir / SECRET_FILE)
        store.write(f"{prefix}/manifest.json", json.dumps(manifest, indent=1).encode())
    log.info(
        "backup taken",
        extra={
            "snapshot": name,
            "to": store.url,
            "accounts": len(accounts),
            "busy": len(busy),
            "new_media": new_blobs,
        },
    )
    if keep is not None:
        prune(store, keep)
    _record(config, name, busy)
    return Taken(name, tuple(busy))


#: In the data folder: the last snapshot taken, read by the metrics (gateway_backup_*).
STATE_FILE = "backup-state.json"


def _record(config: Config, name: str, busy: list[str]) -> None:
    state = {"snapshot": name, "finished": time.time(), "busy": len(busy)}
    target = config.data_dir / STATE_FILE
    partial = target.with_name(STATE_FILE + ".partial")
    partial.write_text(json.dumps(state))
    partial.replace(target)


def last_backup(data_dir: Path) -> dict[str, float] | None:
    """{"finished": unix time, "busy": accounts skipped} of the last backup, or None."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        return {"finished": float(state["finished"]), "busy": float(state["busy"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _copy_account(
    config: Config, store: Store, prefix: str, name: str, tmp: Path, accounts: dict[str, object]
) -> int:
    """Copy one account (its lock held); returns how many media files were new to the store."""
    new_blobs = 0
    folder = config.collections_dir / name
    for filename in SQLITE_FILES:
        if (folder / filename).is_file():
            copy = tmp / filename
            sqlite_copy(folder / filename, copy)
            store.put(f"{prefix}/accounts/{name}/{filename}", copy)
            copy.unlink()
    media: dict[str, str] = {}
    media_dir = folder / "media"
    if media_dir.is_dir():
        for entry in sorted(media_dir.iterdir()):
            if not entry.is_file() or entry.is_symlink():
                continue
            # Copied first, hashed from the copy: a file changing meanwhile is stored under the
            # hash of what was copied.
            copy = tmp / "media-file"
            shutil.copyfile(entry, copy)
            digest = _sha256(copy)
            if not store.exists(f"blobs/{digest}"):
                store.put(f"blobs/{digest}", copy)
                new_blobs += 1
            media[entry.name] = digest
            copy.unlink()
    accounts[name] = {"media": media}
    return new_blobs


def snapshots(store: Store) -> list[str]:
    """Complete snapshots (with a manifest), oldest first."""
    return sorted(
        key.split("/")[1]
        for key in store.keys("snapshots")
        if key.count("/") == 2 and key.endswith("/manifest.json")
    )


def prune(store: Store, keep: int) -> list[str]:
    """Keep the newest `keep` snapshots; delete the rest and media no kept snapshot uses."""
    if keep < 1:
        raise BackupError("--keep must be at least 1")
    names = snapshots(store)
    doomed = names[:-keep]
    for name in doomed:
        # The manifest first: a snapshot half deleted is no longer listed as complete.
        store.delete(f"snapshots/{name}/manifest.json")
        for key in store.keys(f"snapshots/{name}"):
            store.delete(key)
    used: set[str] = set()
    for name in names[-keep:]:
        manifest = json.loads(store.read(f"snapshots/{name}/manifest.json"))
        for account in manifest["accounts"].values():
            used.update(account["media"].values())
    for key in store.keys("blobs"):
        if key.split("/")[-1] not in used:
            store.delete(key)
    return doomed
