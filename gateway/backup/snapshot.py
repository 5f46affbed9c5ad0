"""Taking a consistent snapshot of the gateway's state while people keep syncing.

    take(config, store, *, include_secret=False, keep=None, wait=60) -> Taken
        Taken.name (the snapshot), Taken.missed ({account: why} for accounts not backed up),
        Taken.untrusted ({snapshot: why}: manifests `keep` found not verifying, left alone:
        retention.py)
        raises BackupError (no backup.manifest_key, secret refused, the registry's copy
        failed its check); an account whose copy fails (a damaged file, a full scratch disk)
        is missed instead

Layout in the store:
    snapshots/<name>/registry.sqlite3          (the SQLite registry only: DynamoDB backs
                                               itself up, point-in-time recovery)
    snapshots/<name>/accounts/<account>/collection.anki2, media.db
    snapshots/<name>/gateway.secret            (only with include_secret, see below)
    snapshots/<name>/manifest.json             (written last: a snapshot without it is partial;
                                               every file's SHA-256, signed: manifest.py)
    blobs/<sha256>                             media files, shared by every snapshot

Accounts are copied one at a time while users keep syncing. A running stock server holds its
account's `media.db` and (after a normal sync) `collection.anki2` open in SQLite's exclusive
locking mode, so nothing can read them consistently (measured; quiesce.py): the account's
server has to stop for its copy. Weighed and chosen:
- waiting for idle servers to stop by themselves (and skipping busy ones, as before) never
  copies an account that syncs at least every `workers.idle_timeout_seconds`;
- claiming the account's worker lock alone (workers/lock.py) cannot stop a running server and
  races the gateway for the lock;
- copying the files raw (database plus WAL) from under an idle server still needs its requests
  held, and reads files a process with an exclusive lock may write; stopping the server costs
  little more (a new one starts in about 0.1-0.2 s);
- a control socket to each gateway needs every process found and listening; flock files are
  already how gateway processes agree on an account, and vanish with their holder;
- so the backup *asks* (quiesce.py, flock files in the account's folder, so it holds across any
  number of gateway processes sharing the data folder and is dropped if the backup dies): it
  posts its want, every gateway holds that account's new requests (gate.py), the gateway
  running its server stops it once no process has a request in flight or a collection sync
  open, and the backup takes the worker lock, copies to scratch (`<data>/backup-scratch/`, one
  account at a time), lets go, and only then uploads. A sync under way finishes first, so the
  copy holds the last completed sync.
Bounds: an account's requests and syncs may delay its copy by `wait` seconds; then its server is
stopped regardless (a request cut so gets 502, a sync cut so 503 on its next step: Anki says
"try again" and keeps the user logged in). A constantly syncing client therefore keeps neither
itself nor anyone else out of a backup: each account costs at most `wait` +
`quiesce.STOP_MARGIN` seconds. An account whose worker lock is still not free then (a gateway
that does not answer the want, or another backup copying it) is *missed*: named in the result,
the manifest, the state file and the metrics, never copied torn; so is one whose copy fails
(a damaged file) or would leave less than `server.min_free_disk_megs` free on the data disk
(the scratch copy is there, and a full data disk fails every user's sync). Requests held
meanwhile wait up to 20 s (gate.HOLD_SECONDS), then get 503.
One backup runs per data folder at a time (RUN_LOCK; another is refused with BackupError):
two would each miss the accounts the other holds, and one's pruning could delete media the
other's snapshot is about to list. Backups from several nodes to one destination must not
prune it (each node its own prefix, README).
Accounts without a folder on this disk (never synced, or kept on another node) are left out.
SQLite files are copied with SQLite's online backup API (https://sqlite.org/backup.html) and
checked (PRAGMA quick_check) before they are stored; the registry is copied the same way while
the gateway runs. Media files are content-addressed: a file already in `blobs/` (listed once
per run, not asked for file by file: a round trip each on S3) is not stored again.
The gateway secret (it derives every host key) goes only to a store marked for secrets: an
object named SECRETS-OK (store.py) that an operator creates by hand at the destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.backup import quiesce
from gateway.backup.manifest import SQLITE_FILES, seal
from gateway.backup.retention import prune
from gateway.backup.store import SECRETS_MARK, Store
from gateway.config import Config
from gateway.ops import readiness
from gateway.registry import REGISTRY_FILE, Account, Registry, SqliteRegistry, open_registry
from gateway.workers.collectionfile import unicase
from gateway.workers.credentials import SECRET_FILE
from gateway.workers.lock import cut_off, try_flock

log = logging.getLogger("gateway.backup")
_MIB = 1024 * 1024


class BackupError(Exception):
    """The backup (or restore) cannot be done; the message says why and what to do."""


def check(path: Path) -> str:
    """SQLite's quick_check of a copy ("ok" when sound). The quick form: it checks the file's
    structure without re-sorting Anki's indexes (a restore runs the full check, restore.py)."""
    db = sqlite3.connect(path)
    try:
        db.create_collation("unicase", unicase)
        return str(db.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        db.close()


def manifest_key(config: Config) -> bytes:
    """The key manifests are signed with; BackupError when it is not configured."""
    if config.backup.manifest_key is None:
        raise BackupError(
            "backup.manifest_key is not set (GATEWAY_BACKUP_MANIFEST_KEY or"
            " GATEWAY_BACKUP_MANIFEST_KEY_FILE): snapshots are signed with it and restores"
            " check them with it. Set one (at least 32 characters) and keep it away from the"
            " backup store"
        )
    return config.backup.manifest_key.reveal().encode()


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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _name(clock: float) -> str:
    """`<UTC time to the millisecond>Z-<random>`, e.g. 20261130T020000.123Z-3fa9c1: sorts by
    start time, and two backups started at once (a timer's and an operator's) never write into
    one snapshot (its manifest, the only thing a name check could see, is written last)."""
    seconds = time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock))
    return f"{seconds}.{int(clock * 1000) % 1000:03d}Z-{secrets.token_hex(3)}"


