"""A collection's live size from its files (quota/livesize.py), against what SQLite itself says
of real databases in WAL mode, kept open as the stock server keeps a collection."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.quota.livesize import live_bytes


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(tmp_path / "collection.anki2", isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=0")  # the frames stay in the WAL
    con.execute("create table notes (id integer primary key, flds text)")
    yield con
    con.close()


def truth(con: sqlite3.Connection) -> int:
    pages, free, size = (
        con.execute(f"pragma {name}").fetchone()[0]
        for name in ("page_count", "freelist_count", "page_size")
    )
    return (pages - free) * size


def add(con: sqlite3.Connection, count: int, size: int = 4000) -> None:
    con.execute("begin")
    for _ in range(count):
        con.execute("insert into notes (flds) values (?)", (os.urandom(size).hex(),))
    con.execute("commit")


def test_deleted_rows_free_their_pages_though_the_file_keeps_its_size(db, tmp_path):
    path = tmp_path / "collection.anki2"
    add(db, 300)
    assert live_bytes(path) == truth(db) > 2_400_000
    db.execute("delete from notes where id > 10")
    on_disk = path.stat().st_size + Path(f"{path}-wal").stat().st_size
    assert live_bytes(path) == truth(db) < 200_000 < on_disk


def test_after_a_checkpoint_the_header_and_a_restarted_wal_agree(db, tmp_path):
    path = tmp_path / "collection.anki2"
    add(db, 200)
    db.execute("pragma wal_checkpoint(RESTART)")
    db.execute("delete from notes where id > 100")  # new salts; older frames lie beyond
    assert live_bytes(path) == truth(db)
    db.execute("pragma wal_checkpoint(TRUNCATE)")
    assert not Path(f"{path}-wal").stat().st_size
    assert live_bytes(path) == truth(db)


def test_an_open_transaction_counts_what_it_wrote_to_the_wal(db, tmp_path):
    # The stock server's sync in progress, spilled from its page cache: a sync growing the
    # collection past its limit meets it before the sync ends.
    path = tmp_path / "collection.anki2"
    add(db, 20)
    committed = truth(db)
    db.execute("pragma cache_size=5")
    db.execute("begin")
    for _ in range(300):
        db.execute("insert into notes (flds) values (?)", (os.urandom(4000).hex(),))
    wal = Path(f"{path}-wal").stat().st_size
    assert wal > 2_000_000
    assert committed + 2_000_000 < live_bytes(path) <= committed + wal
    db.execute("rollback")


def test_a_file_that_is_not_sqlite_counts_its_size(tmp_path):
    (tmp_path / "collection.anki2").write_bytes(b"x" * 5000)
    (tmp_path / "collection.anki2-wal").write_bytes(b"y" * 300)
    assert live_bytes(tmp_path / "collection.anki2") == 5300
    assert live_bytes(tmp_path / "missing.anki2") == 0


def _rewrite(path: Path, at: int, value: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(value)


@pytest.mark.parametrize(
    "lie",
    [
        # The in-header page count is 1, and the "version valid for" number (offset 92) is not
        # the change counter (offset 24): SQLite ignores the count and uses the file's size.
        {28: (1).to_bytes(4, "big"), 92: (12345).to_bytes(4, "big")},
        # A count of 0 is never valid: SQLite uses the file's size.
        {28: (0).to_bytes(4, "big")},
    ],
)
def test_a_header_whose_page_count_sqlite_ignores_counts_the_file(tmp_path, lie):
    """A user full-uploads the collection file, header and all: a page count SQLite itself does
    not trust must not make a large collection look small."""
    path = tmp_path / "collection.anki2"
    con = sqlite3.connect(path, isolation_level=None)  # rollback journal: the header is all
    con.execute("create table notes (id integer primary key, flds text)")
    add(con, 300)
    con.close()
    for at, value in lie.items():
        _rewrite(path, at, value)
    con = sqlite3.connect(path)
    real = truth(con)  # SQLite still reads every page, and its integrity check passes
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert con.execute("select count(*) from notes").fetchone()[0] == 300
    con.close()
    assert live_bytes(path) >= real > 2_000_000


@pytest.mark.parametrize("size", [0, 2, 100, 256, 1000])
def test_a_page_size_sqlite_refuses_counts_the_file(tmp_path, size):
    path = tmp_path / "collection.anki2"
    header = b"SQLite format 3\x00" + size.to_bytes(2, "big") + bytes(82)
    path.write_bytes(header + bytes(1_000_000))
    assert live_bytes(path) == path.stat().st_size
