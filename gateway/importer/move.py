"""Moving one earlier-server folder into an account's folder. The caller holds the account's lock.

    target_problem(target, source_name) -> str | None     why the account cannot take it
    move(root_fd, source, target, account, clock) -> Moved
    finish_marked(collections_dir, folder, note)          a run killed after step 5's marker

Order, so that a run that dies half-way can simply be run again:

1. `<account>/.gateway-import` names the source folder. While it is there, a collection or
   media already in the account are this import's own (a second folder for the same account
   is refused).
2. The collection moves with its WAL (the WAL may hold the last syncs), is opened once (SQLite
   replays the WAL) and must pass collectionfile.problem() again (judge.py checked a copy
   before; it could have changed since); otherwise it is moved back and the folder refused,
   with nothing of it in the account.
3. Media files move into `<account>/media/` one by one. A file already there with the same
   content is a file an interrupted run moved; a different one is never overwritten.
4. `media.db` is written from the account's media folder (mediadb.py).
5. The source folder gets its marker (folder.MARKER), then `.gateway-import` goes.

Moves are renames (never a link and an unlink: a run killed in between would leave a hard
link, which the next run must refuse); across file systems a file is copied (fsync'd) and then
removed. Nothing is read through a symbolic link: sources are opened relative to directory
descriptors (O_NOFOLLOW), and a renamed file must still be the inode that was checked.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import collectionfile, naming
from gateway.importer import mediadb
from gateway.importer.folder import (
    COLLECTION,
    MARKER,
    OLD_MEDIA,
    WAL,
    Source,
    media_problem,
    open_dir,
    refusal,
    regular,
)
from gateway.workers.lock import IMPORTING

IN_PROGRESS = IMPORTING
_MARKED = re.compile(r"imported into account (\S+) on ")
_COPY = ".gateway-import-copy"


class Refused(Exception):
    """The folder is not imported; the text says why (nothing of it was changed, or what was
    moved has been moved back)."""


@dataclass(frozen=True)
class Moved:
    media_files: int
    media_bytes: int
    schema: int
    #: (file name, why) for media left in the source folder.
    left: tuple[tuple[str, str], ...]


def target_problem(target: Path, source: Source) -> str | None:
    """Why `target` (an account folder) cannot take `source`'s collection, or None."""
    marker = target / IN_PROGRESS
    if marker.is_file() and not marker.is_symlink():
        other = marker.read_text("utf-8", "replace").strip()
        return None if other == source.name else f"folder {other!r} is being imported into it"
    if source.collection_bytes is None:
        return f"not a collection folder (no {COLLECTION})"
    if os.path.lexists(target / COLLECTION):
        return "the account already has a collection (its user synced through the gateway)"
    try:
        if mediadb.last_usn(target / "media.db") > 0:
            return "the account already has media (its user synced through the gateway)"
    except sqlite3.Error:
        return "the account's media.db is unreadable"
    return None


def move(
    root_fd: int, source: Source, target: Path, clock: Callable[[], float] = time.time
) -> Moved:
    problem = target_problem(target, source)
    if problem is not None:
        raise Refused(problem)
    (target / IN_PROGRESS).write_text(source.name + "\n", "utf-8")
    folder_fd = open_dir(root_fd, source.name)
    try:
        try:
            schema = _move_collection(folder_fd, target)
        except (Refused, OSError) as exc:
            (target / IN_PROGRESS).unlink()  # nothing of this folder is in the account
            if isinstance(exc, Refused):
                raise
            raise Refused(f"{COLLECTION} could not be moved ({exc.strerror})") from None
        (target / "media").mkdir(mode=0o700, exist_ok=True)
        left = list(source.skipped_media)
        if source.media:
            media_fd = open_dir(folder_fd, OLD_MEDIA)
            try:
                for item in source.media:
                    try:
                        why = _move_media(media_fd, item.name, target)
                    except OSError as exc:
                        why = f"could not be moved ({exc.strerror})"
                    except Refused as exc:  # replaced after it was checked: it stays
                        why = str(exc)
                    if why is not None:
                        left.append((item.name, why))
            finally:
                os.close(media_fd)
        files, size = mediadb.write(target / "media.db", target / "media", clock)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock()))
        _write_new(folder_fd, MARKER, f"imported into account {target.name} on {stamp}\n")
    finally:
        os.close(folder_fd)
    (target / IN_PROGRESS).unlink()
    return Moved(files, size, schema, tuple(left))


