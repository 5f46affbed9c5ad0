"""Putting staged files in place of an account's, all accounts or none (restore.py).

    swap_all([(folder, staged), ...])   each account folder's files replaced by its staged ones;
                                        on any failure every account is put back, then it raises
    recover(folder)                     put back an account a killed restore left half swapped

The caller holds every account's worker lock (no sync server runs) and staged each account in a
folder inside its own account folder, so each step is a rename on one file system: instant,
whole or not at all. Per account, in order:

1. `RESTORING` (workers/lock.py) is written, listing the account's files there now; while it is
   there the gateways do not serve the account (a restore killed in the middle leaves it, and
   the account answers 503 until `recover()`, which the next restore runs first).
2. The account's files (`NAMES`) move into `OLD`; then the staged ones move in.
3. Once EVERY account is swapped: each `RESTORING` is removed, then each `OLD` deleted.

A failure in 1-2 undoes every rename made so far, newest first, for every account; `recover()`
does the same from the list in `RESTORING` (what was there before is in `OLD` or still in
place; anything else is the restore's and goes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from gateway.quota.allowance import FILE_NAME as GRAVES_ALLOWANCE
from gateway.quota.mediatotal import FILE_NAME as MEDIA_TOTAL
from gateway.workers.lock import RESTORING

#: What a restore replaces in an account folder: the stock server's files and SQLite's own,
#: the media total counted for the old media (quota/mediatotal.py: walked again) and the
#: deletion allowance spent on the old collection (quota/allowance.py: a new stretch).
NAMES = tuple(
    f + suffix for f in ("collection.anki2", "media.db") for suffix in ("", "-wal", "-shm")
) + ("media", MEDIA_TOTAL, GRAVES_ALLOWANCE)
#: The staged files that move in (SQLite's -wal/-shm of a closed copy are not among them).
STAGED = ("collection.anki2", "media.db", "media")
OLD = ".gateway-restore-old"


def swap_all(pairs: list[tuple[Path, Path]]) -> None:
    done: list[tuple[Path, Path]] = []  # renames made, (from, to)
    marked: list[Path] = []
    try:
        for folder, staged in pairs:
            present = [n for n in NAMES if os.path.lexists(folder / n)]
            _write(folder / RESTORING, json.dumps(present).encode())
            marked.append(folder)
            (folder / OLD).mkdir(mode=0o700)
            for name in present:
                _rename(folder / name, folder / OLD / name, done)
            for name in STAGED:
                if os.path.lexists(staged / name):
                    _rename(staged / name, folder / name, done)
    except BaseException:
        for source, target in reversed(done):
            os.rename(target, source)
        for folder in marked:
            with contextlib.suppress(OSError):
                (folder / OLD).rmdir()
            (folder / RESTORING).unlink()
        raise
    for folder in marked:
        (folder / RESTORING).unlink()
    for folder in marked:
        shutil.rmtree(folder / OLD, ignore_errors=True)


def recover(folder: Path) -> bool:
    """Undo a swap a killed restore left in `folder` (the caller holds its lock); True when
    there was one."""
    marker = folder / RESTORING
    if not marker.is_file():
        shutil.rmtree(folder / OLD, ignore_errors=True)  # killed after step 3's first half
        return False
    present = set(json.loads(marker.read_bytes()))
    for name in NAMES:
        current, old = folder / name, folder / OLD / name
        if name in present and not os.path.lexists(old):
            continue  # never moved: the original is in place
        if os.path.lexists(current):
            if current.is_dir() and not current.is_symlink():
                shutil.rmtree(current)
            else:
                current.unlink()
        if name in present:
            os.rename(old, current)
    shutil.rmtree(folder / OLD, ignore_errors=True)
    marker.unlink()
    return True


def _rename(source: Path, target: Path, done: list[tuple[Path, Path]]) -> None:
    os.rename(source, target)
    done.append((source, target))


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
