"""The single-host registry (the default): SQLite on disk, `<data>/registry.sqlite3`.

One row per identity, created on first sight (first login or provisioning) and never renamed:
an email can change, `sub` cannot. Creating an account also creates its collection folder
(`<collections>/<name>`), in the same transaction, so a failure leaves neither. Several gateway
processes may share one data folder: creation runs under SQLite's write lock
(`BEGIN IMMEDIATE`), and a name is only taken if no row and no folder has it.

Host keys are stored as SHA-256 digests: the registry file alone does not let anyone sync.
Each account has a key generation, part of its derived worker password (workers/credentials.py):
`sign_out()` moves it on and forgets the account's keys, so every device's key is refused at
its next request (in every process sharing this file: a key counts only while its generation
is the account's) and the next login gets a new key.
The methods are coroutines (the `Registry` boundary, base.py) but their SQLite calls are short
(indexed lookups, single-row writes under WAL) and run on the event loop thread, which also
serialises them within one process: no thread hop on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from gateway import naming
from gateway.identity.provider import Identity
from gateway.identity.spelling import canonical
from gateway.registry.base import (
    ACTIVE,
    DELETING,
    QUOTA_FIELDS,
    SEEN_EVERY,
    Account,
    AccountBeingDeleted,
    Contents,
    IssuedKey,
    Registry,
    RetiredName,
    key_admits,
    key_digest,
    key_waits,
    quota_values,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    sub              TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    cognito_username TEXT NOT NULL,
    email            TEXT,
    status           TEXT NOT NULL DEFAULT 'active',
    created_at       REAL NOT NULL,
    last_seen        REAL NOT NULL,
    checked_at       REAL NOT NULL DEFAULT 0,
    key_generation   INTEGER NOT NULL DEFAULT 0,
    portal_epoch     INTEGER NOT NULL DEFAULT 0,
    quota_collection_upload_megs INTEGER,
    quota_collection_megs        INTEGER,
    quota_media_megs             INTEGER,
    quota_media_file_megs        INTEGER
);
CREATE TABLE IF NOT EXISTS host_keys (
    key_sha256 TEXT PRIMARY KEY,
    sub        TEXT NOT NULL REFERENCES accounts(sub),
    created_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS host_keys_sub ON host_keys(sub);
CREATE TABLE IF NOT EXISTS retired_names (
    name       TEXT PRIMARY KEY,
    sub        TEXT NOT NULL,
    retired_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_until ON nonces(until);
"""
#: Columns added after the first release: (table, column, definition). Registries made before
#: gain them at open, with the default (generation 0 derives the passwords of old releases).
_ADDED_COLUMNS = (
    ("accounts", "key_generation", "INTEGER NOT NULL DEFAULT 0"),
    ("host_keys", "generation", "INTEGER NOT NULL DEFAULT 0"),
    ("accounts", "portal_epoch", "INTEGER NOT NULL DEFAULT 0"),
    *(("accounts", name, "INTEGER") for name in QUOTA_FIELDS),
)

_FIELDS = tuple(f.name for f in dataclasses.fields(Account))
#: The columns read into an `Account`, named: a newer release's extra columns never break it.
_SELECT = "SELECT " + ", ".join(_FIELDS) + " FROM accounts"  # noqa: S608 - constant names

#: Account rows kept for admission between changes of the file (`SqliteRegistry._current`).
ROWS_KEPT = 4096
#: Seconds the readiness probe (`writable()`) waits for the write lock.
PROBE_TIMEOUT = 1.0


def _account(row: sqlite3.Row | None) -> Account | None:
    return Account(**{name: row[name] for name in _FIELDS}) if row is not None else None


