"""Putting accounts back from a snapshot (snapshot.py), every chosen account or none.

    restore(config, store, snapshot=None, accounts=None, *, exclude=(), wait=60) -> list[str]
        (the accounts restored); raises BackupError (no key, no such snapshot or account, a
        snapshot that fails its checks, too little free space to stage it, an account that
        could not be quiesced: then nothing was restored, and the message says why)

In order, so that a failure anywhere leaves every account exactly as it was:
1. The manifest's MAC and shape are checked (manifest.py, under `backup.manifest_key`), and
   the data disk's free space (readiness.free_bytes) against what staging writes (the sizes
   the store lists for the chosen accounts' files and media) plus `server.min_free_disk_megs`:
   too little refuses the restore before any folder is made or file written.
2. Each chosen account is STAGED while its users keep syncing: its files are downloaded into
   `<account>/.gateway-restore-new/` and checked (verify.stage: each file's SHA-256, SQLite's
   integrity check, no trigger, view or virtual table; nothing of the file runs), and the
   staged collection's schema is marked changed, so each device that synced after the
   snapshot is asked for a full sync (upload or download: the user picks which copy wins)
   rather than failing its next normal sync (Anki's own step before a one-way sync). The
   first account that fails any of it refuses the whole restore; the others can be restored
   with --exclude.
3. Every chosen account is quiesced as for a backup (quiesce.hold: the gateways stop its sync
   server once its syncs under way end, or after `wait` seconds, and hold its requests; the
   restore holds its worker lock), so the gateway keeps running and nobody is logged out.
4. The staged files replace the accounts' in one step per account, all accounts or none
   (swap.py: renames, undone on any failure; a killed restore is undone by the next).
A chosen account with no folder here (moved to another node, or deleted, since the snapshot)
gets one for its staging; a restore that fails removes it again.
The registry row is not touched (the same keys keep working). Requests of the chosen accounts
wait (then 503) during steps 3-4 only. The registry itself is restored by hand, with every
gateway stopped (docs/operations/backups.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from gateway.backup import quiesce, swap
from gateway.backup.retention import snapshots
from gateway.backup.snapshot import BackupError, manifest_key, running
from gateway.backup.store import Store
from gateway.backup.verify import read_manifest, stage
from gateway.config import Config
from gateway.ops import readiness
from gateway.workers.lock import account_path, make_account_dir

log = logging.getLogger("gateway.backup")
#: In an account folder while a restore stages its files there.
STAGING = ".gateway-restore-new"
_MIB = 1024 * 1024


def restore(
    config: Config,
    store: Store,
    snapshot: str | None = None,
    accounts: list[str] | None = None,
    *,
    exclude: tuple[str, ...] = (),
    wait: float = 60.0,
) -> list[str]:
    key = manifest_key(config)
    available = snapshots(store)
    if not available:
        raise BackupError(f"no complete snapshot in {store.url}")
    name = snapshot or available[-1]
    if name not in available:
        raise BackupError(f"no snapshot {name!r} in {store.url}; there are: {', '.join(available)}")
    manifest = read_manifest(store, name, key)
    listed = manifest["accounts"]
    missing = [a for a in [*(accounts or ()), *exclude] if a not in listed]
    if missing:
        raise BackupError(f"snapshot {name} has no account {', '.join(missing)}")
    chosen = [a for a in (accounts or sorted(listed)) if a not in exclude]
    if not chosen:
        raise BackupError("no account left to restore")
    _check_space(config, store, name, {a: listed[a] for a in chosen})
    with running(config.data_dir):
        # Folders this restore makes (an account moved away or deleted since the snapshot) are
        # its own: a restore that fails takes them away again (`_unmake`).
        made = [a for a in chosen if not os.path.lexists(account_path(config.collections_dir, a))]
        folders = {account: make_account_dir(config.collections_dir, account) for account in chosen}
        restored = False
        try:
            for account in chosen:
                _stage(store, name, account, listed[account], folders[account] / STAGING)
            # Every chosen account quiesced before any is touched: one that cannot be refuses
            # the whole restore.
            with contextlib.ExitStack() as stack:
                for account in chosen:
                    held = quiesce.hold(config.collections_dir, account, wait)
                    if isinstance(held, str):
                        raise BackupError(
                            f"{account}: {held}; nothing was restored. Try again, with a longer"
                            " --wait if its syncs take long"
                        )
                    stack.enter_context(held)
                for account in chosen:
                    if swap.recover(folders[account]):
                        log.warning("a cut-off restore undone", extra={"account": account})
                try:
                    swap.swap_all([(folders[a], folders[a] / STAGING) for a in chosen])
                except OSError as exc:
                    raise BackupError(
                        f"the files could not be swapped ({exc.strerror or exc}); nothing was"
                        " restored, every account is as it was"
                    ) from None
            restored = True
        finally:
            for folder in folders.values():
                shutil.rmtree(folder / STAGING, ignore_errors=True)
            if not restored:
                for account in made:
                    _unmake(folders[account])
    log.info("restored", extra={"snapshot": name, "accounts": len(chosen)})
    return chosen


def _unmake(folder: Path) -> None:
    """Remove a folder the failed restore made, if it holds only the gateway's own files (its
    lock files); anything else came from elsewhere meanwhile and stays."""
    with contextlib.suppress(OSError):
        if all(entry.name.startswith(".gateway-") for entry in folder.iterdir()):
            shutil.rmtree(folder)


def staged_bytes(store: Store, snapshot: str, chosen: dict[str, dict[str, Any]]) -> int:
    """Bytes the staging of `chosen` ({account: manifest entry}) writes: each account's SQLite
    files and each media file it lists (a blob listed twice is staged twice), by the sizes the
    store lists (one listing of the snapshot's files, one of the blobs)."""
    files = store.sizes(f"snapshots/{snapshot}/accounts")
    blobs = store.sizes("blobs")
    return sum(
        files.get(f"snapshots/{snapshot}/accounts/{account}/{name}", 0)
        for account, entry in chosen.items()
        for name in entry["files"]
    ) + sum(
        blobs.get(f"blobs/{digest}", 0)
        for entry in chosen.values()
        for digest in entry["media"].values()
    )


def _check_space(
    config: Config, store: Store, snapshot: str, chosen: dict[str, dict[str, Any]]
) -> None:
    """BackupError, before anything is touched, when staging `chosen` on the data disk would
    leave less than `server.min_free_disk_megs` free (the old files stay until the swap, and a
    full data disk fails every user's sync)."""
    need = staged_bytes(store, snapshot, chosen)
    free = readiness.free_bytes(config.collections_dir)
    floor = config.server.min_free_disk_megs * _MIB
    if free - need < floor:
        raise BackupError(
            f"not enough free space on the data disk: staging {len(chosen)} account(s) needs"
            f" {-(-need // _MIB)} MiB and {floor // _MIB} MiB must stay free"
            f" (server.min_free_disk_megs), {free // _MIB} MiB are free; nothing was restored."
            " Free some space, or restore fewer accounts at a time (--account)"
        )


def _stage(store: Store, snapshot: str, account: str, entry: dict[str, Any], target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)  # a killed run's
    problem = stage(store, snapshot, account, entry, target, int(time.time() * 1000))
    if problem is not None:
        raise BackupError(
            f"{account}: {problem}. Nothing was restored (to restore the other accounts of"
            f" the snapshot, add --exclude {account})"
        )
