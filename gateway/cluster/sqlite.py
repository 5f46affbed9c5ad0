"""The directory in one SQLite file (`<data>/cluster.sqlite3`): several gateway processes on one
host sharing a data folder form a cluster without AWS. `BEGIN IMMEDIATE` makes `claim` a
compare-and-set, as a conditional write does in DynamoDB. Calls run in a thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from gateway.cluster.directory import (
    NODE_PREFIX,
    OWNER_PREFIX,
    Directory,
    DirectoryUnavailable,
    node_from,
    node_item,
    ownership_from,
)
from gateway.cluster.placement import Node, Ownership

FILE = "cluster.sqlite3"


class SqliteDirectory(Directory):
    def __init__(self, path: Path) -> None:
        self._path = path

    def _connect(self) -> sqlite3.Connection:
        # A connection per call (a thread each); the file is made on first use, so a folder
        # that is not there yet at start is a 503 until it is, not a failed start.
        db = sqlite3.connect(self._path, timeout=5, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS items (pk TEXT PRIMARY KEY, item TEXT NOT NULL)")
        return db

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        try:
            return await asyncio.to_thread(fn, *args)
        except sqlite3.OperationalError as exc:
            raise DirectoryUnavailable(f"cluster directory: {exc}") from exc

    async def announce(self, node: Node) -> None:
        await self._run(self._put, NODE_PREFIX + node.id, node_item(node))

    def _put(self, pk: str, item: dict[str, object]) -> None:
        db = self._connect()
        try:
            db.execute("INSERT OR REPLACE INTO items VALUES (?, ?)", (pk, json.dumps(item)))
        finally:
            db.close()

    async def nodes(self) -> dict[str, Node]:
        rows = await self._run(self._select_nodes)
        return {
            pk[len(NODE_PREFIX) :]: node_from(pk[len(NODE_PREFIX) :], item) for pk, item in rows
        }

    def _select_nodes(self) -> list[tuple[str, dict[str, object]]]:
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT pk, item FROM items WHERE substr(pk, 1, ?) = ?",
                (len(NODE_PREFIX), NODE_PREFIX),
            ).fetchall()
        finally:
            db.close()
        return [(pk, json.loads(item)) for pk, item in rows]

    async def owner(self, sub: str) -> Ownership | None:
        item = await self._run(self._get, OWNER_PREFIX + sub)
        return None if item is None else ownership_from(sub, item)

    def _get(self, pk: str) -> dict[str, object] | None:
        db = self._connect()
        try:
            row = db.execute("SELECT item FROM items WHERE pk = ?", (pk,)).fetchone()
        finally:
            db.close()
        return None if row is None else json.loads(row[0])

    async def claim(self, new: Ownership, replaces: Ownership | None) -> bool:
        return bool(await self._run(self._claim, new, replaces))

    def _claim(self, new: Ownership, replaces: Ownership | None) -> bool:
        pk = OWNER_PREFIX + new.sub
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT item FROM items WHERE pk = ?", (pk,)).fetchone()
            current = None if row is None else ownership_from(new.sub, json.loads(row[0]))
            if (current is None) != (replaces is None) or (
                current is not None and replaces is not None and current.version != replaces.version
            ):
                db.execute("ROLLBACK")
                return False
            item = {"node": new.node, "expires": new.expires, "version": new.version}
            db.execute("INSERT OR REPLACE INTO items VALUES (?, ?)", (pk, json.dumps(item)))
            db.execute("COMMIT")
            return True
        finally:
            db.close()
