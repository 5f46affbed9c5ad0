"""Account folders packed and checked for a move (gateway/cluster/copy.py)."""

from __future__ import annotations

import io
import sqlite3
import tarfile
from pathlib import Path

from gateway.cluster import copy


def account(folder: Path) -> Path:
    (folder / "media").mkdir(parents=True)
    with sqlite3.connect(folder / "collection.anki2") as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, flds TEXT)")
        db.executemany("INSERT INTO notes (flds) VALUES (?)", [(f"n{i}",) for i in range(50)])
    (folder / "media" / "a.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    (folder / ".gateway-worker.lock").write_text('{"pid": 1, "port": 2}')
    (folder / ".tmpAbC123").write_bytes(b"stale upload")
    (folder / "media" / "link").symlink_to("/etc/passwd")
    return folder


def test_a_packed_folder_unpacks_to_the_same_files(tmp_path):
    src = account(tmp_path / "src")
    files = copy.pack(src, tmp_path / "a.tar")
    assert set(files) == {"collection.anki2", "media/a.png"}  # no lock, temporaries or links
    assert copy.unpack(tmp_path / "a.tar", tmp_path / "dst") is None
    assert (tmp_path / "dst" / "media" / "a.png").read_bytes() == (
        src / "media" / "a.png"
    ).read_bytes()
    assert not (tmp_path / "dst" / copy.MANIFEST).exists()


def test_a_changed_missing_or_corrupt_file_is_refused(tmp_path):
    src = account(tmp_path / "src")
    copy.pack(src, tmp_path / "a.tar")

    def rewrite(name: str, change) -> Path:
        out = tmp_path / f"{name}.tar"
        with tarfile.open(tmp_path / "a.tar") as old, tarfile.open(out, "w") as new:
            for member in old.getmembers():
                data = old.extractfile(member).read()
                data = change(member.name, data)
                if data is None:
                    continue
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
        return out

    flipped = rewrite("flip", lambda n, d: d[:-1] + b"x" if n == "media/a.png" else d)
    assert "another hash" in copy.unpack(flipped, tmp_path / "d1")
    missing = rewrite("missing", lambda n, d: None if n == "media/a.png" else d)
    assert "missing or extra" in copy.unpack(missing, tmp_path / "d2")


def test_a_database_failing_its_integrity_check_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "collection.anki2").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    copy.pack(src, tmp_path / "a.tar")
    assert "collection.anki2" in copy.unpack(tmp_path / "a.tar", tmp_path / "dst")


def test_links_out_of_the_folder_in_an_archive_are_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    assert "archive unreadable" in copy.unpack(evil, tmp_path / "dst")
    assert not (tmp_path / "outside").exists()
