"""What an earlier server's folder may hand over: hostile contents are refused, not followed."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.importer.folder import MARKER, AlreadyImported, Skipped, Source, inspect


def collection(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(folder / "collection.anki2")
    db.execute("CREATE TABLE col (ver int)")
    db.execute("INSERT INTO col VALUES (11)")
    db.commit()
    db.close()
    (folder / "collection.media").mkdir(exist_ok=True)


def look(root: Path, name: str) -> Source | Skipped | AlreadyImported:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return inspect(fd, name)
    finally:
        os.close(fd)


def test_a_plain_folder_is_a_source_with_its_media(tmp_path):
    collection(tmp_path / "alice")
    (tmp_path / "alice" / "collection.media" / "a.png").write_bytes(b"png")
    found = look(tmp_path, "alice")
    assert isinstance(found, Source)
    assert [(m.name, m.size) for m in found.media] == [("a.png", 3)]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: (d / "victim").symlink_to("/etc"), "symbolic link"),
        (lambda d: (d / "victim").write_text("x"), "not a folder"),
        (lambda d: (d / "victim").mkdir(), "not a collection folder"),
        (
            lambda d: ((d / "victim").mkdir(), (d / "victim" / "collection.anki2").write_text("x")),
            "not an SQLite database",
        ),
    ],
)
def test_what_is_not_a_collection_folder_is_skipped(tmp_path, make, reason):
    make(tmp_path)
    found = look(tmp_path, "victim")
    assert isinstance(found, Skipped) and reason in found.reason


def test_a_collection_linked_from_elsewhere_is_refused(tmp_path):
    outside = tmp_path / "outside"
    collection(outside)
    root = tmp_path / "dir"
    (root / "sym").mkdir(parents=True)
    (root / "sym" / "collection.anki2").symlink_to(outside / "collection.anki2")
    (root / "hard").mkdir()
    os.link(outside / "collection.anki2", root / "hard" / "collection.anki2")
    (root / "media").mkdir()
    collection(root / "media")
    (root / "media" / "collection.media").rmdir()
    (root / "media" / "collection.media").symlink_to(outside / "collection.media")
    assert "symbolic link" in look(root, "sym").reason  # type: ignore[union-attr]
    assert "hard link" in look(root, "hard").reason  # type: ignore[union-attr]
    assert "collection.media" in look(root, "media").reason  # type: ignore[union-attr]


def test_media_a_server_would_refuse_stay_behind(tmp_path):
    collection(tmp_path / "alice")
    media = tmp_path / "alice" / "collection.media"
    secret = tmp_path / "gateway.secret"
    secret.write_bytes(b"s3cret")
    os.link(secret, media / "linked.png")
    (media / "sym.png").symlink_to(secret)
    (media / "empty.png").write_bytes(b"")
    (media / "Cafe\u0301.png").write_bytes(b"nfd")  # decomposed: not NFC
    (media / "ok.png").write_bytes(b"ok")
    found = look(tmp_path, "alice")
    assert isinstance(found, Source)
    assert [m.name for m in found.media] == ["ok.png"]
    reasons = dict(found.skipped_media)
    assert "hard link" in reasons["linked.png"]
    assert "symbolic link" in reasons["sym.png"]
    assert "empty" in reasons["empty.png"]
    assert "NFC" in reasons["Cafe\u0301.png"]


@pytest.mark.parametrize("name", [".hidden", 'a"b', "a\\b", "line\nbreak", "sp ace"])
def test_unsafe_names_are_skipped_unread(tmp_path, name):
    collection(tmp_path / name)
    found = look(tmp_path, name)
    assert isinstance(found, Skipped) and "unsafe name" in found.reason


def test_a_marked_folder_is_already_imported(tmp_path):
    collection(tmp_path / "alice")
    (tmp_path / "alice" / MARKER).write_text("imported into account alice on 2026-11-30\n")
    found = look(tmp_path, "alice")
    assert isinstance(found, AlreadyImported) and "account alice" in found.note
