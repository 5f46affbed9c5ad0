"""Export: an account's collection and media as an Anki collection package (`.colpkg`).

    make(collections_dir, account, scratch_root, *, wait=60.0, min_free=0) -> Path   (blocking)
        the package file, in a private folder under `scratch_root` the caller removes
        (`discard(path)`) once it is sent; raises ExportError. Folders a killed export left
        there for a day are removed by the next one.

What it contains: the account's collection as of its last completed sync (notes, cards, decks,
note types, review history, deck options) and every file in its media folder: what Anki's own
"Export collection package" with media writes, made by the `anki` package's exporter
(colpkg.py), so stock Anki imports it (File > Import, or "Restore" on a fresh profile).

Consistency while devices sync: the backup's handshake (gateway/backup/quiesce.py) asks the
gateway processes to stop the account's sync server once no request is in flight and no sync is
open (a sync under way finishes first; after `wait` seconds the server is stopped regardless),
and the files are copied (SQLite's online backup API, then the media files) while the account's
worker lock is held. The lock is let go before the package is built, so the account is held only
for the copy. One export or backup of an account at a time (the want file's flock): a second gets
ExportError("busy"), retryable.

Errors (ExportError.reason): "busy" (another export or a backup holds the account; retry),
"nothing" (the account has no collection on this disk: never synced, or kept on another node),
"disk" (the copy and package would leave less than `min_free` bytes free), "failed" (a damaged
file, the exporter's error, an import or restore of the account cut off half-way: its files
are not one consistent set; the detail says which). Nothing here logs a file's contents.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sqlite3
import time
from pathlib import Path

from gateway.backup import quiesce
from gateway.backup.snapshot import BackupError, account_bytes, copy_files
from gateway.ops import readiness
from gateway.workers.lock import account_path, cut_off

#: The package's file name inside its private folder.
PACKAGE = "collection.colpkg"
#: Where packages are built, under the data folder (each in a private folder of its own).
EXPORT_SCRATCH = "export-scratch"
#: A private folder this old is left over from an export that was killed: removed.
STALE_SECONDS = 86_400.0


class ExportError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason

    @property
    def retryable(self) -> bool:
        return self.reason in ("busy", "disk")


def make(
    collections_dir: Path,
    account: str,
    scratch_root: Path,
    *,
    wait: float = 60.0,
    min_free: int = 0,
) -> Path:
    from gateway.export import colpkg

    folder = account_path(collections_dir, account)
    why = cut_off(folder)  # asked again under the lock (copy_files): files half-swapped
    if why is not None:
        raise ExportError("failed", why)
    if not (folder / "collection.anki2").is_file():
        raise ExportError("nothing", "the account has no collection here yet")
    scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _sweep(scratch_root, time.time() - STALE_SECONDS)
    work = scratch_root / secrets.token_hex(8)
    work.mkdir(mode=0o700)
    try:
        # The copy, then a package about as large (zstd-compressed; media stored as they are).
        need = 2 * account_bytes(folder)
        if readiness.free_bytes(scratch_root) - need < min_free:
            raise ExportError("disk", "not enough free disk space for the export now")
        held = quiesce.hold(collections_dir, account, wait)
        if isinstance(held, str):
            raise ExportError("busy", held)
        copy = work / "copy"
        with held:
            copy_files(held.folder, copy)
        out = work / PACKAGE
        colpkg.build(copy, out)
        shutil.rmtree(copy, ignore_errors=True)
        return out
    except ExportError:
        discard(work / PACKAGE)
        raise
    except (BackupError, OSError, sqlite3.Error, colpkg.ExporterError) as exc:
        discard(work / PACKAGE)
        raise ExportError("failed", f"{type(exc).__name__}: {exc}") from None


def _sweep(scratch_root: Path, before: float) -> None:
    """Remove what an export killed half-way (a gateway stopped meanwhile) left behind."""
    for entry in scratch_root.iterdir():
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink() and entry.stat().st_mtime < before:
                shutil.rmtree(entry, ignore_errors=True)


def discard(package: Path) -> None:
    """Remove a package's private folder (and the package)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(package.parent)