async def _accounts(registry: Registry) -> list[Account]:
    try:
        return await registry.all()
    finally:
        await registry.close()


@dataclass(frozen=True)
class Taken:
    name: str
    #: Accounts not backed up, and why (module doc, "Bounds").
    missed: dict[str, str] = field(default_factory=dict)
    #: Snapshots in the store whose manifest does not verify (retention.prune), and why.
    untrusted: dict[str, str] = field(default_factory=dict)


def take(
    config: Config,
    store: Store,
    *,
    include_secret: bool = False,
    keep: int | None = None,
    wait: float = 60.0,
    clock: float | None = None,
) -> Taken:
    if include_secret and not store.exists(SECRETS_MARK):
        raise BackupError(
            f"refusing to copy the gateway secret to {store.url}: it is not marked for secrets."
            f" Create an empty {SECRETS_MARK} there first if it is as protected as the secret."
        )
    if keep is not None and keep < 1:
        raise BackupError("--keep must be at least 1")
    key = manifest_key(config)
    with running(config.data_dir) as tmp:
        name = _name(time.time() if clock is None else clock)
        prefix = f"snapshots/{name}"
        manifest: dict[str, object] = {"snapshot": name, "created": time.time(), "registry": None}
        accounts: dict[str, object] = {}
        missed: dict[str, str] = {}
        new_blobs = 0
        stored = {key.split("/")[-1] for key in store.keys("blobs")}  # one listing
        floor = config.server.min_free_disk_megs * _MIB
        if config.registry.backend == "sqlite":
            registry_copy = tmp / REGISTRY_FILE
            sqlite_copy(config.data_dir / REGISTRY_FILE, registry_copy)
            manifest["registry"] = sha256(registry_copy)
            store.put(f"{prefix}/{REGISTRY_FILE}", registry_copy)
            registry: Registry = SqliteRegistry(registry_copy, tmp / "unused-collections")
        else:  # DynamoDB keeps its own backups (point-in-time recovery, deploy/dynamodb.yaml)
            registry = open_registry(config)
        for account in asyncio.run(_accounts(registry)):
            if not (config.collections_dir / account.name).is_dir():
                # Never synced, or (on a cluster) kept on another node's disk: nothing here.
                continue
            copy = tmp / "account"
            why = _copy_quiesced(config.collections_dir, account.name, copy, wait, floor)
            if why is not None:
                missed[account.name] = why
                log.warning("account not backed up", extra={"account": account.name, "why": why})
            else:
                files, media, added = _store_account(store, prefix, account.name, copy, stored)
                accounts[account.name] = {"files": files, "media": media, "sub": account.sub}
                new_blobs += added
            shutil.rmtree(copy, ignore_errors=True)
        manifest["accounts"] = accounts
        manifest["missed"] = missed
        manifest["secret"] = include_secret
        manifest["secret_sha256"] = None
        if include_secret:
            manifest["secret_sha256"] = sha256(config.data_dir / SECRET_FILE)
            store.put(f"{prefix}/gateway.secret", config.data_dir / SECRET_FILE)
        store.write(f"{prefix}/manifest.json", seal(manifest, key))
        log.info(
            "backup taken",
            extra={
                "snapshot": name,
                "to": store.url,
                "accounts": len(accounts),
                "missed": len(missed),
                "new_media": new_blobs,
            },
        )
        untrusted = {} if keep is None else prune(store, keep, key).untrusted
        for snapshot, why in untrusted.items():
            log.warning("snapshot left alone by --keep", extra={"snapshot": snapshot, "why": why})
        _record(config, name, missed)
    return Taken(name, missed, untrusted)


#: In the data folder: the last snapshot taken, read by the metrics (gateway_backup_*).
STATE_FILE = "backup-state.json"
#: In the data folder: held (flock) while a backup runs on it; the run's local copies.
RUN_LOCK = ".gateway-backup-run.lock"
SCRATCH = "backup-scratch"


