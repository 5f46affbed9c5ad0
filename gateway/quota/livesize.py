"""How many bytes of a collection SQLite is using: its live pages, read from the file's header
and its WAL without opening the database. Reads files only; the parsing is pure.

    live_bytes(db_path) -> int     (page count - free pages) x page size, as of the last
                                   committed transaction, plus the pages an open transaction
                                   has written to the WAL; the file's size (plus its WAL)
                                   when the header is not an SQLite one
    parse(header, wal, file_size) -> (page_size, pages, free, open) or None    the pure
                                   part: `wal` reads the WAL at an offset (tests pass bytes'
                                   slices); `file_size`: the database file's bytes; `open`:
                                   frames after the last commit

Why: deleting notes does not shrink the file: SQLite keeps the freed pages (its freelist) and
Anki's server does not vacuum. Measured with the stock server: 300 notes of 10 KB uploaded (6.3
MB file), 290 deleted by a normal sync: the file stayed 6.3 MB (plus a 1.3 MB WAL), 1,458 of its
1,549 pages free. Counted by size, an account over its limit could never sync its way back
under it. The stock server holds the collection in SQLite's exclusive locking mode while it
runs, so another connection gets "database is locked" (measured): hence the file formats.

Formats (sqlite.org/fileformat2.html): the database header's page size (offset 16, 1 = 65536),
page count (28) and freelist page count (36). The file is the user's own (a full upload writes
it as sent), so its header is read as SQLite reads it: a page size that is not a power of two
from 512 to 65536 is no SQLite header (SQLite refuses the file); the page count is trusted only
when it is not 0 and the "version valid for" number (92) equals the change counter (24), else
SQLite uses the file's size, and so does this (a header saying 1 page of a 2 MB file that SQLite
reads whole, integrity check and all, counted 4 KB before). In WAL mode the newest copy of page
1, and the page count after a commit, are in the WAL: a 32-byte header (page size at 8, salts at
16 and 20) and frames of a 24-byte header (page number, page count after commit or 0, salts) and
a page. Frames count while their salts match the header's (a WAL restarted after a checkpoint
gets new salts; older frames beyond the new ones are not read). Frames after the last commit
frame are an open transaction (the stock server's sync in progress, spilled from its page
cache): each counts as a whole new page, so a sync that grows a collection past its limit meets
the limit before it ends (a page rewritten is counted again). Frame checksums are not verified,
so frames of a transaction that was rolled back (an aborted sync), or left beyond a shorter one
written over them, count too, until SQLite's next checkpoint restarts the WAL (at a commit once
it holds 1,000 pages, or when the server closes the collection). Every such error counts more,
never less, and stays under the file and WAL's own size, the figure used before: this estimate
only decides whether a sync may add to a collection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

MAGIC = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)
HEADER = 100
WAL_HEADER = 32
FRAME_HEADER = 24

#: reader(offset, size) -> up to `size` bytes of the WAL from `offset`
Reader = Callable[[int, int], bytes]


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def page_size_of(header: bytes) -> int:
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def pages_of(header: bytes, page_size: int, file_size: int) -> int:
    """The database's page count as SQLite takes it (module doc): the header's when valid,
    else the file's size in pages."""
    pages = _u32(header, 28)
    if pages == 0 or header[24:28] != header[92:96]:
        return -(-file_size // page_size)
    return pages


def parse(
    header: bytes, wal: Reader | None, file_size: int = 0
) -> tuple[int, int, int, int] | None:
    """(page size, page count, free pages, open frames) from the database header (its first
    100 bytes), the database file's size and the WAL (`wal(offset, size)` reads it; None: no
    WAL); None when `header` is not an SQLite header. Reads the WAL's frame headers one by one,
    and page 1's header where a frame holds it: a WAL of any size costs 24 bytes a frame."""
    if len(header) < HEADER or not header.startswith(MAGIC):
        return None
    page_size = page_size_of(header)
    if page_size < 512 or page_size & (page_size - 1):
        return None
    pages, free = pages_of(header, page_size, file_size), _u32(header, 36)
    head = wal(0, WAL_HEADER) if wal is not None else b""
    if len(head) < WAL_HEADER or _u32(head, 0) not in WAL_MAGIC or _u32(head, 8) != page_size:
        return page_size, pages, free, 0
    salts = head[16:24]
    page_one_at: int | None = None  # where the newest copy of page 1 so far is
    at = WAL_HEADER
    pending = 0  # frames since the last commit
    assert wal is not None
    while True:
        frame = wal(at, FRAME_HEADER)
        if len(frame) < FRAME_HEADER or frame[8:16] != salts:
            break
        number, committed = _u32(frame, 0), _u32(frame, 4)
        pending += 1
        if number == 1:
            page_one_at = at + FRAME_HEADER
        if committed:
            pages, pending = committed, 0
            if page_one_at is not None:
                page_one = wal(page_one_at, HEADER)
                if len(page_one) == HEADER:
                    free = _u32(page_one, 36)
        at += FRAME_HEADER + page_size
    return page_size, pages, free, pending


def live_bytes(db_path: Path) -> int:
    """See the module doc. A missing file is 0."""
    try:
        with open(db_path, "rb") as f:
            header = f.read(HEADER)
            file_size = os.fstat(f.fileno()).st_size
    except OSError:
        return 0
    try:
        wal_fd: int | None = os.open(f"{db_path}-wal", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        wal_fd = None
    try:
        reader = None if wal_fd is None else (lambda at, n: os.pread(wal_fd, n, at))
        parsed = parse(header, reader, file_size)
        if parsed is None:
            wal_size = os.fstat(wal_fd).st_size if wal_fd is not None else 0
            return file_size + wal_size
    finally:
        if wal_fd is not None:
            os.close(wal_fd)
    page_size, pages, free, pending = parsed
    return (max(pages - free, 0) + pending) * page_size
