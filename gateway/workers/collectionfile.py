"""Whether an SQLite file that came from a user's side is one the stock Anki stack makes.

    problem(path, kind) -> str | None     why `path` must not be served; None when it may
        kind: "collection" (collection.anki2) or "media" (the stock server's media.db)
    mark_schema_changed(path, now_ms) -> str | None
        sets `col.scm` of a checked private copy, as Anki does before a one-way sync; None
        when written, else why the file refused the write (nothing written)
    size_problem(fd, limit) -> str | None  a file too large, or with holes, to be a collection
    unicase(a, b) -> int                   Anki's collation, registered on every connection

`path` must be a PRIVATE copy (a restore's staging folder, an import's scratch folder): the
checks open it read-write (SQLite may replay a WAL beside it) and nothing else may have it open.
They only read: no trigger of the file's runs, and `trusted_schema` is off, so no function or
virtual table its schema names can run either. In order, each refusing on its own:

1. The SQLite header (a file that is not a database).
2. sqlite_master holds only tables and indexes, none of them virtual. Anki's schema (rslib
   `storage/schema11.sql` and its upgrades to 18) has no trigger, view or virtual table, and
   the stock client never makes one; a user can (the debug console, a crafted upload). A
   trigger on `col` (`BEFORE UPDATE ... RAISE(ABORT, 'text')`) fails, or, made slow, stalls
   whoever next writes `col`: the restore marking the schema changed, the stock server itself.
   They are REFUSED, not stripped: dropping them means writing a user's file the gateway then
   serves as if it were the backup (and dropping a trigger runs no user code, but stripping
   is a rewrite of whatever else they made too); the operator decides, the other accounts are
   restored without it (restore's --exclude) or imported.
3. `PRAGMA integrity_check` with Anki's `unicase` collation registered (Anki's collections
   declare it: without it every statement fails with "no such collation sequence"). The Rust
   side compares with Unicode case folding (the `unicase` crate); Python's `casefold()` is the
   same full folding.
4. For a collection: `col` is a table with an integer schema version Anki knows (11..18).

A file that passes can still refuse a write of its own making: a user can make `col` again
with a CHECK constraint (plain SQL, a table like any other) that holds today and fails on the
next `scm`, naming it with text of their choosing. `mark_schema_changed` writes on the same
terms as the checks read (`trusted_schema` off) and answers such a refusal with its kind
only, never SQLite's message (the user's text).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
#: Collection schema versions the stock server opens (11: Anki 2.1's legacy; 18: current).
SCHEMA_VERSIONS = range(11, 19)
_INTEGRITY_SHOWN = 3


def unicase(a: str, b: str) -> int:
    """Anki's `unicase` collation: case-insensitive by Unicode case folding."""
    x, y = a.casefold(), b.casefold()
    return (x > y) - (x < y)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to a private copy that runs nothing of the file's own making."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA trusted_schema = OFF")
        db.create_collation("unicase", unicase)
    except BaseException:
        db.close()
        raise
    return db


def problem(path: Path, kind: str) -> str | None:
    try:
        with path.open("rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return "not an SQLite database"
        with contextlib.closing(connect(path)) as db:
            return _schema_problem(db) or _integrity_problem(db) or _content_problem(db, kind)
    except sqlite3.DatabaseError as exc:
        return f"not a sound SQLite database ({type(exc).__name__}: {str(exc)[:80]})"


def mark_schema_changed(path: Path, now_ms: int) -> str | None:
    try:
        with contextlib.closing(connect(path)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("UPDATE col SET scm = ?", (now_ms,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
    except sqlite3.Error as exc:
        return f"refuses Anki's own write to col ({type(exc).__name__}): refused, not run"
    return None


def _schema_problem(db: sqlite3.Connection) -> str | None:
    made = []
    for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master"):
        if kind == "table" and str(sql or "").lstrip().upper().startswith("CREATE VIRTUAL"):
            made.append(f"virtual table {name!r}")
        elif kind not in ("table", "index"):
            made.append(f"{kind} {name!r}")
    made.sort()
    if made:
        shown = ", ".join(made[:3]) + (f" and {len(made) - 3} more" if len(made) > 3 else "")
        return f"holds what Anki never makes ({shown}): refused, not run"
    return None


def _integrity_problem(db: sqlite3.Connection) -> str | None:
    found = [str(r[0]) for r in db.execute(f"PRAGMA integrity_check({_INTEGRITY_SHOWN})")]
    if found != ["ok"]:
        return f"fails SQLite's integrity check ({'; '.join(found)[:200]})"
    return None


def _content_problem(db: sqlite3.Connection, kind: str) -> str | None:
    if kind != "collection":
        return None
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "col" not in tables:
        return "not an Anki collection (no col table)"
    row = db.execute("SELECT ver FROM col").fetchone()
    if not row or not isinstance(row[0], int) or row[0] not in SCHEMA_VERSIONS:
        return f"not an Anki collection Anki opens (schema version {row[0] if row else None!r})"
    return None


def size_problem(fd: int, limit: int) -> str | None:
    """Why the open file `fd` cannot be a collection to take in: larger than `limit` bytes,
    or sparse (a hole before its end: SQLite writes every page it counts, so only a crafted
    file has one, and its gigabytes of nothing would cost the checks a full read)."""
    size = os.fstat(fd).st_size
    if size > limit:
        return f"{size >> 20} MiB, over the {limit >> 20} MiB limit"
    at = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        if size and os.lseek(fd, 0, os.SEEK_HOLE) < size:
            return "a sparse file (holes), not one SQLite wrote"
    except OSError:
        pass  # a file system without SEEK_HOLE: the size alone
    finally:
        os.lseek(fd, at, os.SEEK_SET)
    return None
