"""What passes as a file the stock Anki stack makes: Anki's own collections do, a user's SQL
additions and crafted files do not (and nothing of theirs runs)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from anki.collection import Collection

from gateway.collectionfile import problem, size_problem


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A current (schema 18) collection with a deck whose name sorts by Anki's unicase."""
    path = tmp_path_factory.mktemp("col") / "collection.anki2"
    col = Collection(str(path))
    col.decks.id("Straße::ÉCOLE")
    col.close()
    return path.read_bytes()


def made(tmp_path: Path, data: bytes, sql: str = "") -> Path:
    path = tmp_path / "copy.anki2"
    path.write_bytes(data)
    if sql:
        with sqlite3.connect(path) as db:
            db.execute(sql)
    return path


def test_a_current_anki_collection_passes(tmp_path, collection) -> None:
    assert problem(made(tmp_path, collection), "collection") is None


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        (
            "CREATE TRIGGER t BEFORE UPDATE ON col BEGIN SELECT RAISE(ABORT, 'mine'); END",
            "holds what Anki never makes (trigger 't')",
        ),
        ("CREATE VIEW v AS SELECT 1", "(view 'v')"),
        ("CREATE VIRTUAL TABLE f USING fts5(x)", "(virtual table 'f')"),
        ("UPDATE col SET ver = 99", "schema version 99"),
        ("DROP TABLE col", "no col table"),
    ],
)
def test_what_anki_never_makes_is_refused(tmp_path, collection, sql, refusal) -> None:
    found = problem(made(tmp_path, collection, sql), "collection")
    assert found is not None and refusal in found


def test_a_damaged_file_and_a_non_database_are_refused(tmp_path, collection) -> None:
    damaged = bytearray(collection)
    damaged[4096 : 4096 + 8192] = b"\xff" * 8192
    found = problem(made(tmp_path, bytes(damaged)), "collection")
    assert found is not None and ("integrity" in found or "not a sound" in found)
    assert problem(made(tmp_path, b"hello" * 100), "collection") == "not an SQLite database"


def test_a_media_index_needs_no_col_table(tmp_path) -> None:
    path = tmp_path / "media.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE media (fname text primary key)")
    assert problem(path, "media") is None


def test_size_problem_refuses_too_large_and_sparse_files(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * (2 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert size_problem(fd, 2 << 20) is None
        assert size_problem(fd, 1 << 20) == "2 MiB, over the 1 MiB limit"
        os.truncate(path, 64 << 20)
        assert size_problem(fd, 1 << 30) == "a sparse file (holes), not one SQLite wrote"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the offset is left where it was
    finally:
        os.close(fd)
