"""The stock sync server's media index (`<account>/media.db`), written for imported files.

    last_usn(path) -> int                  0 for a missing index or one that never saw a file
    write(path, media_dir, clock) -> (files, bytes)

The stock server lists to clients only the files its index names, and an index that is
missing is created empty: files moved into `media/` without it would never reach a device. So
the importer writes the index the stock server would have after receiving each file once, in
the server's own schema, version 4 (rslib `sync/media/database/server/schema_v4.sql`; the server
upgrades older versions and leaves version 4 as it is):

    media(fname text primary key, csum blob (SHA-1), size int, usn int, mtime int)
    meta(last_usn, total_bytes, total_nonempty_files)       user_version = 4

Each file gets its own usn (1, 2, ...), as uploads would; a client that has none of them asks
for changes after usn 0 and downloads them all.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE media (
  fname text NOT NULL PRIMARY KEY,
  csum blob NOT NULL,
  size int NOT NULL,
  usn int NOT NULL,
  mtime int NOT NULL
);
CREATE INDEX ix_usn ON media (usn);
CREATE TABLE meta (
  last_usn int NOT NULL,
  total_bytes int NOT NULL,
  total_nonempty_files int NOT NULL
);
"""


def last_usn(path: Path) -> int:
    """The index's last usn; 0 when there is no index. Raises sqlite3.Error for a file that is
    not one."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT last_usn FROM meta").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.close()


def _sha1(folder_fd: int, name: str) -> tuple[bytes, int]:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ValueError(f"media file {name!r} changed into a link during the import")
        digest = hashlib.sha1()  # noqa: S324 - the protocol's checksum, not a security hash
        with os.fdopen(os.dup(fd), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.digest(), st.st_size
    finally:
        os.close(fd)


def write(path: Path, media_dir: Path, clock: Callable[[], float] = time.time) -> tuple[int, int]:
    """Write `path` (replacing it) naming every file in `media_dir`; returns (files, bytes).

    Written to a temporary file and renamed into place, so the index is whole or absent.
    """
    folder_fd = os.open(media_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        names = sorted(e.name for e in os.scandir(folder_fd) if e.is_file(follow_symlinks=False))
        rows = []
        for usn, name in enumerate(names, start=1):
            csum, size = _sha1(folder_fd, name)
            rows.append((name, csum, size, usn, int(clock())))
    finally:
        os.close(folder_fd)
    tmp = path.with_name(path.name + ".import-tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript(_SCHEMA)
        db.executemany("INSERT INTO media VALUES (?, ?, ?, ?, ?)", rows)
        total = sum(r[2] for r in rows)
        db.execute("INSERT INTO meta VALUES (?, ?, ?)", (len(rows), total, len(rows)))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.commit()
    finally:
        db.close()
    for stale in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    os.replace(tmp, path)
    return len(rows), total