def finish_marked(collections_dir: Path, folder: str, note: str) -> None:
    """Remove `.gateway-import` from the account an already imported `folder` names in its
    marker (`note`, the marker's text), when it still names that folder: a run killed between
    the marker and that removal left the account unserved (workers/lock.py)."""
    found = _MARKED.match(note)
    if found is None or not naming.is_safe(found[1]):
        return
    progress = collections_dir / found[1] / IN_PROGRESS
    if progress.is_file() and not progress.is_symlink():
        if progress.read_text("utf-8", "replace").strip() == folder:
            progress.unlink()


def _move_media(media_fd: int, name: str, target: Path) -> str | None:
    """Move one media file; the reason it stays behind, or None."""
    st = regular(media_fd, name)
    if st is None:
        return "gone"
    why = media_problem(name, st)
    if why is not None:
        return why
    dest = target / "media" / name
    if os.path.lexists(dest):
        if _same_content(media_fd, name, dest):
            os.unlink(name, dir_fd=media_fd)  # moved by an interrupted run: this is the original
            return None
        return "the account already has a different file of that name"
    _move_file(media_fd, name, st, dest)
    return None


def _move_collection(folder_fd: int, target: Path) -> int:
    """Move the collection (and its WAL) in, check it, and return its schema version."""
    dest = target / COLLECTION
    if not os.path.lexists(dest):
        st = regular(folder_fd, COLLECTION)
        if st is None or refusal(st) is not None:
            raise Refused(f"{COLLECTION} changed during the import")
        wal = regular(folder_fd, WAL)
        if wal is not None and refusal(wal) is None:
            _move_file(folder_fd, WAL, wal, target / WAL)
        _move_file(folder_fd, COLLECTION, st, dest)
    try:
        return _check(dest)
    except Refused:
        for name in (WAL, COLLECTION):
            if os.path.lexists(target / name):
                _move_back(target / name, folder_fd, name)
        raise


def _check(path: Path) -> int:
    """The moved collection's schema version, once it passes the import's checks (judge.py)."""
    problem = collectionfile.problem(path, "collection")
    if problem is not None:
        raise Refused(f"{COLLECTION}: {problem}")
    db = collectionfile.connect(path)
    try:
        return int(db.execute("SELECT ver FROM col").fetchone()[0])
    finally:
        db.close()


def _move_file(src_dir_fd: int, name: str, checked: os.stat_result, dest: Path) -> None:
    """Move `name` to `dest`, which must not exist (the caller checked, holding the account's
    lock): a rename, or a copy across file systems and for a file of another owner (the old
    server's user: the sync server, running as this user, must be able to write it).

    A rename, not a link and an unlink: a run killed between those two left the file in both
    folders, a hard link the next run refused."""
    if checked.st_uid == os.geteuid():
        try:
            os.rename(name, dest, src_dir_fd=src_dir_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            moved = os.stat(dest, follow_symlinks=False)
            if (moved.st_dev, moved.st_ino) != (checked.st_dev, checked.st_ino):
                os.rename(dest, name, dst_dir_fd=src_dir_fd)  # what replaced it goes back
                raise Refused(f"{name!r} changed during the import")
            return
    _copy(src_dir_fd, name, checked, dest)
    os.unlink(name, dir_fd=src_dir_fd)


def _copy(src_dir_fd: int, name: str, checked: os.stat_result, dest: Path) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir_fd)
    tmp = dest.parent.parent / _COPY if dest.parent.name == "media" else dest.parent / _COPY
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
            raise Refused(f"{name!r} changed during the import")
        with os.fdopen(os.dup(fd), "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, dest)  # fails rather than overwrite
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def _move_back(path: Path, folder_fd: int, name: str) -> None:
    if regular(folder_fd, name) is None:
        try:
            os.rename(path, name, dst_dir_fd=folder_fd)
        except OSError:
            pass  # another file system: leave it in the account folder, named in the error
        return
    os.unlink(path)


def _same_content(media_fd: int, name: str, dest: Path) -> bool:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=media_fd)
    try:
        with os.fdopen(os.dup(fd), "rb") as a, open(dest, "rb") as b:
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    finally:
        os.close(fd)


def _write_new(folder_fd: int, name: str, text: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=folder_fd)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