@contextlib.contextmanager
def running(data_dir: Path) -> Iterator[Path]:
    """This data folder's one backup run: its lock (dropped by the kernel if the run dies) and
    an empty scratch folder, deleted afterwards; a killed run's copy is deleted by the next
    run. BackupError when another backup (or restore) of this data folder runs: two backups at
    once would each miss the accounts the other holds, and one's pruning could delete media the
    other's snapshot is about to list; a restore and a backup would each hold accounts the
    other waits for."""
    fd = try_flock(data_dir / RUN_LOCK)
    if fd is None:
        raise BackupError(
            f"another backup of {data_dir} is running, or a restore; let it finish (one at a"
            " time per data folder)"
        )
    scratch = data_dir / SCRATCH
    try:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        os.close(fd)


def _record(config: Config, name: str, missed: dict[str, str]) -> None:
    state = {"snapshot": name, "finished": time.time(), "missed": sorted(missed)}
    target = config.data_dir / STATE_FILE
    partial = target.with_name(STATE_FILE + ".partial")
    partial.write_text(json.dumps(state))
    partial.replace(target)


def last_backup(data_dir: Path) -> dict[str, float] | None:
    """{"finished": unix time, "missed": accounts not backed up} of the last backup, or None."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        missed = state["missed"] if "missed" in state else state["busy"]  # older state files
        count = len(missed) if isinstance(missed, list) else float(missed)
        return {"finished": float(state["finished"]), "missed": float(count)}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _copy_quiesced(
    collections_dir: Path, name: str, target: Path, wait: float, floor: int
) -> str | None:
    """Copy the account's files into `target` with its sync server stopped (module doc), if
    that leaves `floor` bytes free on its disk (the data disk: a full one fails everyone's
    syncs); None when done, else why not."""
    began = time.monotonic()
    try:
        need, free = account_bytes(collections_dir / name), readiness.free_bytes(target.parent)
        if free - need < floor:
            return (
                f"its copy ({need // _MIB} MiB) would leave less than server.min_free_disk_megs"
                f" ({floor // _MIB} MiB) free on the data disk ({free // _MIB} MiB free)"
            )
        held = quiesce.hold(collections_dir, name, wait)
        if isinstance(held, str):
            return held
        with held:
            copy_files(held.folder, target)
    except (BackupError, OSError, sqlite3.Error) as exc:
        # One account's damaged file or a full scratch disk costs that account's copy, not the
        # backup of every account after it.
        return f"its copy failed: {exc}"
    log.info(
        "account copied", extra={"account": name, "ms": round((time.monotonic() - began) * 1000)}
    )
    return None


def account_bytes(folder: Path) -> int:
    """Bytes of what copy_files() copies from `folder` (SQLite files with their WAL)."""
    files = [folder / (f + suffix) for f in SQLITE_FILES for suffix in ("", "-wal")]
    media_dir = folder / "media"
    if media_dir.is_dir():
        files.extend(media_dir.iterdir())
    return sum(p.lstat().st_size for p in files if p.is_file() and not p.is_symlink())


def copy_files(folder: Path, target: Path) -> None:
    """The account's SQLite files (online backup API, checked) and media files, as they are
    now (no server runs: the caller holds the account's lock). BackupError when an import or a
    restore of the account was cut off half-way (workers/lock.cut_off): its files are not one
    consistent set, and a copy of them would be a torn snapshot or export."""
    why = cut_off(folder)
    if why is not None:
        raise BackupError(why)
    target.mkdir()
    for filename in SQLITE_FILES:
        if (folder / filename).is_file():
            sqlite_copy(folder / filename, target / filename)
    (target / "media").mkdir()
    media_dir = folder / "media"
    if media_dir.is_dir():
        for entry in media_dir.iterdir():
            if entry.is_file() and not entry.is_symlink():
                shutil.copyfile(entry, target / "media" / entry.name)


def _store_account(
    store: Store, prefix: str, name: str, copy: Path, stored: set[str]
) -> tuple[dict[str, str], dict[str, str], int]:
    """Store one account's copy; returns its SQLite files and its media ({file name: sha256})
    and how many media files were new to the store. `stored`: the digests in `blobs/` (listed
    once per run, not asked per file), updated."""
    files: dict[str, str] = {}
    for filename in SQLITE_FILES:
        if (copy / filename).is_file():
            files[filename] = sha256(copy / filename)
            store.put(f"{prefix}/accounts/{name}/{filename}", copy / filename)
    media: dict[str, str] = {}
    new_blobs = 0
    for entry in sorted((copy / "media").iterdir()):
        digest = sha256(entry)
        if digest not in stored:
            store.put(f"blobs/{digest}", entry)
            stored.add(digest)
            new_blobs += 1
        media[entry.name] = digest
    return files, media, new_blobs
