"""`accounts import` judges each folder alone, the dry run as the real run: what a stock client
could have produced imports, nothing else does. The issue's folders, then the real client
through the gateway and the stock sync server (moto as Cognito)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from anki.collection import Collection

from gateway.importer.folder import MARKER
from gateway.workers.lock import IMPORTING
from tests.ankiclient import Client
from tests.importer.test_import_e2e import PASSWORD, old_folder, run_import

USERS = ("amy", "bo", "cy", "di", "ed", "flo")


def current_folder(collections: Path, name: str, notes: list[str]) -> Path:
    """A folder whose collection.anki2 is in the current schema (18), as Anki today leaves it."""
    folder = collections / name
    folder.mkdir(parents=True)
    col = Collection(str(folder / "collection.anki2"))
    for text in notes:
        note = col.new_note(col.models.by_name("Basic"))
        note["Front"], note["Back"] = text, "back"
        col.add_note(note, col.decks.id("Default"))
    col.close()
    with sqlite3.connect(folder / "collection.anki2") as db:
        assert db.execute("SELECT ver FROM col").fetchone()[0] == 18
    return folder


def with_sql(folder: Path, sql: str) -> None:
    db = sqlite3.connect(folder / "collection.anki2")
    db.execute(sql)
    db.commit()
    db.close()


def verdicts(lines: list[str]) -> dict[str, str]:
    """{folder: "refused: <reason>" | "imported"} from a plan or a report."""
    found = {}
    for line in lines:
        name = line.strip().split(" ")[0].rstrip(":")
        if name in USERS:
            found[name] = (
                "refused: " + line.split("NOT IMPORTED: ")[1]
                if "NOT IMPORTED" in line
                else "imported"
            )
    return found


def test_each_folder_is_judged_alone_and_the_dry_run_says_what_the_run_does(
    cognito, tmp_path, start_gateway
) -> None:
    for user in USERS:
        cognito.add_user(user, PASSWORD, f"{user}@example.com")
    old = tmp_path / "old"
    # A folder where the importer's marker goes: the run crashed after moving amy's collection.
    (old_folder(old, "amy", ["a1"], {"a.png": b"a" * 10}) / MARKER).mkdir()
    with_sql(
        old_folder(old, "bo", ["b1"], {}),
        "CREATE TRIGGER t BEFORE UPDATE ON col BEGIN SELECT RAISE(ABORT, 'mine'); END",
    )
    with_sql(old_folder(old, "cy", ["c1"], {}), "CREATE VIEW v AS SELECT * FROM notes")
    sparse = old_folder(old, "di", ["d1"], {}) / "collection.anki2"
    os.truncate(sparse, 2 << 30)  # 2 GiB, nearly all of it a hole
    current_folder(old, "ed", ["e1", "e2"])  # schema 18
    old_folder(old, "flo", ["f1"], {})  # schema 11
    config = cognito.config(tmp_path / "data")

    code, plan = run_import(config, old, dry_run=True)
    assert code == 1
    expected = {
        "amy": f"refused: {MARKER} is a folder or link, where the import writes its marker;"
        " rename it, then run again",
        "bo": "refused: collection.anki2: holds what Anki never makes (trigger 't'):"
        " refused, not run",
        "cy": "refused: collection.anki2: holds what Anki never makes (view 'v'): refused, not run",
        "di": "refused: collection.anki2: 2048 MiB, over the 300 MiB limit",
        "ed": "imported",
        "flo": "imported",
    }
    assert verdicts(plan) == expected, plan
    code, report = run_import(config, old)
    assert code == 1
    assert verdicts(report) == expected, report
    assert "Not imported: 4 folder(s)." in report
    for user in ("amy", "bo", "cy", "di"):
        assert not (config.collections_dir / user).exists()  # no account made, nothing moved
        assert (old / user / "collection.anki2").exists()
    assert not list(config.collections_dir.glob(f"*/{IMPORTING}"))

    gw = start_gateway(config)
    for user, fronts in (("ed", {"e1", "e2"}), ("flo", {"f1"}), ("amy", set())):
        device = Client(tmp_path / f"device-{user}")
        device.login(user, PASSWORD, gw.url)
        device.sync()  # amy: served (no 503), a new empty account
        assert device.note_fronts() == fronts
        device.close()


def test_a_sparse_collection_is_refused_even_under_a_raised_size_limit(cognito, tmp_path) -> None:
    cognito.add_user("gus", PASSWORD, "gus@example.com")
    old = tmp_path / "old"
    os.truncate(old_folder(old, "gus", ["g1"], {}) / "collection.anki2", 2 << 30)
    config = cognito.config(tmp_path / "data", workers={"max_payload_megs": 1024})
    for dry_run in (True, False):
        code, lines = run_import(config, old, dry_run=dry_run)
        assert code == 1
        assert (
            "  gus: NOT IMPORTED: collection.anki2: a sparse file (holes), not one SQLite wrote"
            in lines
        )


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_marker_that_is_no_file_is_refused_before_anything_moves(cognito, tmp_path, kind) -> None:
    cognito.add_user("hal", PASSWORD, "hal@example.com")
    folder = old_folder(tmp_path / "old", "hal", ["h1"], {})
    if kind == "symlink":
        (folder / MARKER).symlink_to("/etc/hostname")
    else:
        os.mkfifo(folder / MARKER)
    code, lines = run_import(cognito.config(tmp_path / "data"), tmp_path / "old")
    assert code == 1 and any(line.startswith("  hal: NOT IMPORTED: ") for line in lines), lines
    assert (folder / "collection.anki2").exists()