class SqliteRegistry(Registry):
    """The registry in one SQLite file (`db_path`); folders under `collections_dir`."""

    def __init__(
        self, db_path: Path, collections_dir: Path, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(collections_dir)
        self._clock = clock
        collections_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()
        # key digest → (sub, generation, account name): a key never changes owner or
        # generation, so positive answers can be kept; whether the account is still that one,
        # at that generation, is read every time (`key_admits`).
        self._key_cache: dict[str, tuple[str, int, str]] = {}
        # sub → its row as last read, for host-key admission (one per request): valid while
        # the file is unchanged, by this connection (`total_changes`) or any other, in this
        # process or another (SQLite's `PRAGMA data_version`, which any other connection's
        # commit moves on: sqlite.org/pragma.html#pragma_data_version). Cheaper than reading
        # the row, and exact: a sign-out anywhere counts at the next request.
        self._rows: dict[str, Account] = {}
        self._rows_version: tuple[int, int] = (-1, -1)
        self._db_path = db_path

    def _add_missing_columns(self) -> None:
        for table, column, definition in _ADDED_COLUMNS:
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                except sqlite3.OperationalError as exc:  # another process added it just now
                    if "duplicate column" not in str(exc):
                        raise

    async def close(self) -> None:
        self._db.close()

    async def writable(self) -> bool:
        """Whether SQLite's write lock can be taken within `PROBE_TIMEOUT` seconds, on
        a connection of its own (in a thread: it may wait for the lock)."""
        return await asyncio.to_thread(sqlite_writable, self._db_path)

    # -- accounts -----------------------------------------------------------------------

    async def get(self, sub: str) -> Account | None:
        return self._get(sub)

    async def get_by_name(self, name: str) -> Account | None:
        return self._get_by_name(name)

    def _get(self, sub: str) -> Account | None:
        row = self._db.execute(_SELECT + " WHERE sub = ?", (sub,)).fetchone()
        return _account(row)

    def _get_by_name(self, name: str) -> Account | None:
        row = self._db.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
        return _account(row)

    async def count_by_status(self) -> dict[str, int]:
        """{status: accounts} (for metrics)."""
        rows = self._db.execute("SELECT status, count(*) FROM accounts GROUP BY status")
        return {status: n for status, n in rows.fetchall()}

    async def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM accounts").fetchone()[0]

    async def ensure(self, identity: Identity, *, refresh: bool = True) -> tuple[Account, bool]:
        """See `Registry.ensure`; here the row and the folder are created together (a failure
        leaves neither). Names come from the verified email only (`Identity.email` is None
        otherwise)."""
        now = self._clock()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            existing = self._get(identity.sub)
            if existing is not None:
                if refresh and (existing.cognito_username, existing.email) != (
                    identity.username,
                    identity.email,
                ):
                    self._db.execute(
                        "UPDATE accounts SET cognito_username = ?, email = COALESCE(?, email),"
                        " last_seen = ? WHERE sub = ? AND status != ?",
                        (identity.username, identity.email, now, identity.sub, DELETING),
                    )
                self._db.execute("COMMIT")
                return self._get(identity.sub) or existing, False
            name = self._claim_name(naming.base_name(identity.username, identity.email))
            try:
                self._db.execute(
                    "INSERT INTO accounts (sub, name, cognito_username, email, status, created_at,"
                    " last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (identity.sub, name, identity.username, identity.email, ACTIVE, now, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                (self._collections / name).rmdir()
                raise
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        account = self._get(identity.sub)
        assert account is not None
        return account, True

    def _claim_name(self, base: str) -> str:
        for name in naming.candidates(base):
            if not naming.is_safe(name):  # pragma: no cover - base_name only yields safe names
                raise ValueError(f"unsafe account name {name!r}")
            if self._get_by_name(name) is not None or self._retired(name):
                continue
            try:
                # mkdir (not exist_ok) is the atomic claim against leftovers and other processes.
                (self._collections / name).mkdir()
            except FileExistsError:
                continue
            return name
        raise AssertionError("unreachable")

    def _retired(self, name: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM retired_names WHERE name = ?", (name,)).fetchone()
            is not None
        )

    async def others_named(self, sub: str, names: set[str]) -> list[Account]:
        if not names:
            return []
        marks = ", ".join("?" * len(names))
        rows = self._db.execute(
            _SELECT + f" WHERE sub != ? AND status = 'active' AND (lower(cognito_username)"
            f" IN ({marks}) OR lower(email) IN ({marks}))",
            (sub, *names, *names),
        ).fetchall()
        accounts = [a for a in map(_account, rows) if a is not None]
        return [
            a
            for a in accounts
            if canonical(a.cognito_username) in names or canonical(a.email or "") in names
        ]

    async def set_status(self, sub: str, status: str, *, only_from: str | None = None) -> bool:
        if only_from is None:
            cursor = self._db.execute("UPDATE accounts SET status = ? WHERE sub = ?", (status, sub))
        else:
            cursor = self._db.execute(
                "UPDATE accounts SET status = ? WHERE sub = ? AND status = ?",
                (status, sub, only_from),
            )
        if status != ACTIVE:
            self._forget_keys(sub)
        return cursor.rowcount == 1

    async def touch(self, sub: str) -> bool:
        now = self._clock()
        cursor = self._db.execute(
            "UPDATE accounts SET last_seen = ?, checked_at = ? WHERE sub = ? AND status != ?",
            (now, now, sub, DELETING),
        )
        return cursor.rowcount == 1

    async def claim_for_deletion(self, sub: str, unseen_since: float) -> Account | None:
        """See `Registry.claim_for_deletion`: one UPDATE ... WHERE (SQLite's write lock orders
        it against a login's `touch`)."""
        cursor = self._db.execute(
            "UPDATE accounts SET status = ? WHERE sub = ? AND status != ?"
            " AND created_at < ? AND last_seen < ? AND checked_at < ?",
            (DELETING, sub, DELETING, unseen_since, unseen_since, unseen_since),
        )
        self._forget_keys(sub)
        return self._get(sub) if cursor.rowcount == 1 else None

    async def end_portal_sessions(self, sub: str) -> None:
        self._db.execute(
            "UPDATE accounts SET portal_epoch = portal_epoch + 1 WHERE sub = ?", (sub,)
        )

    async def set_quota(self, sub: str, megs: Mapping[str, int | None]) -> bool:
        values = quota_values(megs)
        if not values:
            return self._get(sub) is not None
        assignments = ", ".join(f"{name} = ?" for name in values)  # names from QUOTA_FIELDS
        cursor = self._db.execute(
            f"UPDATE accounts SET {assignments} WHERE sub = ?",  # noqa: S608
            (*values.values(), sub),
        )
        return cursor.rowcount == 1

    async def seen(self, account: Account) -> None:
        now = self._clock()
        if now - account.last_seen >= SEEN_EVERY:
            self._db.execute(
                "UPDATE accounts SET last_seen = ? WHERE sub = ? AND status != ?",
                (now, account.sub, DELETING),
            )

    async def mark_checked(self, sub: str, when: float | None = None) -> None:
        when = self._clock() if when is None else when
        self._db.execute(
            "UPDATE accounts SET checked_at = ? WHERE sub = ? AND status != ?",
            (when, sub, DELETING),
        )

    async def sign_out(self, sub: str) -> int:
        """See `Registry.sign_out`: refused at once in this and any other process sharing the
        file (see `account_for_key`)."""
        with self._write():
            cursor = self._db.execute(
                "UPDATE accounts SET key_generation = key_generation + 1 WHERE sub = ?", (sub,)
            )
            if cursor.rowcount != 1:
                raise KeyError(sub)
            self._db.execute("DELETE FROM host_keys WHERE sub = ?", (sub,))
            generation = self._db.execute(
                "SELECT key_generation FROM accounts WHERE sub = ?", (sub,)
            ).fetchone()[0]
        self._forget_keys(sub)
        return int(generation)

    async def delete(self, sub: str) -> Account | None:
        with self._write():
            account = self._get(sub)
            self._db.execute("DELETE FROM host_keys WHERE sub = ?", (sub,))
            self._db.execute("DELETE FROM accounts WHERE sub = ?", (sub,))
            if account is not None:  # never given out again (see `Registry.delete`)
                self._db.execute(
                    "INSERT OR IGNORE INTO retired_names (name, sub, retired_at) VALUES (?, ?, ?)",
                    (account.name, sub, self._clock()),
                )
        self._forget_keys(sub)
        return account

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction under SQLite's write lock: committed, or rolled back."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _forget_keys(self, sub: str) -> None:
        self._key_cache = {k: v for k, v in self._key_cache.items() if v[0] != sub}

    async def all(self) -> list[Account]:
        rows = self._db.execute(_SELECT + " ORDER BY name").fetchall()
        return [a for a in map(_account, rows) if a is not None]

    async def contents(self) -> Contents:
        """Every account, retired name and issued key digest, read in one transaction (a
        consistent view while a gateway keeps writing), for `accounts copy-registry`."""
        self._db.execute("BEGIN")
        try:
            accounts = await self.all()
            retired = [
                RetiredName(row["name"], row["sub"], row["retired_at"])
                for row in self._db.execute(
                    "SELECT name, sub, retired_at FROM retired_names ORDER BY name"
                )
            ]
            keys = [
                IssuedKey(row["key_sha256"], row["sub"], row["generation"], row["created_at"])
                for row in self._db.execute(
                    "SELECT key_sha256, sub, generation, created_at FROM host_keys ORDER BY sub"
                )
            ]
        finally:
            self._db.execute("COMMIT")
        return Contents(accounts, retired, keys)

    # -- signed requests ----------------------------------------------------------------

    async def spend_nonce(self, nonce: str, until: float) -> bool:
        now = self._clock()
        with self._write():
            self._db.execute("DELETE FROM nonces WHERE until < ?", (now,))
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO nonces (nonce, until) VALUES (?, ?)", (nonce, until)
            )
            return inserted.rowcount == 1

    # -- host keys ------------------------------------------------------------------------

    async def add_host_key(self, sub: str, host_key: str, generation: int = 0) -> None:
        digest = key_digest(host_key)
        self._db.execute(
            "INSERT OR IGNORE INTO host_keys (key_sha256, sub, created_at, generation)"
            " VALUES (?, ?, ?, ?)",
            (digest, sub, self._clock(), generation),
        )
        account = self._get(sub)
        if account is not None:
            self._key_cache[digest] = (sub, generation, account.name)

    async def account_for_key(self, host_key: str) -> Account | None:
        """See `Registry.account_for_key`. The account row is read on every call, so a change
        made by another process counts at once."""
        digest = key_digest(host_key)
        known = self._key_cache.get(digest)
        if known is None:
            row = self._db.execute(
                "SELECT key_sha256, sub, generation FROM host_keys WHERE key_sha256 = ?",
                (digest,),
            ).fetchone()
            # The lookup is by digest, so timing reveals nothing about the key; the explicit
            # constant-time comparison keeps that true if the lookup ever changes.
            if row is None or not hmac.compare_digest(row["key_sha256"], digest):
                return None
            sub, generation, name = row["sub"], row["generation"], None  # its row: this account
        else:
            sub, generation, name = known
        account = self._current(sub)
        if key_waits(account, generation, name):
            raise AccountBeingDeleted("the key's account is being deleted")
        if account is None or not key_admits(account, generation, name):
            self._key_cache.pop(digest, None)
            return None
        self._key_cache[digest] = (sub, generation, account.name)
        return account

    def _current(self, sub: str) -> Account | None:
        """`sub`'s row, from `_rows` while the file has not changed since it was read."""
        version = (self._db.execute("PRAGMA data_version").fetchone()[0], self._db.total_changes)
        if version != self._rows_version:
            self._rows.clear()
            self._rows_version = version
        account = self._rows.get(sub)
        if account is None:
            account = self._get(sub)
            if account is not None:
                if len(self._rows) >= ROWS_KEPT:
                    self._rows.clear()
                self._rows[sub] = account
        return account

    def knows_key(self, host_key: str) -> bool:
        return key_digest(host_key) in self._key_cache

    async def host_key_count(self, sub: str) -> int:
        return self._db.execute("SELECT count(*) FROM host_keys WHERE sub = ?", (sub,)).fetchone()[
            0
        ]


def sqlite_writable(path: Path) -> bool:
    try:
        # mode=rw: never creates a registry where there was none.
        db = sqlite3.connect(
            f"file:{path}?mode=rw", uri=True, timeout=PROBE_TIMEOUT, isolation_level=None
        )
    except sqlite3.Error:
        return False
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.Error:
        return False
    finally:
        db.close()
